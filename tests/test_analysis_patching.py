"""arcscope.analysis corruptions and patching on tiny random Llamas with the real tokenizer: corruptions keep
shapes and the answer, the alignment check catches a misaligned pair, patching a whole layer restores the
clean metric, patching nothing changes nothing, batched sweeps equal loops of single patches, attribution
patching agrees with exact patching (exactly where the metric is linear), SAE splicing without edits leaves
the model unchanged."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from arcscope.analysis.corrupt import (
    aligned,
    change_cell,
    corrupt,
    corrupt_subject,
    dihedral,
    permute_colours,
    swap_pair,
)
from arcscope.analysis.patching import (
    KeepGrad,
    agreement,
    attribution_patching,
    compare_on_sample,
    head_sweep,
    patch_sweep,
    path_patch,
    sae_patch,
    sae_splice,
)
from arcscope.analysis.subject import AnalysisError, Metric, Subject
from arcscope.capture import Intervention, intervene, run_prefill
from arcscope.tasks import Pair, Task, TaskSet
from tests.conftest import random_task


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # Tiny tensors: extra threads only wait for each other on a small CI machine.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def tok():
    from arcscope.models import load_tokenizer

    return load_tokenizer()


def tiny_llama(layers: int = 2, seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=49152,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=8192,
    )
    return LlamaForCausalLM(cfg).eval()


@pytest.fixture(scope="module")
def model():
    return tiny_llama(2)


@pytest.fixture(scope="module")
def task() -> Task:
    return random_task("t1", seed=1, n_train=2, size=(3, 3))


@pytest.fixture(scope="module")
def clean(model, tok, task) -> Subject:
    return Subject.from_task(model, task, tokenizer=tok)


@pytest.fixture(scope="module")
def bad(clean) -> Subject:
    return corrupt_subject(clean, "colours", seed=0)


def _grid(rows) -> np.ndarray:
    g = np.asarray(rows, dtype=np.uint8)
    g.setflags(write=False)
    return g


def _prompt_grids(t: Task) -> list[np.ndarray]:
    return [g for p in t.train for g in (p.input, p.output)] + [t.test[0].input]


# --- corruptions ----------------------------------------------------------------------------------------------


def test_change_cell_changes_one_test_input_cell_and_keeps_the_rest(task):
    out = corrupt(task, "cell:1,2=3")
    assert out.id == task.id and out.meta["corruption"] == "cell:1,2=3"
    old, new = np.asarray(task.test[0].input), np.asarray(out.test[0].input)
    assert new[1, 2] == 3 and old[1, 2] == 7
    assert np.argwhere(old != new).tolist() == [[1, 2]]
    assert out.train == task.train and np.array_equal(out.test[0].output, task.test[0].output)
    # random cell and colour: seeded, and the colour always changes
    a, b = change_cell(task, seed=5), change_cell(task, seed=5)
    assert a.meta["corruption"] == b.meta["corruption"] and a == b
    assert (np.asarray(a.test[0].input) != old).sum() == 1
    with pytest.raises(AnalysisError, match=r"cell \(3, 0\) is outside the 3x3 test input"):
        corrupt(task, "cell:3,0=1")
    same = int(old[0, 0])
    with pytest.raises(AnalysisError, match=f"already has colour {same}"):
        change_cell(task, (0, 0), same)


def test_swap_pair_takes_a_pair_of_the_same_shapes_from_another_task(task):
    other = random_task("other", seed=9, n_train=3, size=(3, 3))
    misfit = random_task("misfit", seed=3, n_train=2, size=(2, 4))
    out = swap_pair(task, 1, TaskSet([task, misfit, other]), seed=0)
    assert out.meta["corruption"] == "swap-pair:1" and out.meta["swapped_from"].startswith("other ")
    assert out.train[0] == task.train[0] and out.train[1] != task.train[1]
    assert any(out.train[1] == p for p in other.pairs)
    assert [g.shape for g in _prompt_grids(out)] == [g.shape for g in _prompt_grids(task)]
    assert np.array_equal(out.test[0].output, task.test[0].output)
    assert corrupt(task, "swap-pair:1", source=[misfit, other]) == out
    with pytest.raises(AnalysisError, match="no other task in the source has a pair with a 3x3 input"):
        swap_pair(task, 0, [misfit, task])
    with pytest.raises(AnalysisError, match="train pair 5 out of range"):
        swap_pair(task, 5, [other])
    with pytest.raises(AnalysisError, match="needs a task source"):
        corrupt(task, "swap-pair:0")


def test_permute_colours_recolours_the_prompt_and_keeps_the_answer(task):
    out = corrupt(task, "colours", seed=3)
    perm = [int(c) for c in out.meta["corruption"].split(":c")[1]]
    assert perm[0] == 0 and sorted(perm) == list(range(10))
    for a, b in zip(_prompt_grids(task), _prompt_grids(out), strict=True):
        assert np.array_equal(np.asarray(perm)[a], b)
    assert np.array_equal(out.test[0].output, task.test[0].output)
    assert corrupt(task, "colours", seed=3) == out  # seeded
    swapped = corrupt(task, "colours:c0213456789")
    g, h = np.asarray(task.test[0].input), np.asarray(swapped.test[0].input)
    assert np.array_equal(h, np.array([0, 2, 1, 3, 4, 5, 6, 7, 8, 9])[g])
    zeros = Task("z", (Pair(_grid([[0, 0]]), _grid([[0, 0]])),), (Pair(_grid([[0, 0]]), _grid([[1, 1]])),))
    with pytest.raises(AnalysisError, match="uses only colour 0"):
        permute_colours(zeros)
    allc = corrupt(zeros, "colours:all", seed=0)
    assert (np.asarray(allc.test[0].input) != 0).all()


def test_dihedral_keeps_every_grid_shape(task):
    out = corrupt(task, "dihedral:d1")  # all grids square: a quarter turn keeps the shapes
    for a, b in zip(_prompt_grids(task), _prompt_grids(out), strict=True):
        assert np.array_equal(np.rot90(a), b)
    assert np.array_equal(out.test[0].output, task.test[0].output) and out.meta["corruption"] == "dihedral:d1"
    wide = random_task("wide", seed=2, n_train=2, size=(2, 3))
    with pytest.raises(
        AnalysisError, match=r"d1 \(rot90\) swaps rows and columns.*2x3 grid train\[0\]\.input"
    ):
        dihedral(wide, 1)
    flipped = dihedral(wide, 4)
    assert all(
        np.array_equal(np.fliplr(a), b)
        for a, b in zip(_prompt_grids(wide), _prompt_grids(flipped), strict=True)
    )
    for seed in range(6):  # a random choice on a non-square task is always shape-keeping
        k = int(corrupt(wide, "dihedral", seed=seed).meta["corruption"][-1])
        assert k in (2, 4, 5)
    with pytest.raises(AnalysisError, match="kind 'blur' is not one of"):
        corrupt(task, "blur")
    with pytest.raises(AnalysisError, match="expected dihedral or dihedral:dK"):
        corrupt(task, "dihedral:d9")


def test_aligned_returns_the_changed_positions_and_catches_a_misaligned_pair(clean, task):
    spec_cell = corrupt_subject(clean, "cell:0,1=4")  # the cell was 2
    changed = aligned(clean, spec_cell)
    tokens = clean.cells("test_input")
    want = tokens.position[(tokens.row == 0) & (tokens.col == 1)]
    np.testing.assert_array_equal(changed, want)
    # a test input of another shape moves every later token
    t = clean.task
    wider = Task(t.id, t.train, (Pair(_grid(np.zeros((3, 4))), t.test[0].output),))
    with pytest.raises(AnalysisError, match=r"task t1: .*(tokens|position \d+ has)"):
        aligned(clean, clean.with_task(wider))
    other_answer = Task(
        t.id, t.train, (Pair(t.test[0].input, _grid((np.asarray(t.test[0].output) + 1) % 10)),)
    )
    with pytest.raises(AnalysisError, match="different answers"):
        aligned(clean, clean.with_task(other_answer))
    with pytest.raises(AnalysisError, match="different answers|position"):
        patch_sweep(clean, clean.with_task(other_answer))


# --- exact patching -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("site", ["hook_resid_pre", "hook_resid_post"])
def test_patching_every_position_of_a_layer_restores_the_clean_metric(clean, bad, site):
    every = [list(range(len(clean)))]
    res = patch_sweep(clean, bad, sites=f"blocks.*.{site}", positions=every)
    assert abs(res.gap) > 1e-4  # the corruption matters
    np.testing.assert_allclose(res.raw[:, 0] + res.corrupt_metric, res.clean_metric, rtol=0, atol=1e-5)
    np.testing.assert_allclose(res.effect[:, 0], 1.0, atol=1e-2)
    # noising in every position gives the corrupted run: effect 1 by the noising convention
    noise = patch_sweep(clean, bad, sites=f"blocks.*.{site}", positions=every, direction="noise")
    np.testing.assert_allclose(noise.raw[:, 0] + noise.clean_metric, noise.corrupt_metric, rtol=0, atol=1e-5)


def test_patching_nothing_or_the_runs_own_activations_changes_nothing(clean, bad, model):
    metric = Metric("logprob")
    want = bad.score(metric)
    site = "blocks.1.hook_resid_pre"
    own = run_prefill(model, bad.input_ids, sites=site).acts[site]
    with torch.no_grad(), intervene(model, Intervention(site, "replace", own)):
        assert float(metric(bad.logits(), bad.answer)[0]) == want
    same = patch_sweep(bad, bad, positions="all")
    assert (same.raw == 0).all() and same.settings["forward_passes"] == 0
    assert same.settings["skipped_exact_zero"] == same.raw.size
    # entries before the first corrupted token are skipped as exactly zero, not run
    res = patch_sweep(clean, bad, positions="all")
    first = int(aligned(clean, bad)[0])
    assert (res.raw[:, :first] == 0).all() and res.settings["skipped_exact_zero"] >= 2 * first


def _single_patch(subject, site: str, rows: torch.Tensor, positions) -> float:
    mask = torch.zeros(len(subject), dtype=torch.bool)
    mask[list(positions)] = True
    with torch.no_grad(), intervene(subject.model, Intervention(site, "replace", rows, positions=mask)):
        return float(Metric("logprob")(subject.logits(), subject.answer)[0])


def test_batched_sweep_equals_a_loop_of_single_patches(clean, bad, model):
    res = patch_sweep(clean, bad, batch_size=7)
    plain = patch_sweep(clean, bad, batch_size=3, fast=False)
    assert res.settings["fast"] and not plain.settings["fast"]
    np.testing.assert_allclose(res.raw, plain.raw, rtol=0, atol=1e-5)
    assert res.shape == (2, 45)  # two 3x3 train pairs and the 3x3 test input
    acts = run_prefill(model, clean.input_ids, sites="blocks.*.hook_resid_pre").acts
    for layer in range(2):
        site = f"blocks.{layer}.hook_resid_pre"
        for j in range(0, len(res.cells), 4):
            p = int(res.cells.position[j])
            want = _single_patch(bad, site, acts[site][p : p + 1], [p]) - res.corrupt_metric
            assert res.raw[layer, j] == pytest.approx(want, abs=1e-5)


def test_head_sweep_equals_single_head_patches(clean, bad, model):
    res = head_sweep(clean, bad, batch_size=3)
    plain = head_sweep(clean, bad, fast=False)
    np.testing.assert_allclose(res.raw, plain.raw, rtol=0, atol=1e-5)
    assert res.shape == (2, 4) and res.labels == ["H0", "H1", "H2", "H3"]
    z = "blocks.{}.attn.hook_z"
    for layer in range(2):
        site = z.format(layer)
        zc = run_prefill(model, clean.input_ids, sites=site).acts[site]
        zb = run_prefill(model, bad.input_ids, sites=site).acts[site]
        for h in range(4):
            rows = zb.clone()
            rows[:, h * 8 : (h + 1) * 8] = zc[:, h * 8 : (h + 1) * 8]
            want = _single_patch(bad, site, rows, range(len(bad))) - res.corrupt_metric
            assert res.raw[layer, h] == pytest.approx(want, abs=1e-5)
    # all heads of a layer at once equal the whole hook_z patch; chosen positions restrict it
    q = [int(bad.answer.predict_pos[0])]
    at_q = head_sweep(clean, bad, layers=[-1], positions=[q])
    assert at_q.layers == [1] and at_q.head_positions == q


# --- attribution patching --------------------------------------------------------------------------------------


def test_attribution_is_exact_where_the_metric_is_linear_in_the_activation(clean, bad):
    # The final norm's output reaches logit_diff through the unembedding alone: linear (for a fixed runner-up
    # colour), so the first-order estimate is the exact effect.
    kw = {"metric": "logit_diff", "sites": "ln_final.hook_normalized", "positions": "all"}
    exact = patch_sweep(clean, bad, **kw)
    approx = attribution_patching(clean, bad, **kw)
    assert np.abs(exact.raw).max() > 1e-4
    np.testing.assert_allclose(approx.raw, exact.raw, rtol=0, atol=1e-6)


def test_attribution_agrees_with_exact_patching(clean, bad):
    exact = patch_sweep(clean, bad)
    approx = attribution_patching(clean, bad)
    assert approx.method == "attribution" and approx.shape == exact.shape
    np.testing.assert_array_equal(approx.cells.position, exact.cells.position)
    agree = agreement(exact, approx, k=10)
    # Measured on this seed: Pearson 0.74, Spearman 0.69 over resid_pre x cells (RMSNorm bends the token
    # swaps of layer 0); heads are in the near-linear regime: 0.99998.
    assert agree.pearson > 0.6 and agree.spearman > 0.5 and agree.n == exact.raw.size
    heads = agreement(head_sweep(clean, bad), attribution_patching(clean, bad, heads=True))
    assert heads.pearson > 0.99 and heads.top_k_overlap == 1.0
    json.dumps(agree.to_json(), allow_nan=False)


def test_compare_on_sample_runs_exact_patching_on_the_sampled_entries(clean, bad):
    approx = attribution_patching(clean, bad)
    exact = patch_sweep(clean, bad)
    agree = compare_on_sample(clean, bad, n=20, seed=1, approx=approx)
    assert agree.n == 20 and agree.settings["sample"] == 20 and agree.settings["of"] == exact.raw.size
    rows, cols = np.asarray(agree.entries).T
    np.testing.assert_allclose(agree.exact, exact.raw[rows, cols], atol=1e-5)
    np.testing.assert_array_equal(agree.approx, approx.raw[rows, cols])
    assert compare_on_sample(clean, bad, n=20, seed=1).entries == agree.entries  # seeded sample


def test_keepgrad_gives_the_gradient_of_the_metric(clean, model):
    site = "blocks.1.hook_resid_pre"
    with KeepGrad(model, site) as kg:
        lg = clean.logits()
        Metric("logprob")(lg, clean.answer).sum().backward()
    x, g = kg.acts[site].detach(), kg.grads[site]
    assert g.shape == x.shape and g.abs().sum() > 0
    # a directional finite difference matches the gradient
    v = torch.randn_like(x) * 1e-3
    ups = []
    for sign in (1, -1):
        with torch.no_grad(), intervene(model, Intervention(site, "replace", x + sign * v)):
            ups.append(float(Metric("logprob")(clean.logits(), clean.answer)[0]))
    assert (ups[0] - ups[1]) / 2 == pytest.approx(float((g * v).sum()), rel=1e-2, abs=1e-7)


# --- SAE latents ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sae():
    from arcscope.sae.model import SAEConfig, SparseAutoencoder

    s = SparseAutoencoder(SAEConfig(d_in=32, d_sae=64, arch="relu", hook="blocks.1.hook_resid_pre"))
    s.initialize(torch.Generator().manual_seed(0))
    return s


def test_sae_splice_without_edits_leaves_the_logits_unchanged(clean, sae):
    with torch.no_grad():
        want = clean.logits()
        with sae_splice(clean.model, sae) as seen:
            assert torch.equal(clean.logits(), want)
        lat = seen["latents"]
        with sae_splice(clean.model, sae, edit=lambda a: a):
            assert torch.equal(clean.logits(), want)
        j = int(lat[0].abs().sum(0).argmax())

        def ablate(a):
            a[..., j] = 0
            return a

        with sae_splice(clean.model, sae, edit=ablate):
            assert (clean.logits() - want).abs().max() > 1e-4
        assert torch.equal(clean.logits(), want)  # the hook is gone


def test_sae_patch_ablates_and_patches_latents_batched(clean, bad, sae):
    res = sae_patch(clean, None, sae, mode="ablate", batch_size=5)
    assert res.mode == "ablate" and res.base_metric == res.clean_metric and len(res.latents) > 5
    assert (res.activation > 0).all()  # only latents that fire are swept by default
    for i in range(0, len(res.latents), 7):
        j = int(res.latents[i])

        def ablate(a, j=j):
            a[..., j] = 0
            return a

        with torch.no_grad(), sae_splice(clean.model, sae, edit=ablate):
            want = float(Metric("logprob")(clean.logits(), clean.answer)[0]) - res.clean_metric
        assert res.raw[i] == pytest.approx(want, abs=1e-5)
    patched = sae_patch(clean, bad, sae, latents=[0, 1, 2, 3], positions="cells")
    assert (
        patched.latents.tolist() == [0, 1, 2, 3]
        and patched.positions == clean.cells(["train_input", "train_output", "test_input"]).position.tolist()
    )
    assert np.isfinite(patched.effect).all() and patched.source_activation is not None
    json.dumps(patched.to_json(), allow_nan=False)
    assert patched.to_table().num_rows == 4
    with pytest.raises(AnalysisError, match="latent 64 is out of range"):
        sae_patch(clean, bad, sae, latents=[64])


# --- path patching and results --------------------------------------------------------------------------------


def test_path_patching_through_one_head(clean, bad):
    res = path_patch(clean, bad, sender=(0, 2))
    assert res.shape == (2, 2) and res.labels == ["attn", "mlp"] and res.layers == [0, 1]
    assert np.isnan(res.raw[0, 0]) and np.isfinite(res.raw[0, 1]) and np.isfinite(res.raw[1]).all()
    whole = head_sweep(clean, bad, layers=[0])
    assert res.extra["whole_head"]["raw"] == pytest.approx(whole.raw[0, 2], abs=1e-6)
    with pytest.raises(AnalysisError, match="head 4 is out of range"):
        path_patch(clean, bad, sender=(0, 4))


def test_results_are_self_describing_tables_and_json(clean, bad):
    res = patch_sweep(clean, bad, metric=Metric("logit_diff", cells=(0, 0)))
    table = res.to_table()
    assert table.num_rows == res.raw.size
    assert {"layer", "site", "position", "role", "row", "col", "token", "effect", "raw"} <= set(
        table.column_names
    )
    js = res.to_json()
    json.dumps(js, allow_nan=False)
    assert (
        js["task_id"] == "t1"
        and js["corruption"].startswith("colours:c")
        and js["metric_kind"] == "logit_diff"
    )
    assert (
        js["grids"][0]["clean"] != js["grids"][0]["corrupt"]
        or js["grids"][1]["clean"] != js["grids"][1]["corrupt"]
    )
    maps = res.grid_maps()
    assert sorted(maps) == [0, 1, 2, 3, 4] and all(m.shape == (2, 3, 3) for m in maps.values())
    top = res.top(3)
    assert len(top) == 3 and abs(top[0]["effect"]) >= abs(top[-1]["effect"])
    assert {"position", "role", "row", "col", "layer"} <= set(top[0])
    heads = head_sweep(clean, bad)
    assert set(heads.to_table().column_names) >= {"layer", "head", "effect", "raw"}
    with pytest.raises(AnalysisError, match="no grid cells"):
        heads.grid_maps()


def test_bad_settings_are_named(clean, bad):
    with pytest.raises(AnalysisError, match="direction 'sideways'"):
        patch_sweep(clean, bad, direction="sideways")
    with pytest.raises(AnalysisError, match=r"position 9999 is outside the prompt"):
        patch_sweep(clean, bad, positions=[9999])
    with pytest.raises(AnalysisError, match="layer 7 is out of range"):
        head_sweep(clean, bad, layers=[7])
    with pytest.raises(AnalysisError, match="batch_size"):
        patch_sweep(clean, bad, batch_size=0)
