"""The ``arcscope`` command line: parse, call the library, print."""

from __future__ import annotations

import importlib
import sys

from rich.markup import escape

from arcscope.cli.app import app, err_console
from arcscope.errors import ArcscopeError

# Importing a command module registers its commands on ``app``; the order is the order of `arcscope --help`.
COMMAND_MODULES = (
    "run",
    "tasks",
    "view",
    "score",
    "store",
    "data",
    "dsl",
    "rnn",
    "puzzles",
    "sae",
    "analyze",
    "generate",
    "train_lm",
)
for _name in COMMAND_MODULES:
    importlib.import_module(f"arcscope.cli.{_name}")


def main(argv: list[str] | None = None) -> None:
    """Entry point: user errors print one clear message and exit 2, no traceback."""
    try:
        app(args=argv, standalone_mode=True)
    except ArcscopeError as e:
        err_console.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False)
        sys.exit(2)
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted[/]")
        sys.exit(130)


__all__ = ["app", "main"]
