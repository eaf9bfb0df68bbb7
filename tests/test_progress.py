"""One progress event type: the event, emit/relabel/Ticker, the CLI adapter, and each family that emits it."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch

from arcscope.progress import Progress, ProgressFn, Ticker, emit, relabel


class Recorder:
    """A ProgressFn that keeps every event."""

    def __init__(self) -> None:
        self.events: list[Progress] = []

    def __call__(self, ev: Progress) -> None:
        self.events.append(ev)

    def of(self, label: str) -> list[Progress]:
        """The events of one label, in order."""
        return [e for e in self.events if e.label == label]

    def labels(self) -> list[str]:
        """Labels in order of first appearance."""
        return list(dict.fromkeys(e.label for e in self.events))


def check_counter(events: list[Progress], total: int | None, last: int | None = None) -> None:
    """Events of one label: at least one, done never decreases, one total, and it ends at ``last``."""
    assert events, "no events"
    done = [e.done for e in events]
    assert done == sorted(done), done
    assert {e.total for e in events} == {total}
    assert done[-1] == (total if last is None else last)


# ------------------------------------------------------------------------------------------- the event


def test_event_is_frozen_and_emit_is_a_noop_without_callback():
    ev = Progress("batches", 3, 10, {"loss": 0.5})
    assert (ev.label, ev.done, ev.total, ev.extra) == ("batches", 3, 10, {"loss": 0.5})
    with pytest.raises(AttributeError):
        ev.done = 4  # type: ignore[misc]
    assert Progress("x", 1).total is None and Progress("x", 1).extra == {}
    emit(None, "x", 1, 2, loss=1.0)  # nothing to call, nothing raised
    rec = Recorder()
    emit(rec, "x", np.int64(2), 5, **{"tok/s": 12.5})
    assert rec.events == [Progress("x", 2, 5, {"tok/s": 12.5})] and type(rec.events[0].done) is int


def test_relabel_and_ticker():
    assert relabel(None, "y") is None
    rec = Recorder()
    fn: ProgressFn = relabel(rec, "train puzzles")  # type: ignore[assignment]
    emit(fn, "puzzles", 1, 3)
    assert rec.events == [Progress("train puzzles", 1, 3)]
    rec = Recorder()
    t = Ticker(rec, "records", every=10)
    for _ in range(25):
        t.tick()
    assert [e.done for e in rec.events] == [10, 20]
    t.tick(7)  # 25 -> 32 crosses 30
    assert t.done(kept=3) >= 0.0
    assert [e.done for e in rec.events] == [10, 20, 32, 32] and rec.events[-1].extra == {"kept": 3}
    quiet = Ticker(None, "records", every=1)
    quiet.tick(5)
    assert quiet.n == 5 and quiet.done() >= 0.0


# ------------------------------------------------------------------------------------------- the CLI adapter


def _console():
    from rich.console import Console

    buf = io.StringIO()
    return Console(file=buf, width=160, force_terminal=False, color_system=None), buf


def test_progress_bar_draws_every_label_with_figures():
    from arcscope.cli.app import progress_bar

    con, buf = _console()
    with progress_bar(console=con) as bar:
        emit(bar, "batches", 0, 4)
        for i in range(1, 5):
            emit(bar, "batches", i, 4, tasks=f"{i}/4", **{"tok/s": 1234.5})
        emit(bar, "pages", 2, None)
    out = buf.getvalue()
    assert "batches" in out and "4/4" in out and "tasks 4/4" in out and "tok/s 1,234" in out
    assert "pages" in out


def test_progress_bar_quiet_draws_nothing():
    from arcscope.cli.app import progress_bar

    con, buf = _console()
    with progress_bar(True, console=con) as bar:
        emit(bar, "batches", 1, 2, loss=0.1)
    assert buf.getvalue() == ""


# ------------------------------------------------------------------------------------------- families


def test_datasets_steps_and_pipeline_emit(tmp_path):
    from arcscope.datasets import filter_records, run_pipeline

    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"id": i, "reward": i % 3}) + "\n" for i in range(1200)))
    rec = Recorder()
    rep = filter_records(src, tmp_path / "o.jsonl", where="reward > 0", progress=rec)
    assert rec.labels() == ["filter"]
    check_counter(rec.of("filter"), None, last=rep.records_in)
    assert len(rec.events) >= 2  # throttled, yet more than the final event
    pipe = tmp_path / "pipe.yaml"
    pipe.write_text(
        f"input: {src}\nworkdir: work\nsteps:\n  - filter: {{where: 'reward > 0'}}\n"
        "  - filter: {where: 'reward > 1'}\n"
    )
    rec = Recorder()
    run_pipeline(pipe, progress=rec)
    assert rec.labels() == ["step 1 filter", "step 2 filter"]
    check_counter(rec.of("step 1 filter"), None, last=1200)
    check_counter(rec.of("step 2 filter"), None, last=800)


def test_puzzle_builders_emit(tmp_path):
    from arcscope.puzzles import build_arc, build_maze, build_sudoku

    rec = Recorder()
    build_sudoku(tmp_path / "sud", n=4, train=5, test=3, seed=0, progress=rec)
    assert rec.labels() == ["train puzzles", "test puzzles"]
    check_counter(rec.of("train puzzles"), 5)
    check_counter(rec.of("test puzzles"), 3)
    rec = Recorder()
    build_maze(tmp_path / "maze", size=6, train=3, test=2, min_path=4, seed=0, progress=rec)
    assert rec.labels() == ["train mazes", "test mazes"]
    check_counter(rec.of("train mazes"), 3)
    rec = Recorder()
    build_arc(tmp_path / "arc", ["arc1:training"], ["arc1:evaluation"], num_aug=0, limit=1, progress=rec)
    assert rec.labels() == ["tasks"]
    check_counter(rec.of("tasks"), 2)


def test_engine_emits_batches(tmp_path, tiny_model_dir):
    from arcscope.engine import JobConfig, LocalRunner

    cfg = JobConfig(
        tasks="arc1:evaluation",
        model=str(tiny_model_dir),
        hooks=["blocks.0.hook_resid_post"],
        positions=["last"],
        mode="prefill",
        max_tasks=2,
        out=str(tmp_path / "store"),
        max_batch=1,
    ).validate()
    rec = Recorder()
    res = LocalRunner(cfg, progress=rec).run()
    n = len(res.plan.batches)
    assert rec.labels() == ["batches"] and n >= 2
    check_counter(rec.of("batches"), n)
    assert rec.events[0].done == 0 and rec.events[-1].extra["tasks"] == "2/2"
    assert rec.events[-1].extra["tok/s"] > 0


def test_rnn_train_ablate_regions_emit():
    from arcscope import rnn

    cfg = rnn.TrainConfig(
        "second-argmax", 2, 2, steps=130, batch_size=32, seeds=2, test_samples=256, val_samples=256
    )
    rec = Recorder()
    rnn.train(cfg, progress=rec)
    assert rec.labels() == ["train second-argmax-h2-t2"]
    events = rec.events
    check_counter(events, 260)
    assert [e.extra["seed"] for e in events] == [0, 0, 0, 1, 1, 1] and "loss" in events[0].extra
    m = rnn.ReluRNN.from_weights([1, -1], [[-1, 1], [1, -1]], np.eye(2), seq_len=2, task="second-argmax")
    rec = Recorder()
    rnn.ablate(m, n=200, progress=rec)
    check_counter(rec.of("ablate"), 3)  # two singles and one pair
    rec = Recorder()
    rnn.enumerate_regions(m, progress=rec)
    check_counter(rec.of("regions"), None, last=4)
    assert rec.events[-1].extra["nodes"] > 0


def _tiny_store(path, n: int = 600, d: int = 8):
    from arcscope.store import StoreWriter

    z = np.zeros(n, dtype=np.int64)
    index = {
        "task_id": ["t"] * n,
        "augmentation": ["id"] * n,
        "pair": z,
        "role": ["train_input"] * n,
        "row": z - 1,
        "col": z - 1,
        "token_id": z,
        "position": np.arange(n),
        "sample": z,
    }
    g = torch.Generator().manual_seed(0)
    with StoreWriter(path, shard_rows=256) as w:
        w.add({"h": torch.randn(n, d, generator=g)}, index)
    return path


def test_sae_train_and_stats_emit(tmp_path):
    from arcscope.sae import SAEConfig, SparseAutoencoder, TrainConfig, train_sae
    from arcscope.sae.features import latent_stats
    from arcscope.store import open_store

    store = _tiny_store(tmp_path / "store")
    cfg = TrainConfig(
        arch="topk", latents=16, k=2, batch_size=100, epochs=1, init_rows=200, log_every=2, checkpoint_every=0
    )
    rec = Recorder()
    res = train_sae(cfg, tmp_path / "sae", store=str(store), hook="h", progress=rec)
    assert rec.labels() == ["training"]
    check_counter(rec.events, res.steps)
    assert {"tok/s", "loss", "fvu", "L0", "dead %"} <= set(rec.events[-1].extra)
    sae = SparseAutoencoder(SAEConfig(d_in=8, d_sae=16, arch="topk", k=2))
    rec = Recorder()
    latent_stats(sae, open_store(store), "h", batch_size=256, progress=rec)
    check_counter(rec.of("activations"), 600)


def test_store_verify_and_dsl_runner_emit(tmp_path):
    import arcscope.dsl.corpus as corpus
    from arcscope.dsl.runner import run_programs
    from arcscope.store import verify
    from arcscope.tasks import TaskSet, load

    store = _tiny_store(tmp_path / "store")
    rec = Recorder()
    assert verify(store, progress=rec).ok
    check_counter(rec.of("verify"), 6)  # three shards, each with its index file
    seen: list = []
    rec = Recorder()
    solved = ["0520fde7", "1b2d62fb", "1cf80156"]  # three of the corpus's programs
    tasks = TaskSet([load("arc1:training")[t] for t in solved])
    report = run_programs(corpus.__file__, tasks, engine="sequential", on_result=seen.append, progress=rec)
    assert len(seen) == len(report.results) == 3
    check_counter(rec.of("programs"), 3)


def test_reasoning_train_and_capture_emit(tmp_path):
    from arcscope.puzzles import build_sudoku, open_dataset
    from arcscope.reasoning.capture import capture_to_store
    from arcscope.reasoning.config import TrainConfig, apply_overrides
    from arcscope.reasoning.train import train

    data = tmp_path / "sud"
    build_sudoku(data, n=4, train=16, test=6, seed=0)
    arch = "hidden_size=32 num_heads=2 expansion=2 L_layers=1 H_cycles=2 L_cycles=2 halt_max_steps=2"
    cfg = apply_overrides(
        TrainConfig(),
        [f"arch.{kv}" for kv in f"name=trm {arch} puzzle_emb_ndim=8 puzzle_emb_len=1".split()]
        + ["arch.forward_dtype=float32", "arch.pos_encodings=learned", f"data_path={data}"]
        + [f"checkpoint_path={tmp_path / 'run'}", "global_batch_size=8", "log_every=1", "max_steps=3"]
        + ["eval_interval=null", "tensorboard=false"],
    )
    rec = Recorder()
    res = train(cfg, progress=rec)
    assert rec.labels() == ["train"]
    check_counter(rec.events, 3)
    assert {"loss", "acc", "ex/s"} <= set(rec.events[-1].extra)
    rec = Recorder()
    capture_to_store(
        res.model.eval(), open_dataset(data), tmp_path / "cap", hooks=["z_H.0"], batch_size=4, progress=rec
    )
    check_counter(rec.of("examples"), 6)
