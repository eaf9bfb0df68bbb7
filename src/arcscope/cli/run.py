"""`arcscope run`: the main job (tasks -> prompts -> capture + predictions -> score -> report)."""

from __future__ import annotations

import typer

from arcscope.cli.app import app, console, err_console
from arcscope.cli.options import QuietOpt, StorageOptionsOpt, config_options
from arcscope.engine.job import JobConfig


@app.command("run")
@config_options(
    JobConfig,
    flags={"augmentations": "--augment", "out": ("--out", "-o")},
    config_file=True,
)
def run_cmd(
    cfg: JobConfig,
    storage_options: StorageOptionsOpt = None,
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing store at --out."),
    no_resume: bool = typer.Option(False, "--no-resume", help="Fail instead of resuming an existing store."),
    quiet: QuietOpt = False,
) -> None:
    """Run a model over ARC tasks, capture activations into a store, score, and write report.html."""
    from arcscope.cli.app import progress_bar
    from arcscope.pipeline.run import run

    err_console.print(f"arcscope run: {cfg.tasks} -> {cfg.out} ({cfg.mode}, hooks {', '.join(cfg.hooks)})")
    with progress_bar(quiet) as bar:
        summary = run(
            cfg,
            progress=bar,
            resume=not (no_resume or overwrite),
            overwrite=overwrite,
            storage_options=storage_options,
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
