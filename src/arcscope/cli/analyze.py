"""`arcscope analyze` commands: lens, attention, knockout, patch, probe, steer.

Each takes a task source, a model and a task id (or a store, for probes), runs one analysis of
:mod:`arcscope.analysis` and writes a self-contained HTML report plus JSON and Parquet under ``--out``.
Options are generated from the config dataclasses in :mod:`arcscope.analysis.config`.
"""

from __future__ import annotations

from typing import Any

import typer
from rich.markup import escape

from arcscope.analysis.config import (
    AttentionConfig,
    KnockoutConfig,
    LensConfig,
    PatchConfig,
    ProbeRunConfig,
    SteerConfig,
    TunedLensRunConfig,
)
from arcscope.cli.app import app, console, progress_bar
from arcscope.cli.options import QuietOpt, config_options

analyze_app = typer.Typer(
    name="analyze",
    help="How the model solves a task, on the grid: logit lens, attention, knockout, patching, probes, steering.",
    no_args_is_help=True,
)
app.add_typer(analyze_app, name="analyze")


def _run(name: str, cfg: Any, quiet: bool) -> None:
    from arcscope.analysis import run as runs

    fn = getattr(runs, f"run_{name}")
    with progress_bar(quiet) as progress:
        result, paths = fn(cfg, progress=progress)
    summary = getattr(result, "summary", None)
    if callable(summary):
        console.print(escape(summary()))
    console.print(f"report: [bold]{escape(str(paths['report']))}[/]  (data: {escape(str(paths['json']))})")


@analyze_app.command("lens")
@config_options(LensConfig, config_file=True)
def lens_cmd(cfg: LensConfig, quiet: QuietOpt = False) -> None:
    """Logit lens: rank and probability of the correct colour at every answer cell, layer by layer."""
    _run("lens", cfg, quiet)


@analyze_app.command("attention")
@config_options(AttentionConfig, config_file=True)
def attention_cmd(cfg: AttentionConfig, quiet: QuietOpt = False) -> None:
    """Attention on grids: which input cells each head reads when it predicts an answer cell."""
    _run("attention", cfg, quiet)


@analyze_app.command("knockout")
@config_options(KnockoutConfig, config_file=True)
def knockout_cmd(cfg: KnockoutConfig, quiet: QuietOpt = False) -> None:
    """Attention knockout: cut attention from one set of positions to another and measure the answer."""
    _run("knockout", cfg, quiet)


@analyze_app.command("patch")
@config_options(PatchConfig, config_file=True)
def patch_cmd(cfg: PatchConfig, quiet: QuietOpt = False) -> None:
    """Activation and attribution patching from the clean prompt into a corrupted one, over layers x cells."""
    _run("patch", cfg, quiet)


@analyze_app.command("probe")
@config_options(ProbeRunConfig, config_file=True)
def probe_cmd(cfg: ProbeRunConfig, quiet: QuietOpt = False) -> None:
    """Linear probes per layer from a store: a cell's colour, its output colour, row, column, role..."""
    _run("probe", cfg, quiet)


@analyze_app.command("steer")
@config_options(SteerConfig, config_file=True)
def steer_cmd(cfg: SteerConfig, quiet: QuietOpt = False) -> None:
    """Steering: add a vector at a hook over a range of doses and report how the answer changes."""
    _run("steer", cfg, quiet)


@analyze_app.command("train-lens")
@config_options(TunedLensRunConfig, config_file=True)
def train_lens_cmd(cfg: TunedLensRunConfig, quiet: QuietOpt = False) -> None:
    """Fit a tuned lens (one affine map per layer) from a store; use it with `analyze lens --tuned`."""
    _run("train_lens", cfg, quiet)
