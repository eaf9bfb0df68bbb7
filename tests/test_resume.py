"""Trainers resume exactly: `sae train` and `reasoning train` killed with SIGKILL at chosen moments, then resumed.

Each trainer runs as a real subprocess (the CLI) that stops at a named moment and is killed there by pid;
the next subprocess resumes it and is killed at the next moment, and a last resume finishes the run. The
folder it ends with must equal an uninterrupted run's: weights and checkpoint bytes, the EMA and optimiser
state, ``metrics.jsonl`` line for line (but for wall-clock fields) and the evaluations.

The moments are hit deterministically without any hook in the library: the child wraps one of the
trainer's own functions (the progress event after a metrics line, the checkpoint's ``save_file``, the
evaluation) so that its N-th call prints ``STOPPED`` and waits to be killed.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from arcscope.files import TMP_MARK
from arcscope.puzzles import build_sudoku
from arcscope.store import StoreWriter
from tests.kill import cli, killed_at

SAE = "arcscope.sae.train"
REASONING = "arcscope.reasoning.train"


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # the children use one thread too: the same float sums in the same order
    yield
    torch.set_num_threads(n)


def _lines(path: Path, timing: tuple[str, ...]) -> list[dict]:
    recs = [json.loads(ln) for ln in path.read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in timing} for r in recs]


def _files(root: Path) -> list[str]:
    names = sorted(str(p.relative_to(root)) for p in root.rglob("*"))
    assert not [n for n in names if TMP_MARK in n], names  # nothing a killed writer left behind
    return names


# ---- sae train ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("resume") / "store"
    g = torch.Generator().manual_seed(0)
    n, d = 40 * 128, 16
    x = torch.randn(n, 32, generator=g).clamp(min=0) @ torch.randn(32, d, generator=g) + 0.2
    z = np.zeros(n, dtype=np.int64)
    index = {"task_id": ["t"] * n, "augmentation": ["id"] * n, "pair": z, "role": ["train_input"] * n}
    index |= {"row": z, "col": z, "token_id": z, "position": z, "sample": z}
    with StoreWriter(path, shard_rows=1024) as w:
        w.add({"h": x}, index)
    return path


def _sae_args(store: Path, out: Path) -> list[str]:
    # 40 steps; a line every 10, a checkpoint every 15 (not a multiple: the sums since step 10 must survive)
    args = ["sae", "train", "--store", str(store), "--hook", "h", "-o", str(out), "-q"]
    args += ["--arch", "topk", "--k", "3", "--latents", "64", "--batch-size", "128", "--epochs", "1"]
    args += ["--device", "cpu"]  # bitwise equality needs deterministic kernels
    args += ["lr_warmup=5", "init_rows=256", "shuffle_buffer=1024", "log_every=10", "checkpoint_every=15"]
    return args + ["dead_tokens=640", "aux_coefficient=0.1", "prefetch=1"]


def test_sae_train_killed_at_each_moment_resumes_to_the_same_folder(store, tmp_path):
    ref, out = tmp_path / "ref", tmp_path / "killed"
    assert cli(_sae_args(store, ref)) == 0
    # after the first metrics line (step 10), before any checkpoint: the rerun starts over
    killed_at(tmp_path, SAE, "emit", 1, _sae_args(store, out))
    assert (out / "metrics.jsonl").is_file() and not (out / "checkpoints").exists()
    # while the first checkpoint (step 15) is being written: still nothing to resume from
    killed_at(tmp_path, SAE, "save_file", 1, _sae_args(store, out))
    assert [p.name for p in (out / "checkpoints").iterdir() if not p.name.startswith(".")] == []
    # mid-epoch, after the line at step 30 and before its checkpoint: resumes from step 15
    killed_at(tmp_path, SAE, "emit", 3, _sae_args(store, out))
    assert len(_lines(out / "metrics.jsonl", ())) == 3
    assert cli(_sae_args(store, out)) == 0

    assert _files(out) == _files(ref)
    for name in ("sae_weights.safetensors", "sparsity.safetensors", "cfg.json", "run.json"):
        assert (out / name).read_bytes() == (ref / name).read_bytes(), name
    timing = ("tokens_per_s",)
    assert _lines(out / "metrics.jsonl", timing) == _lines(ref / "metrics.jsonl", timing)
    summary = [json.loads((f / "training.json").read_text()) for f in (out, ref)]
    for s in summary:
        s.pop("seconds_last_session"), s.pop("tokens_per_s_last_session")
        s["metrics"].pop("tokens_per_s")
    assert summary[0] == summary[1]


# ---- reasoning train ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sudoku(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("resume") / "sudoku4"
    build_sudoku(out, n=4, train=48, test=12, seed=0)
    return out


def _reasoning_args(data: Path, out: Path, *extra: str) -> list[str]:
    # 48 one-example groups in batches of 20: 2.4 steps an epoch, so batches span epochs and the
    # evaluations (each followed by a checkpoint) fall at steps 2, 4, 6, 8, 10 and 12, mid-epoch.
    args = ["reasoning", "train", "--preset", "sudoku-tiny", "--data", str(data), "--out", str(out), "-q"]
    args += [
        *extra,
        "device=cpu",
        "arch.hidden_size=16",
        "arch.num_heads=2",
        "arch.halt_exploration_prob=0.5",
    ]
    return args + [
        "global_batch_size=20",
        "max_steps=12",
        "eval_interval=1",
        "log_every=1",
        "lr_warmup_steps=4",
    ]


def _same_run_folder(out: Path, ref: Path) -> None:
    assert _files(out) == _files(ref)
    for path in ref.rglob("*"):
        rel = path.relative_to(ref)
        if path.suffix == ".safetensors" or path.name in ("train_state.json", "run.json"):
            # weights, EMA, optimiser moments, ACT carry, RNG and data position: the same bytes
            assert (out / rel).read_bytes() == path.read_bytes(), rel
        elif path.name == "config.json":
            a, b = (json.loads(p.read_text()) for p in (out / rel, path))
            a["train"].pop("checkpoint_path"), b["train"].pop("checkpoint_path")
            assert a == b, rel
    timing = ("elapsed_s", "train/examples_per_s")
    lines, ref_lines = _lines(out / "metrics.jsonl", timing), _lines(ref / "metrics.jsonl", timing)
    assert lines == ref_lines
    assert [r["step"] for r in lines if "eval/accuracy" in r] == [2, 4, 6, 8, 10, 12]


def test_reasoning_train_killed_at_each_moment_resumes_to_the_same_folder(sudoku, tmp_path, capsys):
    ref, out = tmp_path / "ref", tmp_path / "killed"
    assert cli(_reasoning_args(sudoku, ref)) == 0
    # after the first metrics line, before the first checkpoint: --resume starts over
    killed_at(tmp_path, REASONING, "emit", 1, _reasoning_args(sudoku, out))
    assert (out / "run.json").is_file() and not list(out.glob("step_*"))
    # while the first checkpoint (step 2) is being written: it never appears
    killed_at(tmp_path, REASONING, "save_file", 1, _reasoning_args(sudoku, out, "--resume"))
    assert not list(out.glob("step_*"))
    # mid-epoch at step 7 (checkpoints at 2, 4, 6 written)
    killed_at(tmp_path, REASONING, "emit", 7, _reasoning_args(sudoku, out, "--resume"))
    assert sorted(p.name for p in out.glob("step_*")) == ["step_2", "step_4", "step_6"]
    # resumed from step 6, killed during the evaluation at step 8 (before its record and checkpoint)
    killed_at(tmp_path, REASONING, "evaluate_split", 1, _reasoning_args(sudoku, out, "--resume"))
    assert json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])["step"] == 8
    assert cli(_reasoning_args(sudoku, out, "--resume")) == 0
    _same_run_folder(out, ref)

    # A finished run is not replaced: without --resume or --overwrite the command refuses ...
    capsys.readouterr()
    assert cli(_reasoning_args(sudoku, out)) == 2
    assert "already holds a training run" in " ".join(capsys.readouterr().err.split())
    # ... --resume with other settings names the setting ...
    assert cli(_reasoning_args(sudoku, out, "--resume", "lr=0.002")) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "other settings: lr (saved 0.001, now 0.002)" in err
    # ... --resume with the same settings has nothing left to train, and --overwrite trains it again.
    assert cli(_reasoning_args(sudoku, out, "--resume")) == 0
    _same_run_folder(out, ref)
    (out / "step_4" / "model.safetensors").write_bytes(b"stale")
    assert cli(_reasoning_args(sudoku, out, "--overwrite")) == 0
    _same_run_folder(out, ref)


def test_reasoning_train_never_writes_over_another_programs_files(sudoku, tmp_path, capsys):
    out = tmp_path / "hf-model"
    out.mkdir()
    (out / "config.json").write_text('{"model_type": "llama"}')
    for flag in ([], ["--overwrite"]):
        assert cli(_reasoning_args(sudoku, out, *flag)) == 2
        assert "not written by `arcscope reasoning train`" in " ".join(capsys.readouterr().err.split())
    assert (out / "config.json").read_text() == '{"model_type": "llama"}'
    assert sorted(p.name for p in out.iterdir()) == ["config.json"]
