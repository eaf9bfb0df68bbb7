"""Attention on grids and knockout (arcscope.analysis.attention), and the attention capture sites under them:
hook_pattern equals output_attentions=True, per-head q/k/v/z, and stores refusing patterns."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from arcscope.analysis.attention import (
    OTHER_MASSES,
    attention_to_grids,
    knockout,
    knockout_sweep,
    parse_positions,
)
from arcscope.analysis.subject import AnalysisError, Metric, Subject
from arcscope.capture import position_ids_from_mask, resolve_hooks, run_prefill
from arcscope.capture.attention import Knockout, attention_control
from arcscope.errors import CaptureError
from tests.conftest import random_task, tiny_arc_lm, tiny_causal_lm, tiny_job

# ---- capture sites -------------------------------------------------------------------------------------


def _eager_attentions(model, ids, mask, position_ids=None):
    model.set_attn_implementation("eager")
    try:
        with torch.no_grad():
            out = model(ids, attention_mask=mask, position_ids=position_ids, output_attentions=True)
            return out.attentions
    finally:
        model.set_attn_implementation("sdpa")


@pytest.mark.parametrize("family", ["llama", "qwen2", "mistral"])
def test_pattern_site_equals_output_attentions(family):
    model = tiny_causal_lm(family)
    torch.manual_seed(1)
    ids = torch.randint(3, 101, (2, 11))
    mask = torch.ones(2, 11, dtype=torch.long)
    mask[1, :3] = 0  # left padding: those rows are not captured
    ref = _eager_attentions(model, ids, mask, position_ids_from_mask(mask))  # as run_prefill counts them
    keep = mask.bool()
    # every layer's pattern: every layer runs eager, so the patterns equal output_attentions bit for bit
    r = run_prefill(model, ids, mask, sites="blocks.*.attn.hook_pattern")
    assert model.config._attn_implementation == "sdpa"  # restored after the capture
    for layer in range(3):
        got = r.acts[f"blocks.{layer}.attn.hook_pattern"]
        assert got.shape == (int(keep.sum()), 4 * 11)  # one row per query: heads x key positions
        assert torch.equal(got, ref[layer].transpose(1, 2)[keep].flatten(1))
        rows = got.view(-1, 4, 11)
        assert torch.allclose(rows.sum(-1), torch.ones(rows.shape[:2]), atol=1e-6)
        assert (rows[11:, :, :3] == 0).all()  # batch row 1's queries put no weight on its padding
    # layers 0 and 2 only: layer 1 runs SDPA, so layer 2's input may differ from all-eager in the last bits
    r = run_prefill(model, ids, mask, sites="blocks.{0,2}.attn.hook_pattern")
    assert set(r.acts) == {"blocks.0.attn.hook_pattern", "blocks.2.attn.hook_pattern"}
    assert torch.equal(r.acts["blocks.0.attn.hook_pattern"], ref[0].transpose(1, 2)[keep].flatten(1))
    want = ref[2].transpose(1, 2)[keep].flatten(1)
    assert torch.allclose(r.acts["blocks.2.attn.hook_pattern"], want, atol=1e-6)


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_qkvz_sites_are_per_head_and_z_is_the_head_result(family):
    model = tiny_causal_lm(family)
    ids = torch.randint(3, 101, (1, 9), generator=torch.Generator().manual_seed(2))
    sites = resolve_hooks(model, "blocks.1.attn.{hook_q,hook_k,hook_v,hook_z,hook_pattern}")
    heads = {s.hook: s.heads for s in sites}
    assert heads == {
        "attn.hook_q": 4,
        "attn.hook_k": 2,
        "attn.hook_v": 2,
        "attn.hook_z": 4,
        "attn.hook_pattern": 4,
    }
    r = run_prefill(model, ids, sites=sites)
    a = {k.split(".", 2)[2]: v for k, v in r.acts.items()}
    assert a["attn.hook_q"].shape == (9, 4 * 8) and a["attn.hook_z"].shape == (9, 4 * 8)
    assert a["attn.hook_k"].shape == (9, 2 * 8) and a["attn.hook_v"].shape == (9, 2 * 8)
    # z of head h at query t = sum over keys s of pattern[t, h, s] * v[s, kv head of h] (GQA: 2 heads per kv)
    p = a["attn.hook_pattern"].view(9, 4, 9)
    v = a["attn.hook_v"].view(9, 2, 8)
    z = a["attn.hook_z"].view(9, 4, 8)
    for h in range(4):
        want = p[:, h] @ v[:, h // 2]
        assert torch.allclose(z[:, h], want, atol=1e-6)


def test_stores_refuse_pattern_sites(tmp_path, tiny_model_dir):
    from arcscope.engine import LocalRunner
    from arcscope.models import load_model

    model = tiny_causal_lm()
    assert len(resolve_hooks(model, "blocks.0.attn.hook_pattern")) == 1  # fine for capture
    with pytest.raises(CaptureError, match="a store cannot hold them"):
        resolve_hooks(model, "blocks.0.attn.hook_q,blocks.0.attn.hook_pattern", storable=True)
    assert [s.name for s in resolve_hooks(model, "blocks.0.attn.hook_q", storable=True)] == [
        "blocks.0.attn.hook_q"
    ]
    cfg = tiny_job(tmp_path / "store", tiny_model_dir, hooks=["blocks.1.attn.hook_pattern"], max_tasks=1)
    loaded = load_model(tiny_model_dir, device="cpu", dtype="float32")
    with pytest.raises(CaptureError, match="blocks.1.attn.hook_pattern"):
        LocalRunner(cfg, loaded=loaded).run()
    assert not (tmp_path / "store" / "manifest.json").exists()


# ---- a subject -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def subject(arc_tokenizer) -> Subject:
    task = random_task("att", seed=1, n_train=2, size=(3, 3))
    return Subject.from_task(tiny_arc_lm(3), task, tokenizer=arc_tokenizer)


@pytest.fixture(scope="module")
def raw(subject):
    """The model's own attention (output_attentions=True, eager) on the subject: [layers] of [H, T, T]."""
    att = _eager_attentions(subject.model, subject.input_ids, None)
    return [a[0].double() for a in att]


def _seg(subject, role, pair=0):
    return next(k for k, s in enumerate(subject.prompt.segments) if s.role.value == role and s.pair == pair)


# ---- attention on grids --------------------------------------------------------------------------------


def test_weights_and_other_masses_sum_to_one(subject):
    r = attention_to_grids(subject)
    L, H, A, C = r.weights.shape
    assert (L, H, A) == (3, 4, 9) and C == 5 * 9  # 2 train pairs + the test input, 3x3 each
    assert set(r.other_mass) == set(OTHER_MASSES)
    total = r.weights.astype(np.float64).sum(-1) + sum(r.other_mass.values())
    np.testing.assert_allclose(total, 1.0, atol=1e-6)
    assert (r.other_mass["format"] > 0).all() and (r.other_mass["other_cells"] == 0).all()
    # one answer cell per forward pass (a tiny max_bytes) gives the same values
    one_by_one = attention_to_grids(subject, max_bytes=1)
    np.testing.assert_array_equal(one_by_one.weights, r.weights)
    np.testing.assert_array_equal(one_by_one.other_mass["answer"], r.other_mass["answer"])
    # the first answer cell is predicted from the last prompt token: no answer token is visible yet
    assert (r.other_mass["answer"][:, :, 0] == 0).all() and (r.other_mass["answer"][:, :, 1:] > 0).all()
    # only the test input as keys: the train cells' weight moves to other_cells, the sum stays 1
    t = attention_to_grids(subject, roles="test_input", query="token", cells=[(0, 0), (2, 2)], heads=[1, 3])
    assert t.weights.shape == (3, 2, 2, 9) and set(t.keys.role) == {"test_input"}
    np.testing.assert_allclose(t.weights.sum(-1) + sum(t.other_mass.values()), 1.0, atol=1e-6)
    assert (t.other_mass["other_cells"] > 0).all()
    np.testing.assert_array_equal(t.query_pos, subject.answer.token_pos[[0, 8]])
    # the table carries the same values: each (layer, head, answer cell) group sums to 1
    tab = r.to_table().to_pandas()
    assert len(tab) == L * H * A * (C + 3)
    sums = tab.groupby(["layer", "head", "answer_row", "answer_col"])["value"].sum()
    np.testing.assert_allclose(sums.to_numpy(), 1.0, atol=1e-5)
    assert set(tab["kind"]) == {"cell", "format", "answer", "other_cells"}


def test_gathering_puts_the_raw_weight_on_its_grid_cell(subject, raw):
    r = attention_to_grids(subject, layers=[0, 2], heads=[1, 2])
    cm = subject.cell_map
    # every key cell holds the raw pattern at its token position
    for li, layer in enumerate(r.layers):
        for hi, head in enumerate(r.heads):
            want = raw[layer][head][r.query_pos][:, r.keys.position]
            np.testing.assert_allclose(r.weights[li, hi], want, atol=1e-6)
    # one cell by (grid, row, col): test input (2, 1), found in the token map independently
    seg = _seg(subject, "test_input")
    pos = int(np.flatnonzero((cm.segment == seg) & (cm.row == 2) & (cm.col == 1))[0])
    j = int(np.flatnonzero((r.keys.role == "test_input") & (r.keys.row == 2) & (r.keys.col == 1))[0])
    assert r.keys.position[j] == pos
    a = r.answer_index((1, 2))
    q = int(subject.answer.predict_pos[subject.answer.index(1, 2)])
    assert r.query_pos[a] == q
    assert r.weights[1, 0, a, j] == pytest.approx(float(raw[2][1][q, pos]), abs=1e-7)
    # heat maps and aggregates: the same value at (2, 1) of the test input grid
    mean = np.mean([float(raw[layer][h][q, pos]) for layer in (0, 2) for h in (1, 2)])
    top = max(float(raw[layer][h][q, pos]) for layer in (0, 2) for h in (1, 2))
    assert r.grids((1, 2))[seg][2, 1] == pytest.approx(mean, abs=1e-6)
    assert r.grids((1, 2), how="max")[seg][2, 1] == pytest.approx(top, abs=1e-6)
    assert r.aggregate("sum", layers=2, heads=[1])[a, j] == pytest.approx(float(raw[2][1][q, pos]), abs=1e-6)
    assert r.mass("test_input")[0, 0, a] == pytest.approx(
        float(raw[0][1][q][np.flatnonzero(cm.segment == seg)][cm.row[cm.segment == seg] >= 0].sum()), abs=1e-6
    )
    grids = r.grids()  # mean over answer cells too
    assert set(grids) == {0, 1, 2, 3, seg} and grids[seg].shape == (3, 3) and not np.isnan(grids[seg]).any()


def test_rollout_multiplies_head_means_with_the_residual(subject, raw):
    r = attention_to_grids(subject, layers=[1], rollout=True)
    assert r.layers == [1]
    T = len(subject)
    maps = [0.5 * raw[i].mean(0) + 0.5 * torch.eye(T, dtype=torch.float64) for i in range(2)]
    want = (maps[1] @ maps[0])[r.query_pos]
    np.testing.assert_allclose(r.aggregate("rollout"), want[:, r.keys.position], atol=1e-6)
    total = r.rollout.astype(np.float64).sum(-1) + sum(r.rollout_other.values())
    np.testing.assert_allclose(total, 1.0, atol=1e-6)
    j = json.dumps(r.to_json(), allow_nan=False)
    assert '"rollout"' in j
    with pytest.raises(AnalysisError, match="pass rollout=True"):
        attention_to_grids(subject, layers=[0]).aggregate("rollout")


def test_attention_json_is_self_describing(subject):
    r = attention_to_grids(subject, cells=(0, 1), layers=[2])
    d = json.loads(json.dumps(r.to_json(weights=True), allow_nan=False))
    assert d["task_id"] == "att" and d["layers"] == [2] and d["heads"] == [0, 1, 2, 3]
    assert d["answer"]["row"] == [0] and d["answer"]["col"] == [1]
    assert len(d["keys"]["position"]) == 45 and len(d["grids"]) == 6
    assert np.array(d["weights"]).shape == (1, 4, 1, 45)
    assert np.array(d["aggregates"]["mean"]["cells"]).shape == (1, 45)


# ---- knockout ------------------------------------------------------------------------------------------


def test_knockout_of_nothing_leaves_the_answer_exactly_unchanged(subject):
    for res in (knockout(subject, from_=[], to="all"), knockout(subject, to="test_input", layers=[])):
        assert res.after == res.before and res.delta == 0.0
        np.testing.assert_array_equal(res.cell_after, res.cell_before)
        np.testing.assert_array_equal(res.grid_after, res.grid_before)
        assert res.changed == [] and not res.grid_changed
    assert res.before == pytest.approx(subject.score(), abs=1e-5)
    np.testing.assert_array_equal(res.grid_before, subject.predicted_grid())


def test_knockout_of_everything_but_self_changes_the_metric(subject):
    k = 4  # the answer cell (1, 1)
    q = int(subject.answer.predict_pos[k])
    keys = np.ones(len(subject), dtype=bool)
    keys[q] = False
    # the mechanism: the query now attends to itself only
    ko = Knockout(torch.as_tensor(np.arange(len(subject)) == q), torch.as_tensor(keys), layers=[0, 1, 2])
    with attention_control(subject.model, knockouts=[ko]):
        r = run_prefill(subject.model, subject.input_ids, sites="blocks.1.attn.hook_pattern")
    row = r.acts["blocks.1.attn.hook_pattern"].view(len(subject), 4, len(subject))[q]
    assert torch.equal(row, torch.zeros_like(row).index_fill_(1, torch.tensor([q]), 1.0))

    res = knockout(subject, from_=[q], to=keys, metric=Metric("logprob", (1, 1)))
    assert res.metric == "logprob of the correct colour, cells (1, 1)"
    assert abs(res.delta) > 1e-3
    assert res.cell_delta[k] == pytest.approx(res.delta, abs=1e-9)
    # cells predicted before q cannot see the change (causal); later ones can
    np.testing.assert_allclose(res.cell_delta[:k], 0.0, atol=1e-6)
    assert np.abs(res.cell_delta[k + 1 :]).max() > 0
    assert res.queries.tolist() == [q] and len(res.keys) == len(subject) - 1
    assert res.changed == [
        (int(r), int(c)) for r, c in zip(*np.nonzero(res.grid_before != res.grid_after), strict=True)
    ]
    tab = res.to_table().to_pandas()
    assert len(tab) == 9 and tab["delta"].iloc[k] == pytest.approx(res.delta, abs=1e-9)
    d = json.loads(json.dumps(res.to_json(), allow_nan=False))
    assert (
        d["layers"] == [0, 1, 2] and d["from"] == "1 given positions" and d["target"] == res.target.tolist()
    )


def test_knockout_from_answer_to_prompt(subject):
    """The default from_ covers every answer position; blocking the prompt (all but the first token) moves
    the metric, blocking only the test input moves it less."""
    prompt = f"1-{subject.n_prompt - 2}"
    wide = knockout(subject, to=prompt)
    narrow = knockout(subject, to="test_input")
    assert wide.queries.tolist() == list(range(subject.n_prompt - 1, len(subject)))
    assert wide.before == narrow.before
    assert abs(wide.delta) > abs(narrow.delta) > 0
    np.testing.assert_array_equal(wide.target, np.asarray(subject.task.test[0].output))


@pytest.mark.parametrize("over", ["layers", "heads", "cells"])
def test_sweep_batched_equals_single_knockouts(subject, over):
    to = f"1-{subject.n_prompt - 2}" if over != "cells" else "test_input"
    sw = knockout_sweep(subject, to=to, over=over, layers=[0, 2], heads=[1, 2, 3], batch_size=4)
    n = {"layers": 2, "heads": 6, "cells": 9}[over]
    assert len(sw) == n and sw.cell_after.shape == (n, 9) and sw.grids_after.shape == (n, 3, 3)
    for i in range(n):
        if over == "cells":
            single = knockout(subject, to=[int(sw.cells.position[i])], layers=[0, 2], heads=[1, 2, 3])
        else:
            heads = [1, 2, 3] if sw.head[i] < 0 else [int(sw.head[i])]
            single = knockout(subject, to=to, layers=[int(sw.layer[i])], heads=heads)
        assert sw.before == single.before
        assert sw.after[i] == pytest.approx(single.after, abs=1e-5)
        np.testing.assert_allclose(sw.cell_after[i], single.cell_after, atol=1e-5)
        np.testing.assert_array_equal(sw.grids_after[i], single.grid_after)
    if over == "heads":
        assert sw.layer.tolist() == [0, 0, 0, 2, 2, 2] and sw.head.tolist() == [1, 2, 3, 1, 2, 3]
        np.testing.assert_allclose(sw.matrix(), sw.delta.reshape(2, 3))
    if over == "cells":
        assert set(sw.cells.role) == {"test_input"}
        g = sw.grids()[_seg(subject, "test_input")]
        assert g[sw.cells.row[3], sw.cells.col[3]] == pytest.approx(sw.delta[3])
    assert sw.to_table().num_rows == n and sw.cell_table().num_rows == n * 9
    json.dumps(sw.to_json(), allow_nan=False)


# ---- positions and errors ------------------------------------------------------------------------------


def test_parse_positions(subject):
    cm = subject.cell_map
    T = len(subject)
    test_seg = _seg(subject, "test_input")
    np.testing.assert_array_equal(
        parse_positions(subject, "test_input"), np.flatnonzero(cm.segment == test_seg)
    )
    segs = [_seg(subject, "train_input", 1), _seg(subject, "train_output", 1)]
    np.testing.assert_array_equal(
        parse_positions(subject, "train:1"), np.flatnonzero(np.isin(cm.segment, segs))
    )
    np.testing.assert_array_equal(
        parse_positions(subject, "train_output:0"),
        np.flatnonzero(cm.segment == _seg(subject, "train_output")),
    )
    assert len(parse_positions(subject, "train")) == 4 * 11  # 3x3 grids with their two row breaks
    (p,) = parse_positions(subject, "cell:test_input:2,1")
    assert (cm.segment[p], cm.row[p], cm.col[p]) == (test_seg, 2, 1)
    (p,) = parse_positions(subject, "cell:train_output:1:0,2")
    assert (cm.segment[p], cm.row[p], cm.col[p]) == (segs[1], 0, 2)
    assert parse_positions(subject, "cell:answer:1,1").tolist() == [int(subject.answer.token_pos[4])]
    assert parse_positions(subject, "10-20").tolist() == list(range(10, 21))
    assert parse_positions(subject, "7+10-11+cell:test_input:0,0").tolist() == sorted(
        [7, 10, 11, int(subject.cells("test_input").position[0])]
    )
    assert parse_positions(subject, "all").tolist() == list(range(T))
    assert parse_positions(subject, "answer").tolist() == list(range(subject.n_prompt - 1, T))
    assert parse_positions(subject, "answer_predict").tolist() == subject.answer.predict_pos.tolist()
    assert parse_positions(subject, "answer_cells").tolist() == subject.answer.token_pos.tolist()
    fmt = parse_positions(subject, "format")
    assert (cm.segment[fmt] == -1).all() and fmt.max() < subject.n_prompt and 0 in fmt
    assert parse_positions(subject, subject.cells("train_input")).tolist() == (
        subject.cells("train_input").position.tolist()
    )
    assert parse_positions(subject, np.arange(T) < 3).tolist() == [0, 1, 2]


@pytest.mark.parametrize(
    "spec, match",
    [
        ("test_inptu", "cannot read position spec 'test_inptu'; accepted forms: all: every position"),
        ("train:5", r"names no grid; its train_input pairs are \[0, 1\]"),
        ("cell:test_input:3,0", r"cell \(3, 0\) is outside the 3x3 grid"),
        ("cell:train_input:1,1", "needs the train pair"),
        ("20-10", "must run forward"),
        ("9999", "past the prompt's"),
        ("", "empty position spec"),
    ],
)
def test_bad_position_specs(subject, spec, match):
    with pytest.raises(AnalysisError, match=match):
        parse_positions(subject, spec)


def test_clear_errors(subject):
    with pytest.raises(
        AnalysisError, match=r"task att: head 4 is out of range; the model has 4 heads per layer"
    ):
        knockout(subject, heads=[4])
    with pytest.raises(AnalysisError, match=r"layer 3 is out of range; the model has 3 layers \(0..2\)"):
        attention_to_grids(subject, layers=[3])
    with pytest.raises(AnalysisError, match="head 9 is out of range"):
        knockout_sweep(subject, over="heads", heads=9)
    with pytest.raises(AnalysisError, match="sweep over 'rows'"):
        knockout_sweep(subject, over="rows")
    with pytest.raises(AnalysisError, match="query 'key'"):
        attention_to_grids(subject, query="key")
    with pytest.raises(AnalysisError, match="would have no key left"):
        knockout(subject, to="all")
    with pytest.raises(AnalysisError, match=r"answer cell \(5, 5\) is outside"):
        attention_to_grids(subject, cells=(5, 5))
    r = attention_to_grids(subject, cells=[(0, 0)], layers=[0])
    with pytest.raises(AnalysisError, match="aggregate 'median'"):
        r.aggregate("median")
    with pytest.raises(AnalysisError, match="layer 1 was not analysed"):
        r.aggregate("mean", layers=[1])
    with pytest.raises(AnalysisError, match=r"answer cell \(2, 2\) is not among the analysed"):
        r.grids((2, 2))
    assert knockout(subject, heads=-1).heads == [3]  # negative numbers count from the end
