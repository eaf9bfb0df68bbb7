"""arcscope.analysis.reasoning: HRM / TRM on the grid. Decided steps agree with the model's own outputs and
with a direct definition; patching every position restores the clean output, patching nothing changes
nothing, a cell sweep is batch-invariant and local where the model is; attention weights are the ones the
layer's SDPA uses; a step probe reads the answer from z_H and only chance from random labels."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from arcscope.analysis.reasoning import (
    NEVER,
    NOT_SCORED,
    as_puzzles,
    attention_weights,
    decided_step,
    grid_attention,
    patch_states,
    probe_steps,
    run_act,
    state_updates,
    with_cell,
)
from arcscope.analysis.subject import AnalysisError
from arcscope.reasoning.capture import hook_names, trace
from arcscope.reasoning.checkpoint import build_model, load_model
from arcscope.reasoning.config import HRMConfig, TRMConfig

TINY = dict(hidden_size=32, num_heads=2, expansion=2.0, seq_len=16, vocab_size=6, num_puzzle_identifiers=5)


@pytest.fixture(autouse=True)
def one_thread():
    # Tiny models run fastest on one thread, and the suite shares its cores with other work.
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def tiny(arch: str, **kw):
    torch.manual_seed(0)
    if arch == "hrm":
        cfg = HRMConfig(
            **{**TINY, "H_layers": 1, "L_layers": 1, "halt_max_steps": 3, "forward_dtype": "float32", **kw}
        )
    else:
        cfg = TRMConfig(
            **{
                **TINY,
                "L_layers": 1,
                "H_cycles": 2,
                "L_cycles": 2,
                "halt_max_steps": 3,
                "puzzle_emb_len": 2,
                "forward_dtype": "float32",
                **kw,
            }
        )
    model = build_model(cfg)
    with torch.no_grad():
        # Random weights give near-uniform outputs; a larger head makes predictions (and patches) matter.
        model.inner.lm_head.weight.mul_(8)
    return model


def random_puzzles(n: int, seed: int = 0):
    g = np.random.default_rng(seed)
    return g.integers(1, 6, (n, 16)), g.integers(1, 6, (n, 16))


@pytest.fixture(scope="module")
def bundled():
    from arcscope.reasoning.bundled import bundled_checkpoint

    model, _ = load_model(bundled_checkpoint())
    return model


def sudoku(n: int, seed: int):
    from arcscope.puzzles.sudoku import encode_board, generate_many

    boards, sols = generate_many(n, n=4, seed=seed)
    enc = lambda a: np.stack([encode_board(b) for b in a]).astype(np.int64)  # noqa: E731
    return enc(boards), enc(sols)


# ------------------------------------------------------------------------------------------------ puzzles


def test_puzzles_from_grids_batches_and_datasets(tmp_path):
    from arcscope.puzzles import build_sudoku, open_dataset
    from arcscope.reasoning.data import eval_batches

    model = tiny("trm")
    inp, lab = random_puzzles(3)
    one = as_puzzles(model, inp[0].reshape(4, 4), labels=lab[0].reshape(4, 4))
    assert one.shape == (4, 4) and one.inputs.shape == (1, 16) and one.labels[0].tolist() == lab[0].tolist()
    many = as_puzzles(model, {"inputs": torch.as_tensor(inp), "labels": torch.as_tensor(lab)})
    assert len(many) == 3 and many.puzzle_identifiers.tolist() == [0, 0, 0]
    build_sudoku(tmp_path / "s", n=4, train=8, test=6, seed=0)
    ds = open_dataset(tmp_path / "s")
    picked = as_puzzles(model, ds, examples=[4, 1])
    full = as_puzzles(model, tmp_path / "s")
    assert len(full) == 6 and np.array_equal(picked.inputs, full.inputs[[4, 1]])
    assert "example 4" in picked.names[0]
    b = next(eval_batches(ds["test"], 8))  # 6 real rows and 2 of padding
    assert np.array_equal(as_puzzles(model, b).inputs, full.inputs)
    with pytest.raises(AnalysisError, match="do not fit the model's 16 positions"):
        as_puzzles(model, np.ones((3, 3), dtype=np.int64))
    with pytest.raises(AnalysisError, match="vocabulary is 0..5"):
        as_puzzles(model, np.full(16, 9))
    with pytest.raises(AnalysisError, match="out of range"):
        as_puzzles(model, ds, examples=[6])
    with pytest.raises(AnalysisError, match="already holds"):
        with_cell(one, (0, 0), int(inp[0, 0]))
    with pytest.raises(AnalysisError, match="outside the 4x4 grid"):
        with_cell(one, (4, 0), 1)


@pytest.mark.parametrize("arch", ["hrm", "trm"])
def test_watch_sees_every_update_in_order_and_edits_take(arch):
    model = tiny(arch)
    names = [f"z_H.{h}" if k == "z_H" else f"z_L.{h}.{i}" for k, h, i in state_updates(model)]
    assert names == hook_names(model)
    b = as_puzzles(model, *random_puzzles(2)[:1]).tensors("cpu")
    seen = []
    run_act(model, b, edit=lambda s, k, h, i, z: seen.append((s, k, h, i)))
    assert (
        len(seen) == 3 * len(hook_names(model)) and seen[0] == (1, "z_L", 0, 0) and seen[-1][:2] == (3, "z_H")
    )
    # Zeroing the last z_H of step 1 zeroes what the head reads there: logits = lm_head(0) = 0.
    outs = run_act(
        model, b, edit=lambda s, k, h, i, z: torch.zeros_like(z) if (s, k, h) == (1, "z_H", 1) else None
    )
    assert torch.equal(outs[0]["logits"], torch.zeros_like(outs[0]["logits"]))
    assert not torch.equal(outs[1]["logits"], torch.zeros_like(outs[1]["logits"]))
    assert model.training  # put back in the mode it was in


# ----------------------------------------------------------------------------------------------- decided


@pytest.mark.parametrize("arch", ["hrm", "trm"])
def test_decided_step_matches_model_outputs_and_definition(arch):
    model = tiny(arch)
    inp, lab = random_puzzles(4)
    r = decided_step(model, inp, labels=lab)
    b = as_puzzles(model, inp, labels=lab).tensors("cpu")
    tr = trace(model, b)
    assert np.array_equal(r.preds.reshape(4, 3, 16), tr.preds.permute(1, 0, 2).numpy())
    # The last cycle of each step is the step's output.
    assert np.array_equal(r.cycle_preds[:, 1::2], r.preds)
    right = r.preds == r.target[:, None]
    for p in range(4):
        for i in range(4):
            for j in range(4):
                cell = right[p, :, i, j]
                want = next((s + 1 for s in range(3) if cell[s:].all()), NEVER)
                assert r.decided[p, i, j] == want
    assert np.allclose(r.accuracy, right.mean(axis=(2, 3)))
    assert r.decided_counts().sum() == 64 and r.cycle_labels == [
        (1, 0),
        (1, 1),
        (2, 0),
        (2, 1),
        (3, 0),
        (3, 1),
    ]
    # Against its own final answer every cell is decided by the last step.
    own = decided_step(model, inp)
    assert own.reference == "final" and (own.decided >= 1).all() and (own.decided <= 3).all()
    assert np.array_equal(own.accuracy[:, -1], np.ones(4))
    t = r.to_table()
    assert t.num_rows == 64 and t.column("decided_step").to_pylist() == r.decided.reshape(-1).tolist()
    assert r.curve_table().num_rows == 4 * 6
    json.dumps(r.to_json(), allow_nan=False)


def test_unscored_cells_are_marked():
    model = tiny("trm")
    inp, lab = random_puzzles(1)
    lab[0, :4] = -100
    r = decided_step(model, inp, labels=lab)
    assert (r.decided[0, 0] == NOT_SCORED).all() and (r.decided[0, 1:] != NOT_SCORED).all()
    assert np.isnan(r.cycle_logprob[0, :, 0]).all()
    with pytest.raises(AnalysisError, match="steps must be 1..3"):
        decided_step(model, inp, steps=4)


def test_bundled_trm_decides_sudoku_cells_by_the_last_step(bundled):
    inp, lab = sudoku(40, seed=7)
    r = decided_step(bundled, inp, labels=lab)
    solved = r.solved[:, -1]
    assert solved.mean() >= 0.9
    assert (r.decided[solved] >= 1).all() and (r.decided[solved] <= 4).all()
    given = r.inputs != 1
    assert (r.decided[given] == 1).all()  # the clues are copied at once
    assert (r.decided[~given & solved[:, None, None]] >= 1).all()
    assert r.mean_accuracy[-1] >= 0.99 and np.all(np.diff(r.mean_accuracy) >= -1e-9)
    # Inside step 1 the first cycle is still guessing; the second has nearly everything.
    assert r.cycle_accuracy[:, 0].mean() < 0.8 < r.cycle_accuracy[:, 1].mean()
    assert (r.halt_step >= 1).all() and (r.halt_step <= 4).all()


# ---------------------------------------------------------------------------------------------- patching


def corrupted(model, seed=0):
    inp, lab = random_puzzles(1, seed)
    clean = as_puzzles(model, inp, labels=lab)
    return clean, with_cell(clean, (1, 2), 1 + int(inp[0, 6]) % 5)


@pytest.mark.parametrize("arch", ["hrm", "trm"])
def test_patching_everything_restores_clean_and_nothing_changes_nothing(arch):
    model = tiny(arch)
    clean, bad = corrupted(model)
    for step in (1, 2, 3):
        full = patch_states(model, clean, bad, step=step, cells="all", at_step=step)
        assert full.values[0] == pytest.approx(full.clean_value, abs=1e-6)
        assert np.array_equal(full.preds[0], full.clean_preds)
        assert full.recovered[0] == pytest.approx(1.0, abs=1e-4)
    assert abs(full.clean_value - full.corrupt_value) > 1e-3  # the corruption matters
    none = patch_states(model, clean, bad, step=2, cells=[[]], state="z_L")
    assert np.allclose(none.by_step[0], none.corrupt_by_step, atol=1e-6) and none.group_labels == ["none"]
    assert np.array_equal(none.preds[0], none.corrupt_preds)
    # The same puzzle on both sides: no patch moves anything.
    same = patch_states(model, clean, clean, step=1)
    assert np.allclose(same.effect, 0, atol=1e-6)


def test_cell_sweep_is_batch_invariant_and_local_at_the_last_update():
    model = tiny("trm")
    clean, bad = corrupted(model)
    a = patch_states(model, clean, bad, step=2, cycle=0, state="z_L.0.1", batch_size=16)
    b = patch_states(model, clean, bad, step=2, cycle=0, state="z_L", inner=1, batch_size=5)
    assert a.site == b.site == "z_L.0.1" and a.effect.shape == (16,)
    assert np.allclose(a.values, b.values, atol=1e-6) and np.isfinite(a.grid()).all()
    # The head reads each cell's own z_H: patching cell k at the last update of step s changes step s's
    # output at k alone, and makes it the clean one.
    s = patch_states(model, clean, bad, step=3, at_step=3)
    clean_cells = patch_states(model, clean, clean, step=3, at_step=3, cells=[[]]).per_cell[0]
    corrupt_cells = patch_states(model, bad, bad, step=3, at_step=3, cells=[[]]).per_cell[0]
    for g in range(16):
        want = corrupt_cells.copy()
        want[g] = clean_cells[g]
        assert np.allclose(s.per_cell[g], want, atol=1e-5)
    t = s.to_table()
    assert t.num_rows == 16 and t.column("row").to_pylist()[5] == 1 and t.column("col").to_pylist()[5] == 1
    json.dumps(s.to_json(), allow_nan=False)


def test_patch_metric_cells_and_errors():
    model = tiny("hrm")
    clean, bad = corrupted(model)
    one = patch_states(model, clean, bad, cells=[(0, 0), (3, 3)], metric_cells=(1, 2))
    assert one.out_rows.tolist() == [1] and one.out_cols.tolist() == [2] and one.per_cell.shape == (2, 1)
    assert np.isnan(one.grid()[1, 1]) and np.isfinite(one.grid()[3, 3])
    with pytest.raises(AnalysisError, match="cycle must be 0..1"):
        patch_states(model, clean, bad, cycle=2)
    with pytest.raises(AnalysisError, match="state must be z_H or z_L"):
        patch_states(model, clean, bad, state="z_X")
    with pytest.raises(AnalysisError, match="step must be 1..3"):
        patch_states(model, clean, bad, step=0)
    with pytest.raises(AnalysisError, match="at_step must be 3..3"):
        patch_states(model, clean, bad, step=3, at_step=2)
    with pytest.raises(AnalysisError, match="must be integers"):
        patch_states(model, clean, bad, state="z_L.a.0")
    with pytest.raises(AnalysisError, match="one clean and one corrupted"):
        patch_states(model, as_puzzles(model, random_puzzles(2)[0]), bad)


def test_bundled_trm_patch_of_a_clue_sweep(bundled):
    inp, lab = sudoku(1, seed=3)
    clean = as_puzzles(bundled, inp, labels=lab)
    r, c = divmod(int(np.flatnonzero(inp[0] != 1)[0]), 4)
    d = int(inp[0, r * 4 + c])
    bad = with_cell(clean, (r, c), 2 + (d - 1) % 4)  # another digit: the clean answer is now wrong
    res = patch_states(bundled, clean, bad, step=1, cycle=0)
    assert res.clean_value > -0.1 and res.corrupt_value < res.clean_value - 1
    assert res.grid().shape == (4, 4) and res.effect[r * 4 + c] == res.effect.max()


# --------------------------------------------------------------------------------------------- attention


def sdpa_outputs(attn):
    """A test-side capture of what the layer's SDPA returned (o_proj input) and its v."""
    got = {"qkv": [], "out": []}
    h1 = attn.qkv_proj.register_forward_hook(lambda m, a, o: got["qkv"].append(o.detach()))
    h2 = attn.o_proj.register_forward_pre_hook(lambda m, a: got["out"].append(a[0].detach()))
    return got, (h1, h2)


@pytest.mark.parametrize(("arch", "module"), [("hrm", "H"), ("hrm", "L"), ("trm", "L")])
def test_attention_weights_are_what_sdpa_uses(arch, module):
    model = tiny(arch)
    inp, _ = random_puzzles(2)
    attn = (model.inner.H_level if module == "H" else model.inner.L_level).layers[0].self_attn
    got, hs = sdpa_outputs(attn)
    res = grid_attention(model, inp, module=module, layer=0)
    for h in hs:
        h.remove()
    per_step = len([u for u in res.calls if u[0] == 1])
    assert per_step == {"H": 2, "L": 4 if arch == "hrm" else 6}[module] and len(res.calls) == 3 * per_step
    p = torch.as_tensor(res.pattern)  # [B, calls, heads, Q, K]
    assert torch.allclose(p.sum(-1), torch.ones(()), atol=1e-5)
    prefix = res.prefix
    for i, (qkv, out) in enumerate(zip(got["qkv"], got["out"], strict=True)):
        b, t, _ = qkv.shape
        v = qkv.view(b, t, 3 * attn.num_heads, attn.head_dim)[:, :, 2 * attn.num_heads :].transpose(1, 2)
        direct = attention_weights(attn, qkv, model.inner.cos_sin())
        assert torch.allclose(direct[:, :, prefix:], p[:, i], atol=1e-6)
        mixed = (direct @ v.float()).transpose(1, 2).reshape(b, t, -1)
        assert torch.allclose(mixed, out, atol=1e-5)
    hm = res.heatmap((1, 1))
    assert hm.shape == (4, 4) and 0 < hm.sum() <= 1 + 1e-6
    assert res.to_table().num_rows == p.numel()


def test_attention_selection_and_errors(bundled):
    inp, _ = sudoku(1, seed=5)
    res = grid_attention(bundled, inp, layer=1, heads=[2], steps=4, updates="z_H.1", query=(0, 3))
    assert res.calls == [(4, "z_H.1")] and res.pattern.shape == (1, 1, 1, 1, 16)
    assert res.cell_weights().shape == (1, 1, 1, 1, 4, 4) and res.prefix_weights().shape[-1] == 0
    assert res.heatmap((0, 3), head=2).sum() == pytest.approx(1.0, abs=1e-5)
    json.dumps(res.to_json(), allow_nan=False)
    with pytest.raises(AnalysisError, match="no H_level"):
        grid_attention(bundled, inp, module="H")
    with pytest.raises(AnalysisError, match="layer must be 0..1"):
        grid_attention(bundled, inp, layer=2)
    with pytest.raises(AnalysisError, match="does not run in"):
        grid_attention(tiny("hrm"), random_puzzles(1)[0], module="H", updates="z_L.0.0")
    with pytest.raises(AnalysisError, match="mlp_t"):
        grid_attention(tiny("trm", mlp_t=True), random_puzzles(1)[0])


# ------------------------------------------------------------------------------------------------ probes


def test_step_probe_reads_the_answer_from_z_h_and_chance_from_random_labels(bundled):
    inp, lab = sudoku(80, seed=11)
    res = probe_steps(bundled, inp, labels=lab, cycles="all", max_iter=50)
    assert res.labels[:3] == [(1, 0), (1, 1), (2, 0)] and len(res.accuracy) == 8
    assert res.accuracy[-1] >= 0.97 and res.readout_accuracy[-1] >= 0.97
    # Early in step 1 the state holds more than the head reads out of it.
    assert res.accuracy[0] > res.readout_accuracy[0] + 0.1
    assert res.n_test_puzzles >= 15 and res.n_train + res.n_test == 80 * 16
    noise = np.random.default_rng(0).integers(2, 6, lab.shape)
    rnd = probe_steps(bundled, inp, labels=noise, max_iter=50)
    assert np.all(rnd.accuracy < 0.35)  # four digits: chance is 0.25
    assert rnd.to_table().num_rows == 4
    zl = probe_steps(bundled, inp[:20], labels=lab[:20], state="z_L", target="input", max_iter=30)
    assert (
        zl.state == "z_L"
        and zl.labels == [(1, 1), (2, 1), (3, 1), (4, 1)]
        and np.isnan(zl.readout_accuracy).sum() == 0
    )
    json.dumps(res.to_json(), allow_nan=False)
    with pytest.raises(AnalysisError, match="target"):
        probe_steps(bundled, inp, labels=lab, target="colour")
