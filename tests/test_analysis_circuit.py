"""A planted circuit is found: on a tiny Llama built by hand so that each answer cell copies the same cell of
the test input through head 2 of layer 1 alone (tests/copy_model.py), attention, knockout, activation
patching, head patching and attribution patching each single out that head and that input cell."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from arcscope.analysis.attention import attention_to_grids, knockout, knockout_sweep
from arcscope.analysis.corrupt import aligned, corrupt
from arcscope.analysis.patching import agreement, attribution_patching, head_sweep, patch_sweep, path_patch
from arcscope.analysis.subject import Metric, Subject
from arcscope.capture.attention import attention_control
from arcscope.tasks import Task
from tests.copy_model import copy_model, copy_offset, copy_task

LAYER, HEAD, N_LAYERS, N_HEADS = 1, 2, 3, 4
CELL = (1, 1)  # the answer cell under study; it copies test input cell (1, 1), colour 9
NEW_COLOUR = 3  # what the corruption writes at that input cell
OFFSET = 20  # tokens from a test input cell to the position predicting the same answer cell (checked below)
METRIC = Metric("logit_diff", cells=CELL)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def task() -> Task:
    return copy_task()


@pytest.fixture(scope="module")
def model(arc_tokenizer):
    return copy_model(
        arc_tokenizer, layer=LAYER, head=HEAD, n_layers=N_LAYERS, n_heads=N_HEADS, offset=OFFSET
    )


@pytest.fixture(scope="module")
def subject(model, arc_tokenizer, task) -> Subject:
    s = Subject.from_task(model, task, tokenizer=arc_tokenizer)
    assert copy_offset(s) == OFFSET  # the prompt layout the copy head was built for
    return s


@pytest.fixture(scope="module")
def corrupted(subject, task) -> Subject:
    return subject.with_task(corrupt(task, f"cell:{CELL[0]},{CELL[1]}={NEW_COLOUR}"))


def source_position(subject: Subject, row: int, col: int) -> int:
    """The token position of test input cell (row, col)."""
    cells = subject.cells("test_input")
    return int(cells.position[(cells.row == row) & (cells.col == col)][0])


def query_position(subject: Subject) -> int:
    """The position whose logits predict answer cell CELL."""
    return int(subject.answer.predict_pos[subject.answer.index(*CELL)])


def patterns(subject: Subject) -> np.ndarray:
    """``[layers, heads, T, T]`` attention of the unmodified model (its own eager attention)."""
    with torch.no_grad(), attention_control(subject.model, patterns=range(N_LAYERS)):
        out = subject.model(input_ids=subject.input_ids, output_attentions=True, use_cache=False)
    return torch.stack([a[0] for a in out.attentions]).numpy()


# --- the model itself ---------------------------------------------------------------------------------------


def test_the_copy_head_attends_to_the_source_cell(subject):
    att = patterns(subject)
    a = subject.answer
    for k in range(len(a)):
        q, src = int(a.predict_pos[k]), source_position(subject, int(a.row[k]), int(a.col[k]))
        assert att[LAYER, HEAD, q, src] > 0.999
        others = np.delete(att[:, :, q].reshape(N_LAYERS * N_HEADS, -1), LAYER * N_HEADS + HEAD, axis=0)
        assert others.max() < 0.9  # the other heads are diffuse
        assert others[:, src].max() < 0.5


def test_the_model_copies_the_test_input(subject, corrupted, task):
    np.testing.assert_array_equal(subject.predicted_grid(), np.asarray(task.test[0].input))
    assert subject.score("prob") > 0.999
    assert subject.score(METRIC) > 20.0
    # recolouring the source cell makes exactly that answer cell follow it
    want = np.asarray(task.test[0].input).copy()
    want[CELL] = NEW_COLOUR
    np.testing.assert_array_equal(corrupted.predicted_grid(), want)
    assert corrupted.score(METRIC) < -20.0
    assert corrupted.score(Metric("logprob", cells=(0, 0))) > -1e-3  # other cells are untouched
    # the corruption changes the source token and nothing else
    np.testing.assert_array_equal(aligned(subject, corrupted), [source_position(subject, *CELL)])


# --- attention on grids --------------------------------------------------------------------------------------


def test_attention_to_grids_points_at_the_head_and_the_source_cell(subject):
    res = attention_to_grids(subject, cells=CELL)
    w = res.weights[:, :, 0]  # [L, H, C]
    layer, head, key = np.unravel_index(np.argmax(w), w.shape)
    assert (res.layers[layer], res.heads[head]) == (LAYER, HEAD)
    assert (res.keys.role[key], res.keys.row[key], res.keys.col[key]) == ("test_input", *CELL)
    assert res.keys.position[key] == source_position(subject, *CELL)
    assert w[layer, head, key] > 0.999
    # the copy head puts (almost) nothing anywhere else: not on other cells, not on text or the answer
    assert np.delete(w[layer, head], key).sum() < 1e-3
    assert sum(float(v[layer, head, 0]) for v in res.other_mass.values()) < 1e-3
    # the heat map of the max over heads lights up that input cell and no other
    seg = int(res.keys.segment[key])
    maps = res.grids(CELL, how="max")
    assert np.nanargmax(maps[seg]) == CELL[0] * 3 + CELL[1]
    for s, m in maps.items():
        others = np.delete(m.reshape(-1), CELL[0] * 3 + CELL[1]) if s == seg else m.reshape(-1)
        assert np.nanmax(others) < 0.9
    # every answer cell: the copy head's top key is the same cell of the test input
    full = attention_to_grids(subject, layers=[LAYER], heads=[HEAD])
    top = full.weights[0, 0].argmax(-1)
    assert list(full.keys.role[top]) == ["test_input"] * len(top)
    np.testing.assert_array_equal(full.keys.row[top], full.answer_row)
    np.testing.assert_array_equal(full.keys.col[top], full.answer_col)


# --- knockout -----------------------------------------------------------------------------------------------


def test_knockout_of_the_head_to_the_source_destroys_the_answer_cell(subject):
    q, src = query_position(subject), source_position(subject, *CELL)
    res = knockout(subject, from_=[q], to=[src], layers=[LAYER], heads=[HEAD], metric=METRIC)
    assert res.before > 20.0
    assert res.after < -10.0  # the head falls back to its two neighbours and copies their colours
    assert res.changed == [CELL]
    # the same knockout in any other head, or from the query to any other position, changes nothing
    for layer in range(N_LAYERS):
        for head in range(N_HEADS):
            if (layer, head) != (LAYER, HEAD):
                other = knockout(subject, from_=[q], to=[src], layers=[layer], heads=[head], metric=METRIC)
                assert abs(other.delta) < 1e-4
    rest = knockout(
        subject,
        from_=[q],
        to=np.setdiff1d(np.arange(q + 1), [src]),
        layers=[LAYER],
        heads=[HEAD],
        metric=METRIC,
    )
    assert abs(rest.delta) < 1e-3 and not rest.changed


def test_knockout_sweeps_single_out_the_head_and_the_source_cell(subject):
    q, src = query_position(subject), source_position(subject, *CELL)
    heads = knockout_sweep(subject, from_=[q], to=[src], over="heads", metric=METRIC)
    d = heads.matrix()
    assert d.shape == (N_LAYERS, N_HEADS)
    assert d[LAYER, HEAD] < -30.0
    assert np.abs(np.delete(d.reshape(-1), LAYER * N_HEADS + HEAD)).max() < 1e-4
    layers = knockout_sweep(subject, from_=[q], to="test_input", over="layers", metric=METRIC)
    # with the whole test input blocked the head lands on text: no colour at all
    assert np.argmin(layers.delta) == LAYER and layers.delta[LAYER] < -20.0
    assert np.abs(np.delete(layers.delta, LAYER)).max() < 1e-4
    # one knockout per cell of every grid, from every answer position, in all layers and heads
    cells = knockout_sweep(subject, to="train+test_input", over="cells", metric=METRIC)
    hit = int(np.argmin(cells.delta))
    assert (cells.cells.role[hit], cells.cells.row[hit], cells.cells.col[hit]) == ("test_input", *CELL)
    assert cells.cells.position[hit] == src and cells.delta[hit] < -30.0
    assert np.abs(np.delete(cells.delta, hit)).max() < 1e-3
    # and, over the whole answer grid: blocking a test input cell flips exactly the same answer cell (each
    # answer cell copies its own source), blocking a train cell flips none
    for i in range(len(cells)):
        flipped = list(zip(*np.nonzero(cells.grids_after[i] != cells.grid_before), strict=True))
        want = [(cells.cells.row[i], cells.cells.col[i])] if cells.cells.role[i] == "test_input" else []
        assert flipped == want


# --- activation patching ------------------------------------------------------------------------------------


def test_patching_the_source_cell_restores_the_answer_and_no_other_cell_does(subject, corrupted):
    src = source_position(subject, *CELL)
    res = patch_sweep(subject, corrupted, metric=METRIC)  # every layer's resid_pre x every input-grid cell
    assert res.clean_metric > 20.0 and res.corrupt_metric < -20.0
    assert res.layers == list(range(N_LAYERS)) and res.shape == (N_LAYERS, len(res.cells))
    col = int(np.flatnonzero(res.cells.position == src)[0])
    assert (res.cells.role[col], res.cells.row[col], res.cells.col[col]) == ("test_input", *CELL)
    # up to the copy head's layer the source cell carries the whole answer; after it, nothing does
    np.testing.assert_allclose(res.effect[: LAYER + 1, col], 1.0, atol=1e-4)
    assert abs(res.effect[LAYER + 1 :, col]).max() < 1e-4
    assert abs(np.delete(res.effect, col, axis=1)).max() < 1e-4
    grids = res.grid_maps()
    seg = int(res.cells.segment[col])
    assert np.nanargmax(grids[seg][LAYER]) == CELL[0] * 3 + CELL[1]
    # every token position: after the copy head the answer sits at the query position instead
    every = patch_sweep(subject, corrupted, metric=METRIC, positions="all")
    big = {(int(i), int(every.cells.position[j])) for i, j in np.argwhere(np.abs(every.effect) > 1e-3)}
    q = query_position(subject)
    assert big == {
        *((layer, src) for layer in range(LAYER + 1)),
        *((layer, q) for layer in range(LAYER + 1, N_LAYERS)),
    }
    # noising: the corrupted source cell alone destroys the clean answer
    noise = patch_sweep(subject, corrupted, metric=METRIC, positions=[[src]], direction="noise")
    np.testing.assert_allclose(noise.effect[: LAYER + 1, 0], 1.0, atol=1e-4)


def test_head_patching_picks_the_copy_head(subject, corrupted):
    res = head_sweep(subject, corrupted, metric=METRIC)
    assert res.shape == (N_LAYERS, N_HEADS) and res.heads == list(range(N_HEADS))
    assert np.unravel_index(np.nanargmax(res.effect), res.shape) == (LAYER, HEAD)
    assert res.effect[LAYER, HEAD] == pytest.approx(1.0, abs=1e-4)
    assert abs(np.delete(res.effect.reshape(-1), LAYER * N_HEADS + HEAD)).max() < 1e-4
    # the head at the query position alone is enough
    at_query = head_sweep(
        subject, corrupted, metric=METRIC, layers=[LAYER], positions=[query_position(subject)]
    )
    assert at_query.effect[0, HEAD] == pytest.approx(1.0, abs=1e-4)
    # and it acts on the answer directly, through no later layer
    path = path_patch(subject, corrupted, sender=(LAYER, HEAD), metric=METRIC)
    assert path.extra["direct_to_logits"]["effect"] == pytest.approx(1.0, abs=1e-4)
    assert path.extra["whole_head"]["effect"] == pytest.approx(1.0, abs=1e-4)
    assert np.nanmax(np.abs(path.effect)) < 1e-4


# --- attribution patching -----------------------------------------------------------------------------------


def test_attribution_patching_ranks_the_source_cell_and_the_copy_head_first(subject, corrupted):
    src = source_position(subject, *CELL)
    exact = patch_sweep(subject, corrupted, metric=METRIC)
    approx = attribution_patching(subject, corrupted, metric=METRIC)
    assert approx.method == "attribution" and approx.shape == exact.shape
    col = int(np.flatnonzero(approx.cells.position == src)[0])
    top = approx.top(LAYER + 1)
    assert {(t["layer"], t["position"]) for t in top} == {(layer, src) for layer in range(LAYER + 1)}
    # First order, and the RMSNorms bend it by exactly known factors. At the final norm (stream: bias,
    # input colour, output colour 3, each 1) the gradient of logit9 - logit3 is U/rms along output colour 9
    # and -2U/(3 rms) along colour 3; exact patching moves the stream by (+1, -1) there, worth 2U/rms.
    # Patching the head's z moves it by (+1, -1): (1 + 2/3)/2 = 5/6 of the exact effect. Patching the
    # residual before layer 1's norm (stream: bias, input colour 3) moves the head's value by (+1, -1/2)
    # to first order: (1 + 1/3)/2 = 2/3.
    np.testing.assert_allclose(approx.effect[: LAYER + 1, col], 2 / 3, atol=1e-3)
    assert abs(np.delete(approx.effect, col, axis=1)).max() < 1e-4
    assert abs(approx.effect[LAYER + 1 :, col]).max() < 1e-4
    agree = agreement(exact, approx, k=LAYER + 1)
    assert agree.pearson > 0.99 and agree.top_k_overlap == 1.0
    heads = attribution_patching(subject, corrupted, metric=METRIC, heads=True)
    assert heads.shape == (N_LAYERS, N_HEADS)
    assert np.unravel_index(np.nanargmax(heads.effect), heads.shape) == (LAYER, HEAD)
    assert heads.effect[LAYER, HEAD] == pytest.approx(5 / 6, abs=1e-3)
    assert abs(np.delete(heads.effect.reshape(-1), LAYER * N_HEADS + HEAD)).max() < 1e-4


# --- another placement ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("layer, head", [(0, 3), (2, 1)])
def test_every_analysis_follows_the_circuit_where_it_is_planted(arc_tokenizer, task, layer, head):
    # guards against axes mixed up (layer-major vs head-major) or a result that happens to fit (1, 2)
    model = copy_model(
        arc_tokenizer, layer=layer, head=head, n_layers=N_LAYERS, n_heads=N_HEADS, offset=OFFSET
    )
    clean = Subject.from_task(model, task, tokenizer=arc_tokenizer)
    bad = clean.with_task(corrupt(task, f"cell:{CELL[0]},{CELL[1]}={NEW_COLOUR}"))
    q, src = query_position(clean), source_position(clean, *CELL)
    att = attention_to_grids(clean, cells=CELL).weights[:, :, 0]
    li, hi, ki = np.unravel_index(np.argmax(att), att.shape)
    assert (li, hi) == (layer, head) and att[li, hi, ki] > 0.999
    ko = knockout_sweep(clean, from_=[q], to=[src], over="heads", metric=METRIC).matrix()
    assert np.unravel_index(np.argmin(ko), ko.shape) == (layer, head)
    exact = patch_sweep(clean, bad, metric=METRIC, positions=[[src], [q]])
    np.testing.assert_allclose(exact.effect[:, 0], np.arange(N_LAYERS) <= layer, atol=1e-4)
    np.testing.assert_allclose(exact.effect[:, 1], np.arange(N_LAYERS) > layer, atol=1e-4)
    hs = head_sweep(clean, bad, metric=METRIC)
    assert np.unravel_index(np.nanargmax(hs.effect), hs.shape) == (layer, head)
    ah = attribution_patching(clean, bad, metric=METRIC, heads=True)
    assert np.unravel_index(np.nanargmax(ah.effect), ah.shape) == (layer, head)
    assert ah.effect[layer, head] == pytest.approx(5 / 6, abs=1e-3)
