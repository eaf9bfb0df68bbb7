"""`arcscope analyze ...` end to end on the tiny model: each command writes report.html, result.json and
Parquet tables, and bad input exits 2 with a message naming it."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
import torch

from arcscope.cli import main
from tests.conftest import tiny_job


def run_main(args, capsys):
    """Run the real entry point; return (exit code, stdout, stderr) with whitespace collapsed."""
    with pytest.raises(SystemExit) as e:
        main(args)
    out, err = capsys.readouterr()
    return e.value.code, " ".join(out.split()), " ".join(err.split())


def common(tiny_model_dir, out):
    return ["--model", str(tiny_model_dir), "--device", "cpu", "--out", str(out), "-q"]


def read(out):
    data = json.loads((out / "result.json").read_text())
    html = (out / "report.html").read_text()
    assert html.startswith("<!DOCTYPE html>") and "Content-Security-Policy" in html
    return data, html


def test_lens(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "lens"
    code, stdout, err = run_main(["analyze", "lens", "--average", "3", *common(tiny_model_dir, out)], capsys)
    assert code in (0, None), err
    assert "report.html" in stdout
    data, html = read(out)
    lens = data["lens"][0]
    assert data["task"] == lens["task_id"]
    table = pq.read_table(out / "logit_lens.parquet")
    # two layers x every answer cell of the picked task
    assert table.num_rows == 2 * len(lens["cells"]["row"])
    assert set(table.column("layer").to_pylist()) == {0, 1}
    assert len(data["curve"]["task_ids"]) == 3  # the curve averaged over the 3 smallest tasks


def test_steer_with_a_saved_vector(tiny_model_dir, tmp_path, capsys):
    from arcscope.analysis.vectors import SteeringVector, save_vector

    vec = tmp_path / "v.safetensors"
    torch.manual_seed(0)
    save_vector(SteeringVector("blocks.1.hook_resid_pre", torch.randn(32), "random"), vec)
    out = tmp_path / "steer"
    args = ["analyze", "steer", "--vector", str(vec), "--hook", "blocks.1.hook_resid_pre"]
    args += ["--doses", "0,1,4", *common(tiny_model_dir, out)]
    code, _, err = run_main(args, capsys)
    assert code in (0, None), err
    data, _ = read(out)
    assert data["doses"] == [0.0, 1.0, 4.0]
    assert data["value"][0] == pytest.approx(data["baseline"], abs=1e-6)
    assert pq.read_table(out / "doses.parquet").num_rows == 3


def test_probe_from_a_store(tiny_model_dir, tmp_path, capsys):
    from arcscope.engine import run_job

    store = tmp_path / "store"
    run_job(tiny_job(store, tiny_model_dir, max_tasks=4, max_batch=16, device="cpu"))
    out = tmp_path / "probe"
    args = ["analyze", "probe", "--store", str(store), "--target", "colour", "--out", str(out), "-q"]
    code, _, err = run_main(args, capsys)
    assert code in (0, None), err
    data, _ = read(out)
    table = pq.read_table(out / "probes.parquet")
    assert table.num_rows >= 2 and data["target"] == "colour"


def test_bad_input_exits_2(tiny_model_dir, tmp_path, capsys):
    code, _, err = run_main(
        ["analyze", "lens", "--task", "nope1234", *common(tiny_model_dir, tmp_path / "x")], capsys
    )
    assert code == 2 and "nope1234" in err
    code, _, err = run_main(
        ["analyze", "lens", "--metric", "acc", *common(tiny_model_dir, tmp_path / "x")], capsys
    )
    assert code == 2 and "metric" in err
    code, _, err = run_main(
        ["analyze", "lens", "--layers", "0-9", *common(tiny_model_dir, tmp_path / "x")], capsys
    )
    assert code == 2 and "layer" in err


def test_attention_and_knockout(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "att"
    code, _, err = run_main(["analyze", "attention", "--cells", "0,0", *common(tiny_model_dir, out)], capsys)
    assert code in (0, None), err
    data, html = read(out)
    assert pq.read_table(out / "attention.parquet").num_rows > 0
    assert "heat" in html
    out = tmp_path / "ko"
    args = ["analyze", "knockout", "--source", "answer", "--target", "test_input", "--sweep", "heads"]
    code, _, err = run_main([*args, *common(tiny_model_dir, out)], capsys)
    assert code in (0, None), err
    data, _ = read(out)
    ko = data["knockout"]
    assert ko["after"] != ko["before"]
    # 2 layers x 4 heads, one knockout each
    assert pq.read_table(out / "sweep.parquet").num_rows >= 8


def test_patch(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "patch"
    args = ["analyze", "patch", "--corruption", "cell", "--heads", "--batch-size", "64"]
    code, _, err = run_main([*args, *common(tiny_model_dir, out)], capsys)
    assert code in (0, None), err
    data, _ = read(out)
    exact = pq.read_table(out / "exact.parquet")
    approx = pq.read_table(out / "attribution.parquet")
    assert exact.num_rows == approx.num_rows > 0
    assert -1.0 <= data["agreement"]["pearson"] <= 1.0
    assert pq.read_table(out / "heads.parquet").num_rows == 2 * 4


def test_train_lens_then_use_it(tiny_model_dir, tmp_path, capsys):
    from arcscope.engine import run_job

    store = tmp_path / "store"
    run_job(tiny_job(store, tiny_model_dir, positions=["all"], max_batch=16, device="cpu"))
    out = tmp_path / "tl"
    args = ["analyze", "train-lens", "--store", str(store), "--steps", "20", "--out", str(out), "-q"]
    code, _, err = run_main(args, capsys)
    assert code in (0, None), err
    data, _ = read(out)
    fit = pq.read_table(out / "fit.parquet").to_pylist()
    assert fit and all(r["kl_tuned"] is not None for r in fit)
    out2 = tmp_path / "lens"
    args = ["analyze", "lens", "--tuned", str(out / "tuned_lens.safetensors"), *common(tiny_model_dir, out2)]
    code, _, err = run_main(args, capsys)
    assert code in (0, None), err
    lens = json.loads((out2 / "result.json").read_text())["lens"]
    assert [x["lens"] for x in lens] == ["logit", "tuned"]


def test_the_same_commands_run_on_the_bundled_trm(tmp_path, capsys):
    from arcscope.reasoning.bundled import bundled_checkpoint

    trm = str(bundled_checkpoint())
    for cmd in ("lens", "patch"):
        out = tmp_path / cmd
        code, _, err = run_main(
            ["analyze", cmd, "--model", trm, "--device", "cpu", "--out", str(out), "-q"], capsys
        )
        assert code in (0, None), err
        data, _ = read(out)
    cells = pq.read_table(tmp_path / "lens" / "cells.parquet")
    assert cells.num_rows == 16  # one 4x4 Sudoku: the step at which each cell is decided
    assert pq.read_table(tmp_path / "patch" / "patch.parquet").num_rows > 0


def test_patch_sae_latents(tiny_model_dir, tmp_path, capsys):
    from arcscope.sae import SAEConfig, SparseAutoencoder, save_sae

    torch.manual_seed(0)
    sae = SparseAutoencoder(SAEConfig(d_in=32, d_sae=64, arch="topk", k=8, hook="blocks.1.hook_resid_pre"))
    save_sae(sae, tmp_path / "sae")
    out = tmp_path / "p"
    args = ["analyze", "patch", "--method", "exact", "--sae", str(tmp_path / "sae"), "--latents", "0-9"]
    code, _, err = run_main([*args, *common(tiny_model_dir, out)], capsys)
    assert code in (0, None), err
    data, _ = read(out)
    assert data["sae"]["hook"] == "blocks.1.hook_resid_pre"
    assert pq.read_table(out / "sae.parquet").num_rows == 10
