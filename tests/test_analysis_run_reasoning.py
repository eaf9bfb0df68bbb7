"""arcscope.analysis.run_reasoning: the `analyze` commands on HRM / TRM checkpoints. Checkpoints are told
from LMs by their files alone; each command writes its page, JSON and Parquet with the values the library
functions give; the bundled TRM runs with no dataset (seeded Sudoku built on the fly); puzzles are picked by
example number, split or name; ARC canvases are drawn cropped with the model's own coordinates."""

from __future__ import annotations

import json
import re

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from arcscope.analysis.config import ProbeRunConfig
from arcscope.analysis.reasoning import as_puzzles, decided_step, grid_attention, patch_states, with_cell
from arcscope.analysis.run_reasoning import (
    ReasoningProbeConfig,
    is_reasoning_model,
    reasoning_attention,
    reasoning_lens,
    reasoning_patch,
    reasoning_probe,
)
from arcscope.analysis.subject import AnalysisError
from arcscope.errors import ArcscopeError
from arcscope.reasoning.bundled import bundled_checkpoint
from arcscope.reasoning.checkpoint import build_model, load_model, save_checkpoint
from arcscope.reasoning.config import HRMConfig


@pytest.fixture(autouse=True)
def one_thread():
    # Tiny models run fastest on one thread, and the suite shares its cores with other work.
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def bundled():
    model, _ = load_model(bundled_checkpoint())
    return model


def tiny_hrm(**kw):
    torch.manual_seed(0)
    cfg = HRMConfig(
        hidden_size=32,
        num_heads=2,
        expansion=2.0,
        H_layers=1,
        L_layers=1,
        H_cycles=2,
        L_cycles=2,
        halt_max_steps=3,
        forward_dtype="float32",
        **{"seq_len": 16, "vocab_size": 6, "num_puzzle_identifiers": 1, **kw},
    )
    model = build_model(cfg)
    with torch.no_grad():
        model.inner.lm_head.weight.mul_(8)  # random weights give near-uniform outputs otherwise
    return model


@pytest.fixture(scope="module")
def hrm_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hrm")
    save_checkpoint(folder, tiny_hrm())
    return folder


@pytest.fixture(scope="module")
def sudoku_dir(tmp_path_factory):
    from arcscope.puzzles import build_sudoku

    folder = tmp_path_factory.mktemp("data") / "sudoku4"
    build_sudoku(folder, n=4, train=4, test=6, seed=1)
    return folder


def read(paths):
    data = json.loads(paths["json"].read_text())
    page = paths["report"].read_text()
    return data, page


# --------------------------------------------------------------------------------------------- detection


def test_is_reasoning_model_reads_only_config_files(tmp_path, hrm_dir, tiny_model_dir, sudoku_dir):
    assert is_reasoning_model(bundled_checkpoint())
    assert is_reasoning_model(str(hrm_dir)) and is_reasoning_model(hrm_dir / "model.safetensors")
    # The original code's layout: all_config.yaml beside step_N files.
    orig = tmp_path / "orig"
    orig.mkdir()
    (orig / "all_config.yaml").write_text("arch:\n  name: hrm.hrm_act_v1@HierarchicalReasoningModel_ACTV1\n")
    (orig / "step_1200").write_bytes(b"")
    assert is_reasoning_model(orig) and is_reasoning_model(orig / "step_1200")
    # An arcscope config with no weights is not a checkpoint.
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "config.json").write_text(json.dumps({"format": "arcscope.reasoning", "arch": {}}))
    assert not is_reasoning_model(empty)
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF\x03\x00\x00\x00" + bytes(24))
    assert not is_reasoning_model(tiny_model_dir)  # an HF folder: config.json without the format
    assert not is_reasoning_model(tiny_model_dir / "model.safetensors")
    assert not is_reasoning_model(gguf)
    assert not is_reasoning_model(None)
    assert not is_reasoning_model("HuggingFaceTB/SmolLM2-135M-Instruct")
    assert not is_reasoning_model(sudoku_dir)
    assert not is_reasoning_model(tmp_path / "missing")
    # A model object passed as `loaded`: an HRM/TRM (or load_model's pair) is one, an LM is not.
    assert is_reasoning_model(tiny_hrm()) and is_reasoning_model(load_model(hrm_dir))
    assert not is_reasoning_model(torch.nn.Linear(2, 2))


# -------------------------------------------------------------------------------------------------- lens


def test_lens_on_the_bundled_trm_builds_its_own_sudoku(tmp_path, bundled):
    from arcscope.puzzles import build_sudoku, open_dataset

    res, paths = reasoning_lens(model=str(bundled_checkpoint()), device="cpu", out=str(tmp_path / "lens"))
    # The puzzle is example 0 of 8 seeded 4x4 Sudoku puzzles: the same as building them by hand.
    build_sudoku(tmp_path / "same", n=4, train=0, test=8, seed=0)
    want = as_puzzles(bundled, open_dataset(tmp_path / "same"), examples=[0])
    assert np.array_equal(res.inputs[0].reshape(-1), want.inputs[0])
    assert res.decided.shape == (1, 4, 4) and res.steps == 4 and res.cycles == 2
    # The bundled model solves it: every cell is decided at some step, and the last step is right.
    assert bool(res.solved[0, -1]) and (res.decided[0] >= 1).all() and (res.decided[0] <= 4).all()
    assert res.decided_counts()[-1] == 0
    data, page = read(paths)
    assert data["source"]["generated"] == {
        "puzzle": "sudoku",
        "n": 4,
        "count": 8,
        "seed": 0,
        "replaces_tasks": "arc1:evaluation",
    }
    assert data["decided"]["decided"] == res.decided.tolist() and data["drawn_shape"] == [4, 4]
    assert data["task"] == res.names[0] and data["settings"]["model"] == str(bundled_checkpoint())
    cells = pq.read_table(paths["cells"])
    assert (
        cells.num_rows == 16 and cells.column("decided_step").to_pylist() == res.decided.reshape(-1).tolist()
    )
    curve = pq.read_table(paths["curve"])
    assert curve.num_rows == 8 and curve.column("accuracy").to_pylist()[-1] == 1.0
    # Two decided grids (step, step.cycle), every cell decided in both, and the P(answer) strip of 8 cycles.
    assert re.findall(r'data-decided="(\d+)"', page) == ["16", "16"]
    assert 'data-kind="layer-cells"' in page and 'data-layers="8"' in page
    assert 'data-kind="answer-compare"' in page and 'data-wrong-cells="0"' in page


def test_lens_picks_examples_by_number_split_and_name(tmp_path, hrm_dir, sudoku_dir):
    model, _ = load_model(hrm_dir)
    common = dict(model=str(hrm_dir), tasks=str(sudoku_dir), device="cpu")
    res, paths = reasoning_lens(test_index=5, out=str(tmp_path / "a"), **common)
    direct = decided_step(model, sudoku_dir, examples=[5])
    assert np.array_equal(res.decided, direct.decided) and np.array_equal(res.cycle_preds, direct.cycle_preds)
    assert "test/all/example 5" in res.names[0] and res.steps == 3
    res2, _ = reasoning_lens(task="train:2", out=str(tmp_path / "b"), **common)
    assert res2.names[0].startswith("train/all/example 2")
    res3, _ = reasoning_lens(task="3", cells="1,2", out=str(tmp_path / "c"), loaded=model, **common)
    assert "test/all/example 3" in res3.names[0]
    assert "Chosen cells" in (tmp_path / "c" / "report.html").read_text()
    with pytest.raises(AnalysisError, match="neither an example number nor a puzzle name"):
        reasoning_lens(task="nope", out=str(tmp_path / "d"), **common)
    with pytest.raises(AnalysisError, match="out of range"):
        reasoning_lens(test_index=6, out=str(tmp_path / "d"), **common)
    with pytest.raises(ArcscopeError, match="holds no split"):
        reasoning_lens(model=str(hrm_dir), tasks=str(tmp_path), device="cpu", out=str(tmp_path / "d"))
    # A model that is no Sudoku model gets no puzzles made up for it.
    other = tmp_path / "other"
    save_checkpoint(other, tiny_hrm(vocab_size=9))
    with pytest.raises(AnalysisError, match="not a Sudoku model"):
        reasoning_lens(model=str(other), device="cpu", out=str(tmp_path / "d"))


def test_lens_on_an_arc_canvas_draws_the_part_holding_the_puzzle(tmp_path):
    from arcscope.puzzles.layout import DatasetWriter
    from arcscope.tasks.hrm import hrm_encode

    grid_in = np.array([[1, 2, 3], [4, 5, 6], [7, 8, 9]], np.uint8)
    grid_out = np.array([[3, 3, 0, 1], [2, 2, 2, 2]], np.uint8)
    folder = tmp_path / "arc"
    with DatasetWriter(folder, seq_len=900, vocab_size=12) as w:
        w.split("test").add_group([(1, hrm_encode(grid_in)[None], hrm_encode(grid_out)[None])])
        w.finish(["<blank>", "00d62c1b"], {"kind": "arc"})
    ckpt = tmp_path / "hrm-arc"
    save_checkpoint(ckpt, tiny_hrm(seq_len=900, vocab_size=12, num_puzzle_identifiers=2))
    res, paths = reasoning_lens(
        model=str(ckpt), tasks=str(folder), task="00d62c1b", device="cpu", out=str(tmp_path / "o")
    )
    assert res.shape == (30, 30) and "00d62c1b" in res.names[0]
    data, page = read(paths)
    # Drawn: rows 0..2 and columns 0..3 (the input's 3 rows, the answer's 4 columns), colours as they are.
    assert data["drawn_shape"] == [3, 4]
    assert re.search(r'<svg class="decided"[^>]*data-h="3" data-w="4"', page)
    # Scored: the answer's 8 colour cells and its EOS border (2 x 4 grid: 4 below, 2 to the right).
    assert int(res.scored.sum()) == 8 + 4 + 2


# ------------------------------------------------------------------------------------------------- patch


def test_patch_sweeps_cells_at_every_step(tmp_path, bundled):
    res, paths = reasoning_patch(
        model=str(bundled_checkpoint()), device="cpu", out=str(tmp_path / "p"), loaded=bundled
    )
    clean = res.results[0]
    # Default corruption: the first clue of the generated puzzle, the next digit after it.
    inp = as_puzzles(bundled, _generated(tmp_path), examples=[0]).inputs[0].reshape(4, 4)
    r, c = np.argwhere(inp >= 2)[0]
    assert res.cell == (r, c) and res.corruption == f"cell:{r},{c}={int(inp[r, c])}"
    assert res.steps == [1, 2, 3, 4] and res.effect.shape == (4, 4, 4)
    # The same numbers as patch_states on the same pair; every cell patched at the last step is the clean run.
    cl = as_puzzles(bundled, _generated(tmp_path), examples=[0])
    direct = patch_states(bundled, cl, with_cell(cl, (r, c), int(inp[r, c]) + 1), step=2)
    assert np.allclose(res.effect[1], direct.grid()) and res.results[1].site == "z_H.1"
    assert res.all_cells[-1] == pytest.approx(clean.clean_value, abs=1e-5)
    assert res.results[-1].recovered[0] == pytest.approx(1.0, abs=1e-5)
    table = pq.read_table(paths["patch"])
    assert table.num_rows == 4 * 17 and sorted(set(table.column("step").to_pylist())) == [1, 2, 3, 4]
    data, page = read(paths)
    assert data["patch"]["corruption"] == res.corruption and len(data["patch"]["effect"]) == 4
    assert 'data-kind="heat-grids"' in page and 'data-layers="4"' in page


def _generated(tmp_path):
    from arcscope.puzzles import build_sudoku

    folder = tmp_path / "gen"
    if not folder.exists():
        build_sudoku(folder, n=4, train=0, test=8, seed=0)
    return folder


def test_patch_corruption_and_site_settings(tmp_path, hrm_dir, sudoku_dir):
    common = dict(model=str(hrm_dir), tasks=str(sudoku_dir), device="cpu", out=str(tmp_path / "p"))
    res, _ = reasoning_patch(corruption="cell:1,1=3", site="z_L", positions="all", **common)
    assert res.corruption == "cell:1,1=3" and res.settings["new_token"] == 4
    assert [r.site for r in res.results] == ["z_L.1.1"] * 3 and all(len(r.groups) == 1 for r in res.results)
    res2, _ = reasoning_patch(corruption="cell:0,1", cells="2,2", site="z_H.0", positions="all", **common)
    assert res2.results[0].site == "z_H.0" and res2.results[0].out_rows.tolist() == [2]
    with pytest.raises(AnalysisError, match="one cell at a time"):
        reasoning_patch(corruption="dihedral", **common)
    with pytest.raises(AnalysisError, match="outside the 4x4 grid"):
        reasoning_patch(corruption="cell:4,0=1", **common)
    inp = as_puzzles(load_model(hrm_dir)[0], sudoku_dir, examples=[0]).inputs[0].reshape(4, 4)
    with pytest.raises(AnalysisError, match="already holds"):
        reasoning_patch(corruption=f"cell:0,0={int(inp[0, 0]) - 1}", **common)


# --------------------------------------------------------------------------------------------- attention


def test_attention_per_step_on_the_bundled_trm(tmp_path, bundled):
    res, paths = reasoning_attention(
        model=str(bundled_checkpoint()), device="cpu", out=str(tmp_path / "a"), loaded=bundled
    )
    # Default query: the first blank cell; both L blocks (TRM has one network).
    inp = as_puzzles(bundled, _generated(tmp_path), examples=[0]).inputs[0].reshape(4, 4)
    assert res.query == tuple(int(x) for x in np.argwhere(inp == 1)[0]) and res.layers == ["L.0", "L.1"]
    maps = res.step_maps()
    assert maps.shape == (5, 4, 4)
    # No puzzle-embedding positions: a mean of softmax rows sums to 1, per step and over all steps.
    assert np.allclose(maps.sum((1, 2)), 1.0, atol=1e-5)
    direct = grid_attention(bundled, _generated(tmp_path), examples=[0], layer=1, query=res.query)
    assert np.allclose(res.results[1].pattern, direct.pattern)
    table = pq.read_table(paths["attention"])
    # 2 layers x 4 steps x 8 updates x 4 heads x 16 keys.
    assert table.num_rows == 2 * 4 * 8 * 4 * 16
    data, page = read(paths)
    assert data["attention"]["query"] == list(res.query) and len(data["attention"]["step_maps"]) == 5
    assert 'data-layers="5"' in page and 'class="heatmap"' in page


def test_attention_layers_heads_cells_and_aggregate(tmp_path, hrm_dir, sudoku_dir):
    common = dict(model=str(hrm_dir), tasks=str(sudoku_dir), device="cpu", out=str(tmp_path / "a"))
    res, _ = reasoning_attention(**common)
    assert res.layers == ["H.0", "L.0"]
    res, _ = reasoning_attention(layers="H0", heads="1", cells="2,3", aggregate="sum", **common)
    assert res.layers == ["H.0"] and res.results[0].heads == [1] and res.query == (2, 3)
    # Sum over the 2 z_H calls of each step of one head; HRM's puzzle embedding takes the rest of each row.
    pre = res.results[0].prefix_weights()[0, :, 0, 0]
    per_step = res.step_maps()[1:].sum((1, 2))
    assert np.allclose(per_step, (1 - pre).reshape(3, 2).sum(1), atol=1e-5)
    with pytest.raises(AnalysisError, match="name no attention layer|must be 0"):
        reasoning_attention(layers="H5", **common)
    with pytest.raises(AnalysisError, match="aggregate"):
        reasoning_attention(aggregate="median", **common)


# ------------------------------------------------------------------------------------------------ probes


def test_probe_per_cycle_on_generated_sudoku(tmp_path, bundled):
    res, paths = reasoning_probe(
        max_examples=40, max_iter=30, device="cpu", out=str(tmp_path / "q"), loaded=bundled
    )
    assert res.labels == [(s, c) for s in range(1, 5) for c in range(2)]
    assert res.n_train_puzzles + res.n_test_puzzles == 40
    # The model solves these: its own readout after the last cycle is right on (almost) every held-out cell.
    assert res.readout_accuracy[-1] >= 0.95 and res.accuracy[-1] >= 0.9
    table = pq.read_table(paths["probes"])
    assert table.num_rows == 8 and table.column("target").to_pylist() == ["answer"] * 8
    data, _ = read(paths)
    assert data["source"]["generated"]["count"] == 40 and data["probe"]["n_test"] == res.n_test


def test_probe_from_a_dataset_and_from_an_lm_probe_config(tmp_path, hrm_dir, sudoku_dir):
    res, _ = reasoning_probe(
        ReasoningProbeConfig(
            model=str(hrm_dir), tasks=str(sudoku_dir), data_split="train", cycles="last", max_iter=20
        ),
        out=str(tmp_path / "q"),
    )
    assert res.labels == [(1, 1), (2, 1), (3, 1)] and res.settings["puzzles"] == 4
    # An LM probe config: its shared fields carry over, its default target 'colour' becomes 'answer'.
    lm = ProbeRunConfig(test_fraction=0.5, max_iter=10, seed=3, out=str(tmp_path / "r"))
    res2, paths = reasoning_probe(lm, model=str(hrm_dir), tasks=str(sudoku_dir), target="input")
    assert res2.target == "input" and res2.settings["test_fraction"] == 0.5 and res2.settings["seed"] == 3
    assert paths["report"].parent == tmp_path / "r"
    res3, _ = reasoning_probe(lm, model=str(hrm_dir), tasks=str(sudoku_dir))
    assert res3.target == "answer"
    with pytest.raises(ArcscopeError, match="probe target"):
        reasoning_probe(model=str(hrm_dir), tasks=str(sudoku_dir), target="colour2")


# ------------------------------------------------------------------------------------------------ browser


@pytest.mark.browser
def test_reasoning_reports_draw_without_errors(tmp_path, bundled):
    from tests.browser import dump_dom

    b = str(bundled_checkpoint())
    for name, fn in (
        ("lens", reasoning_lens),
        ("patch", reasoning_patch),
        ("attention", reasoning_attention),
    ):
        _, paths = fn(model=b, device="cpu", out=str(tmp_path / name), loaded=bundled)
        dom = dump_dom(paths["report"], "", tmp_path / f"profile-{name}")
        body = re.search(r"<body[^>]*>", dom).group(0)
        assert 'data-ready="1"' in body and 'data-errors="0"' in body, (name, body)
        assert 'data-rendered="error"' not in dom and 'data-rendered="0"' not in dom, name
