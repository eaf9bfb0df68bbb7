"""`arcscope run`: the main job (tasks -> prompts -> capture + predictions -> score -> report)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import typer

from arcscope.cli.app import app, console, err_console
from arcscope.cli.app import storage_options as _storage_options
from arcscope.engine.job import JobConfig

_DEFAULTS = JobConfig()


def _help(name: str) -> str:
    """The one-line docstring under a JobConfig field, so the CLI and the library share one text."""
    import ast
    import inspect

    src = inspect.getsource(JobConfig)
    tree = ast.parse(src)
    body = tree.body[0].body
    for i, node in enumerate(body):
        if isinstance(node, ast.AnnAssign) and getattr(node.target, "id", None) == name and i + 1 < len(body):
            nxt = body[i + 1]
            if isinstance(nxt, ast.Expr) and isinstance(getattr(nxt, "value", None), ast.Constant):
                return f"{nxt.value.value} [default: {getattr(_DEFAULTS, name)}]"
    return ""


@app.command("run")
def run_cmd(
    tasks: str = typer.Option(None, "--tasks", help=_help("tasks")),
    model: str = typer.Option(None, "--model", help=_help("model")),
    hooks: str = typer.Option(None, "--hooks", help="Comma-separated hook sites. " + _help("hooks")),
    positions: str = typer.Option(None, "--positions", help="Comma-separated. " + _help("positions")),
    mode: str = typer.Option(None, "--mode", help=_help("mode")),
    max_tasks: int = typer.Option(None, "--max-tasks", help=_help("max_tasks") + " (0: all)"),
    out: str = typer.Option(None, "--out", "-o", help=_help("out")),
    encoder: str = typer.Option(None, "--encoder", help=_help("encoder")),
    template: str = typer.Option(None, "--template", help=_help("template")),
    augmentations: int = typer.Option(None, "--augment", help=_help("augmentations")),
    seed: int = typer.Option(None, "--seed", help=_help("seed")),
    device: str = typer.Option(None, "--device", help=_help("device")),
    dtype: str = typer.Option(None, "--dtype", help=_help("dtype")),
    batch_tokens: int = typer.Option(None, "--batch-tokens", help=_help("batch_tokens")),
    max_batch: int = typer.Option(None, "--max-batch", help=_help("max_batch")),
    max_new_tokens: int = typer.Option(None, "--max-new-tokens", help=_help("max_new_tokens")),
    topk_logits: int = typer.Option(None, "--topk-logits", help=_help("topk_logits")),
    on_long: str = typer.Option(None, "--on-long", help=_help("on_long")),
    shard_rows: int = typer.Option(None, "--shard-rows", help=_help("shard_rows")),
    config: Path = typer.Option(None, "--config", help="YAML job file; command-line options override it."),
    storage_options: str = typer.Option(
        None, "--storage-options", help="JSON fsspec options for --out (e.g. an S3 endpoint_url)."
    ),
    runner: str = typer.Option(
        "local", "--runner", help="local (this process) or ray (model replicas on Ray)."
    ),
    workers: int = typer.Option(2, "--workers", help="Model replicas with --runner ray."),
    ray_address: str = typer.Option(
        None, "--ray-address", help="Ray cluster address (default: $RAY_ADDRESS or local)."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing store at --out."),
    no_resume: bool = typer.Option(False, "--no-resume", help="Fail instead of resuming an existing store."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Run a model over ARC tasks, capture activations into a store, score, and write report.html."""
    from arcscope.pipeline.run import run

    base = JobConfig.from_yaml(config) if config else JobConfig()
    given = {
        "tasks": tasks,
        "model": model,
        "hooks": hooks,
        "positions": positions,
        "mode": mode,
        "out": out,
        "encoder": encoder,
        "template": template,
        "augmentations": augmentations,
        "seed": seed,
        "device": device,
        "dtype": dtype,
        "batch_tokens": batch_tokens,
        "max_batch": max_batch,
        "max_new_tokens": max_new_tokens,
        "topk_logits": topk_logits,
        "on_long": on_long,
        "shard_rows": shard_rows,
    }
    updates = {k: v for k, v in given.items() if v is not None}
    if max_tasks is not None:
        updates["max_tasks"] = None if max_tasks == 0 else max_tasks
    cfg = dataclasses.replace(base, **updates).validate()

    from arcscope.cli.app import progress as make_progress

    bar = make_progress(quiet)
    state = {"task": None}

    def on_progress(ev) -> None:
        if state["task"] is None:
            state["task"] = bar.add_task("batches", total=ev.batches_total, rate="")
        rate = ev.tokens / ev.seconds if ev.seconds else 0.0
        bar.update(
            state["task"],
            completed=ev.batches_done,
            rate=f"{ev.tasks_done}/{ev.tasks_total} tasks  {rate:,.0f} tok/s",
        )

    err_console.print(f"arcscope run: {cfg.tasks} -> {cfg.out} ({cfg.mode}, hooks {', '.join(cfg.hooks)})")
    with bar:
        summary = run(
            cfg,
            on_progress=on_progress,
            resume=not (no_resume or overwrite),
            overwrite=overwrite,
            storage_options=_storage_options(storage_options),
            runner=runner,
            workers=workers,
            ray_address=ray_address,
        )
    job = summary.job
    if job.already_complete:
        console.print(
            f"[green]nothing to do:[/] {cfg.out} already holds this finished job "
            f"({job.resumed_batches} batches); use --overwrite to redo it"
        )
    elif job.resumed_batches:
        console.print(f"resumed: {job.resumed_batches} batches were already done")
    console.print(
        f"items {len(job.plan.items)}  batches {len(job.plan.batches)}  padding {job.plan.padding_fraction:.1%}  "
        f"tokens {job.tokens:,}  rows {job.rows:,}  written {job.bytes_written / 1e6:.1f} MB  "
        f"time {job.seconds:.1f} s  ({job.tokens_per_s:,.0f} tok/s)"
    )
    if job.skipped:
        console.print(f"[yellow]skipped {len(job.skipped)} prompt(s):[/]")
        for where, why in job.skipped[:10]:
            console.print(f"  {where}: {why}", highlight=False)
    if summary.score is not None:
        s = summary.score
        label = " (teacher-forced argmax, not generation)" if cfg.mode == "prefill" else ""
        console.print(
            f"score{label}: {s.score:.3f} (official ARC metric, {s.max_attempts} attempts)  "
            f"tasks solved {s.n_solved}/{s.n_tasks}  test outputs {s.n_correct}/{s.n_outputs}"
        )
    for name, path in summary.files.items():
        console.print(f"  {name}: {path}", highlight=False)
