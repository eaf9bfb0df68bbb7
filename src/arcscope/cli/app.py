"""The typer application object and shared CLI helpers (output, errors, progress)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import typer
from rich.console import Console

from arcscope.progress import Progress as ProgressEvent
from arcscope.progress import ProgressFn

app = typer.Typer(
    name="arcscope",
    help="Study how neural networks solve ARC-style reasoning puzzles.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)


def _figure(value: object) -> str:
    """One extra figure as short text (thousands separators, four significant digits)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if isinstance(value, int) or abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.4g}"


@contextlib.contextmanager
def progress_bar(quiet: bool = False, *, console: Console | None = None) -> Iterator[ProgressFn]:
    """Draw ``Progress`` events with rich: one bar per label (done/total, rate, ETA, extra figures).

    Yields the callback to pass as ``progress=``; with ``quiet`` it draws nothing.
    """
    if quiet:
        yield lambda ev: None
        return
    from rich.markup import escape
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        ProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.text import Text

    class RateColumn(ProgressColumn):
        """Units per second over rich's recent samples."""

        def render(self, task) -> Text:
            """The rate as text, blank until rich has two samples."""
            speed = task.finished_speed or task.speed
            return Text("" if speed is None else f"{_figure(float(speed))}/s")

    bar = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        RateColumn(),
        TextColumn("{task.fields[figures]}", markup=False),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console or err_console,
        transient=False,
    )
    tasks: dict[str, Any] = {}

    def draw(ev: ProgressEvent) -> None:
        figures = "  ".join(f"{k} {_figure(v)}" for k, v in ev.extra.items())
        if ev.label not in tasks:
            # Start at ev.done, so work a resume already has does not count towards the rate.
            tasks[ev.label] = bar.add_task(
                escape(ev.label), total=ev.total, completed=ev.done, figures=figures
            )
        else:
            bar.update(tasks[ev.label], completed=ev.done, total=ev.total, figures=figures)

    with bar:
        yield draw
