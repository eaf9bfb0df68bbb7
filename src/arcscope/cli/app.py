"""The typer application object and shared CLI helpers (output, errors, progress)."""

from __future__ import annotations

import typer
from rich.console import Console

app = typer.Typer(
    name="arcscope",
    help="Study how neural networks solve ARC-style reasoning puzzles.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)


def storage_options(text: str | None) -> dict | None:
    """The ``--storage-options`` JSON object (fsspec options), or None when not given."""
    import json

    from arcscope.errors import ArcscopeError

    if not text:
        return None
    try:
        opts = json.loads(text)
    except ValueError as e:
        raise ArcscopeError(f"--storage-options is not valid JSON: {e}") from None
    if not isinstance(opts, dict):
        raise ArcscopeError("--storage-options must be a JSON object")
    return opts


def progress(quiet: bool = False):
    """A rich progress bar with rate and ETA, disabled by ``quiet``."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err_console,
        disable=quiet,
        transient=False,
    )
