"""`arcscope train-lm`: train the ARC organism (a small Llama) from scratch on a task source."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from arcscope.cli.app import app, console, err_console, progress_bar
from arcscope.cli.options import NoResumeOpt, QuietOpt, RunOverwriteOpt, config_options
from arcscope.models.organism import PRESETS, TrainLMConfig

# The settings with an option of their own; every other one is a KEY=VALUE argument.
_OPTIONS = ("tasks", "eval_tasks", "eval_count", "max_tasks", "steps", "batch_tokens", "lr", "seed")
_OPTIONS += ("augment", "rotate_pairs", "layers", "d_model", "heads", "d_ff", "max_len", "device", "dtype")
_OPTIONS += ("threads", "eval_every", "checkpoint_every")


@app.command("train-lm")
@config_options(TrainLMConfig, fields=_OPTIONS, config_file=True, build=False)
def train_lm_cmd(
    cfg: dict[str, Any],
    overrides: Annotated[
        list[str] | None,
        typer.Argument(help="More settings as KEY=VALUE, e.g. warmup=50 sort_window=512 template=short."),
    ] = None,
    out: Annotated[
        Path,
        typer.Option("--out", "-o", help="Output folder: the trained model (an HF folder) and checkpoints."),
    ] = Path("runs/organism"),
    preset: Annotated[
        str, typer.Option("--preset", help=f"Architecture to start from: {', '.join(PRESETS)}.")
    ] = "small",
    no_resume: NoResumeOpt = False,
    overwrite: RunOverwriteOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Train the organism on tasks (prompt: train pairs + test input; target: the test output), resumably."""
    from arcscope.models.train_lm import train_lm

    config = TrainLMConfig.from_preset(preset, **cfg).with_overrides(list(overrides or []))
    n = config.n_params(400)
    err_console.print(
        f"arcscope train-lm: {config.layers} layers x d={config.d_model} (~{n / 1e6:.1f}M parameters) "
        f"on {config.tasks} -> {out}",
        highlight=False,
    )
    with progress_bar(quiet) as bar:
        res = train_lm(config, out, resume=not no_resume, overwrite=overwrite, progress=bar)
    if res.already_complete:
        console.print(
            f"[green]nothing to do:[/] {out} already holds this trained organism; --overwrite trains again"
        )
    else:
        if res.resumed_from:
            console.print(f"resumed from step {res.resumed_from}")
        console.print(
            f"steps {res.steps}/{res.total_steps}  tokens this session {res.tokens:,}  time {res.seconds:.1f} s  "
            f"({res.tokens_per_s:,.0f} tok/s)  loss {res.metrics.get('loss', float('nan')):.4f}",
            highlight=False,
        )
    if res.skipped_long:
        console.print(f"[yellow]{res.skipped_long} training example(s) longer than max_len were left out[/]")
    ev = res.evaluation
    if ev:
        console.print(f"held-out exact answers: {ev['correct']}/{ev['n']} ({100 * ev['accuracy']:.1f}%)")
        if ev["families"]:
            t = Table(title="per family")
            t.add_column("family")
            t.add_column("exact", justify="right")
            for fam, (ok, n_fam) in ev["families"].items():
                t.add_row(escape(fam), f"{ok}/{n_fam} ({100 * ok / n_fam:.0f}%)")
            console.print(t)
    console.print(f"model: {out}" if res.complete else f"checkpoint in {out} (resume with the same command)")
