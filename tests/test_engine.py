"""The capture engine and `arcscope run`: store contents, predictions, resume after SIGKILL, errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from arcscope.engine import JobConfig, JobConfigError, LocalRunner, make_batches
from arcscope.engine.job import split_hooks
from arcscope.errors import StoreError
from arcscope.models import load_model
from arcscope.store import open_store
from tests.conftest import tiny_job


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    return load_model(tiny_model_dir, device="cpu", dtype="float32")


def job(tmp_path, tiny_model_dir, **kw) -> JobConfig:
    return tiny_job(tmp_path / "store", tiny_model_dir, **kw)


def test_split_hooks_keeps_braces():
    assert split_hooks("blocks.{0,3}.attn_out,model.layers.1.mlp") == [
        "blocks.{0,3}.attn_out",
        "model.layers.1.mlp",
    ]


def test_job_config_rejects_bad_settings(tmp_path):
    with pytest.raises(JobConfigError, match="position 'cell'"):
        JobConfig(positions=["cell"]).validate()
    with pytest.raises(JobConfigError, match="needs --mode generate"):
        JobConfig(positions=["generated"], mode="prefill").validate()
    with pytest.raises(JobConfigError, match="job: unknown setting .layers."):
        JobConfig.from_dict({"tasks": "arc1:evaluation", "layers": 3})
    p = tmp_path / "job.yaml"
    p.write_text("tasks: arc1:training\nmode: prefill\nhooks: blocks.0.hook_resid_post\n")
    cfg = JobConfig.from_yaml(p)
    assert cfg.tasks == "arc1:training" and cfg.hooks == ["blocks.0.hook_resid_post"]


def test_prefill_job_stores_cells_with_exact_index(tmp_path, tiny_model_dir, tiny):
    cfg = job(tmp_path, tiny_model_dir)
    res = LocalRunner(cfg, loaded=tiny).run()
    store = open_store(cfg.out)
    assert store.complete and set(store.hooks) == {"blocks.0.hook_resid_post", "blocks.1.hook_resid_post"}
    idx = store.index()
    assert store.n_rows == idx.num_rows == res.rows > 0
    # positions=cells: every stored row is a grid cell, and its token is that cell's digit
    rows, cols = np.asarray(idx["row"]), np.asarray(idx["col"])
    assert (rows >= 0).all() and (cols >= 0).all()
    digits = [tiny.tokenizer.convert_ids_to_tokens(int(t)) for t in np.asarray(idx["token_id"])]
    assert all(d.strip("Ġ").isdigit() for d in digits)
    # the captured value equals a direct forward pass for one item
    item = res.plan.items[0]
    ids = torch.as_tensor(np.asarray(item.cell_map.input_ids, dtype=np.int64))[None]
    with torch.no_grad():
        hs = tiny.model(ids, output_hidden_states=True).hidden_states
    acts, sub = store.query("blocks.0.hook_resid_post", sample=item.sample)
    pos = np.asarray(sub["position"])
    assert torch.allclose(acts, hs[1][0, pos], atol=1e-5)
    # predictions are teacher-forced in prefill mode and cover every item
    assert len(res.predictions) == len(res.plan.items)
    assert all("token_accuracy" in p for p in res.predictions.values())


def test_positions_last_and_test_input(tmp_path, tiny_model_dir, tiny):
    cfg = job(tmp_path, tiny_model_dir, positions=["last", "test-input"], max_tasks=2)
    LocalRunner(cfg, loaded=tiny).run()
    idx = open_store(cfg.out).index()
    roles = set(idx["role"].to_pylist())
    assert roles <= {"test_input", "none"} and "test_input" in roles
    n_items = len(set(idx["sample"].to_pylist()))
    assert idx.filter(__import__("pyarrow").compute.equal(idx["role"], "none")).num_rows == n_items


def test_generate_job_with_augmentations_votes(tmp_path, tiny_model_dir, tiny):
    cfg = job(
        tmp_path,
        tiny_model_dir,
        mode="generate",
        positions=["test-input", "generated"],
        augmentations=2,
        max_tasks=2,
        max_new_tokens=12,
    )
    res = LocalRunner(cfg, loaded=tiny).run()
    idx = open_store(cfg.out).index()
    assert "generated" in set(idx["role"].to_pylist())
    assert {p["augmentation"] for p in res.predictions.values()} >= {"id"}
    assert len({p["augmentation"] for p in res.predictions.values()}) == 2
    assert all(p["n_generated"] <= 12 for p in res.predictions.values())


def test_rerun_of_finished_job_does_nothing(tmp_path, tiny_model_dir, tiny):
    cfg = job(tmp_path, tiny_model_dir, max_tasks=1)
    LocalRunner(cfg, loaded=tiny).run()
    again = LocalRunner(cfg, loaded=tiny).run()
    assert again.already_complete and again.rows == 0
    other = job(tmp_path, tiny_model_dir, max_tasks=2)
    with pytest.raises(StoreError, match="different job"):
        LocalRunner(other, loaded=tiny).run()


def test_long_prompts_skip_or_fail(tmp_path, tiny_model_dir, tiny):
    # source order: the first tasks that do not fit are reported, later ones are not needed
    cfg = job(tmp_path, tiny_model_dir, max_prompt_tokens=450, max_tasks=2, order="source")
    res = LocalRunner(cfg, loaded=tiny).run()
    assert res.skipped and all("the context holds 450" in why for _, why in res.skipped)
    assert len({it.task.id for it in res.plan.items}) == 2
    cfg = job(tmp_path, tiny_model_dir, max_prompt_tokens=450, on_long="fail", out=str(tmp_path / "b"))
    with pytest.raises(JobConfigError, match="the context holds 450"):
        LocalRunner(cfg, loaded=tiny).run()


def test_batches_are_bounded_and_sorted(tmp_path, tiny_model_dir, tiny):
    cfg = job(tmp_path, tiny_model_dir, max_tasks=8)
    plan = LocalRunner(cfg, loaded=tiny)._load()[2]
    batches = make_batches(plan.items, batch_tokens=3000, max_batch=4)
    assert sum(len(b.items) for b in batches) == len(plan.items)
    for b in batches:
        assert len(b.items) <= 4 and (b.padded_tokens <= 3000 or len(b.items) == 1)
    assert 0 <= plan.padding_fraction < 0.5


def _cli(args: list[str], env: dict) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "arcscope", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _store_dump(url: str):
    s = open_store(url)
    idx = s.index()
    acts = {h: s.read(h) for h in s.hooks}
    preds = [json.loads(line) for line in Path(url, "predictions.jsonl").read_text().splitlines()]
    cols = [c for c in idx.column_names if c not in ("shard", "row_in_shard")]
    return acts, idx.select(cols), preds


def test_sigkill_then_resume_gives_identical_store(tmp_path, tiny_model_dir):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    common = [
        "run",
        "--tasks",
        "arc1:evaluation",
        "--model",
        str(tiny_model_dir),
        "--mode",
        "prefill",
        "--hooks",
        "blocks.{0,1}.hook_resid_post",
        "--positions",
        "all",
        "--max-tasks",
        "6",
        "--max-batch",
        "1",
        "--shard-rows",
        "700",
        "--quiet",
    ]
    ref = tmp_path / "ref"
    p = _cli([*common, "--out", str(ref)], env)
    out, _ = p.communicate(timeout=300)
    assert p.returncode == 0, out
    killed = tmp_path / "killed"
    p = _cli([*common, "--out", str(killed)], env)
    manifest = killed / "manifest.json"
    deadline = time.time() + 240
    while time.time() < deadline:  # kill once some (not all) work is committed
        if manifest.exists():
            done = json.loads(manifest.read_text()).get("progress", {}).get("done_batches", [])
            if len(done) >= 2:
                break
        time.sleep(0.05)
    p.send_signal(signal.SIGKILL)
    p.wait()
    state = json.loads(manifest.read_text())
    assert not state.get("complete"), "the job finished before it could be killed"
    p = _cli([*common, "--out", str(killed)], env)
    out, _ = p.communicate(timeout=300)
    assert p.returncode == 0 and "resumed" in out, out
    a_acts, a_idx, a_preds = _store_dump(str(ref))
    b_acts, b_idx, b_preds = _store_dump(str(killed))
    assert a_idx.equals(b_idx)
    for h in a_acts:
        assert torch.equal(a_acts[h], b_acts[h])
    assert a_preds == b_preds
    p = _cli([*common, "--out", str(killed)], env)
    out, _ = p.communicate(timeout=300)
    assert p.returncode == 0 and "nothing to do" in out


def test_run_cli_errors_are_one_line(tmp_path):
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "arcscope",
            "run",
            "--model",
            str(tmp_path / "missing"),
            "--out",
            str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 2 and "model not found" in p.stderr and "Traceback" not in p.stderr
    p = subprocess.run(
        [sys.executable, "-m", "arcscope", "run", "--positions", "bogus"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 2 and "position 'bogus'" in p.stderr


def test_run_pipeline_to_s3(s3_endpoint, tiny_model_dir, tiny):
    import uuid

    from arcscope.pipeline.run import run
    from tests.conftest import BUCKET, s3_options

    opts = s3_options(s3_endpoint)
    url = f"s3://{BUCKET}/{uuid.uuid4().hex}/run"
    cfg = JobConfig(
        tasks="arc1:evaluation",
        model=str(tiny_model_dir),
        hooks=["blocks.1.hook_resid_post"],
        mode="prefill",
        max_tasks=2,
        out=url,
    ).validate()
    summary = run(cfg, storage_options=opts)
    assert summary.job.rows > 0 and summary.score is not None
    store = open_store(url, storage_options=opts)
    assert store.complete and store.n_rows == summary.job.rows
    import fsspec

    fs = fsspec.filesystem("s3", **opts, skip_instance_cache=True)
    page = fs.cat(summary.files["report"].removeprefix("s3://")).decode()
    assert "official ARC score" in page and "blocks.1.hook_resid_post" in page
    again = run(cfg, storage_options=opts, report=False)
    assert again.job.already_complete and len(again.job.predictions) == len(summary.job.predictions)


def test_run_cli_overwrite_replaces_store(tmp_path, tiny_model_dir):
    args = [
        sys.executable,
        "-m",
        "arcscope",
        "run",
        "--model",
        str(tiny_model_dir),
        "--mode",
        "prefill",
        "--hooks",
        "blocks.0.hook_resid_post",
        "--max-tasks",
        "1",
        "--out",
        str(tmp_path / "o"),
        "--quiet",
    ]
    first = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    again = subprocess.run([*args, "--overwrite"], capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "resumed" not in again.stdout, again.stderr
    assert open_store(str(tmp_path / "o")).complete


def test_topk_logits_are_stored_per_row(tmp_path, tiny_model_dir, tiny):
    cfg = job(tmp_path, tiny_model_dir, max_tasks=1, topk_logits=3, positions=["last"])
    res = LocalRunner(cfg, loaded=tiny).run()
    idx = open_store(cfg.out).index()
    assert idx.num_rows == len(res.plan.items)
    item = res.plan.items[0]
    ids = torch.as_tensor(np.asarray(item.cell_map.input_ids, dtype=np.int64))[None]
    with torch.no_grad():
        logits = tiny.model(ids).logits[0, item.n_prompt - 1]
    top = torch.topk(logits, 3)
    assert idx["topk_indices"].to_pylist()[0] == top.indices.tolist()
    assert np.allclose(idx["topk_values"].to_pylist()[0], top.values.numpy(), atol=1e-4)


def test_overwrite_refuses_a_folder_whose_manifest_is_not_a_store(tmp_path, tiny_model_dir, tiny):
    out = tmp_path / "site"
    out.mkdir()
    theirs = json.dumps({"name": "my web app", "start_url": "/"})
    (out / "manifest.json").write_text(theirs)
    (out / "index.html").write_text("<html></html>")
    cfg = job(tmp_path, tiny_model_dir, out=str(out), max_tasks=1)
    with pytest.raises(StoreError, match="manifest.json is not an arcscope store manifest.*another folder"):
        LocalRunner(cfg, loaded=tiny, overwrite=True).run()
    assert (out / "manifest.json").read_text() == theirs
    assert sorted(p.name for p in out.iterdir()) == ["index.html", "manifest.json"]
    # The folder is refused before the model loads (a missing model would be the other error).
    missing = job(tmp_path, tiny_model_dir, out=str(out), model=str(tmp_path / "no-model"))
    with pytest.raises(StoreError, match="not an arcscope store manifest"):
        LocalRunner(missing, overwrite=True).run()
