"""`arcscope tasks` commands: list, info, validate, convert and show task sources."""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from arcscope.cli.app import app, console, err_console, progress_bar
from arcscope.cli.options import OnError, OnErrorOpt, QuietOpt
from arcscope.errors import SourceError
from arcscope.progress import Ticker, emit
from arcscope.tasks.core import Task
from arcscope.tasks.sources import SOURCE_HELP, count_hint, iter_tasks

tasks_app = typer.Typer(
    help="Load, inspect, validate, convert and draw ARC task sources.\n\n" + SOURCE_HELP,
    no_args_is_help=True,
)
app.add_typer(tasks_app, name="tasks")

DEFAULT_SOURCE = "arc1:evaluation"


TasksOpt = Annotated[
    str, typer.Option("--tasks", "-t", help="Task source spec (see `arcscope tasks --help`).")
]
LimitOpt = Annotated[int | None, typer.Option("--limit", "-n", help="Read at most this many tasks.", min=1)]


def _sizes(grids) -> str:
    seen: list[str] = []
    for g in grids:
        s = "?" if g is None else f"{g.shape[0]}x{g.shape[1]}"
        if s not in seen:
            seen.append(s)
    return ",".join(seen[:4]) + (",…" if len(seen) > 4 else "")


def _report_skipped(skipped: list[tuple[str, str]]) -> None:
    if not skipped:
        return
    err_console.print(f"[yellow]skipped {len(skipped)} invalid item(s):[/]")
    for where, reason in skipped:
        # soft_wrap: a long path must stay on one line to be copied or grepped.
        err_console.print(f"  {escape(where)}: {escape(reason)}", highlight=False, soft_wrap=True)


def _counted(tasks: Iterator[Task], spec: str, label: str, quiet: bool, counter: list[int]) -> Iterator[Task]:
    """Pass tasks through while a progress bar shows the count and rate."""
    with progress_bar(quiet) as bar:
        ticker = Ticker(bar, label, total=count_hint(spec), every=25)
        emit(bar, label, 0, ticker.total)  # the bar shows before the first task arrives
        for t in tasks:
            counter[0] += 1
            ticker.tick()
            yield t
        ticker.total = counter[0]
        ticker.done()


@tasks_app.command("list")
def list_tasks(
    tasks: TasksOpt = DEFAULT_SOURCE,
    plain: Annotated[bool, typer.Option("--plain", help="Tab-separated text instead of a table.")] = False,
    limit: LimitOpt = None,
    on_error: OnErrorOpt = OnError.raise_,
) -> None:
    """List task ids with their pair counts and grid sizes."""
    skipped: list[tuple[str, str]] = []
    rows = [
        (
            t.id,
            str(len(t.train)),
            str(len(t.test)),
            _sizes(p.input for p in t.pairs),
            _sizes(p.output for p in t.pairs),
        )
        for t in iter_tasks(tasks, on_error.value, skipped, limit=limit)
    ]
    header = ("id", "train", "test", "input sizes", "output sizes")
    if plain:
        # Plain text for pipes: rich would expand the tabs.
        typer.echo("\t".join(header))
        for r in rows:
            typer.echo("\t".join(r))
    else:
        table = Table(title=f"{tasks} ({len(rows)} tasks)")
        for h in header:
            table.add_column(h, justify="right" if h in ("train", "test") else "left")
        for r in rows:
            table.add_row(*(escape(x) for x in r))
        console.print(table)
    _report_skipped(skipped)


@tasks_app.command("info")
def info(
    tasks: TasksOpt = DEFAULT_SOURCE,
    on_error: OnErrorOpt = OnError.raise_,
    limit: LimitOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Summarise a source: tasks, pairs, grid sizes, colours, unknown outputs, duplicate content."""
    from arcscope.report.terminal import render_summary, summarize

    skipped: list[tuple[str, str]] = []
    # Streamed: the summary keeps counts and hashes, never the tasks, so any size of source fits.
    stream = _counted(iter_tasks(tasks, on_error.value, skipped, limit=limit), tasks, "reading", quiet, [0])
    summary = summarize(stream)
    console.print(render_summary(summary, name=tasks, skipped=len(skipped)))
    _report_skipped(skipped)


@tasks_app.command("validate")
def validate(
    tasks: TasksOpt = DEFAULT_SOURCE,
    on_error: OnErrorOpt = OnError.raise_,
    quiet: QuietOpt = False,
    limit: LimitOpt = None,
) -> None:
    """Check every task of a source; with --on-error skip, list what is invalid and exit 1 if anything is."""
    skipped: list[tuple[str, str]] = []
    count = [0]
    pairs = 0
    for t in _counted(
        iter_tasks(tasks, on_error.value, skipped, limit=limit), tasks, "validating", quiet, count
    ):
        pairs += len(t.train) + len(t.test)
    _report_skipped(skipped)
    status = "[green]ok[/]" if not skipped else f"[red]{len(skipped)} invalid[/]"
    console.print(
        f"{escape(tasks)}: {count[0]} valid tasks, {pairs} pairs; {status}", highlight=False, soft_wrap=True
    )
    if skipped:
        raise typer.Exit(1)


@tasks_app.command("convert")
def convert(
    out: Annotated[str, typer.Option("--out", "-o", help="Output spec: dir:, kaggle:, jsonl: or parquet:.")],
    tasks: TasksOpt = DEFAULT_SOURCE,
    on_error: OnErrorOpt = OnError.raise_,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing output.")] = False,
    quiet: QuietOpt = False,
    limit: LimitOpt = None,
) -> None:
    """Convert a task source to another format, streaming (a large JSONL never sits in memory)."""
    from arcscope.tasks.writers import save

    skipped: list[tuple[str, str]] = []
    count = [0]
    stream = _counted(
        iter_tasks(tasks, on_error.value, skipped, limit=limit), tasks, "converting", quiet, count
    )
    # Tasks the output cannot hold (a dir: id that is no file name) are skipped by the writer.
    unwritable: list[tuple[str, str]] = []
    path = save(stream, out, overwrite=overwrite, on_error=on_error.value, skipped=unwritable)
    skipped += unwritable
    _report_skipped(skipped)
    written = count[0] - len(unwritable)
    console.print(
        f"wrote {written} tasks to {escape(str(path))}" + (f" ({len(skipped)} skipped)" if skipped else ""),
        highlight=False,
        soft_wrap=True,
    )


@tasks_app.command("show")
def show(
    task_id: Annotated[str, typer.Argument(metavar="ID", help="The task id.")],
    tasks: TasksOpt = DEFAULT_SOURCE,
    digits: Annotated[bool, typer.Option("--digits", help="Print cell values inside the colours.")] = False,
    hide_answer: Annotated[bool, typer.Option("--hide-answer", help="Do not draw the test outputs.")] = False,
) -> None:
    """Draw one task in the terminal in the standard ARC colours."""
    from arcscope.report.terminal import render_task

    skipped: list[tuple[str, str]] = []
    ids: list[str] = []
    # Skip mode while searching, so a bad task elsewhere in the source does not hide the one asked for.
    for t in iter_tasks(tasks, "skip", skipped):
        if t.id == task_id:
            console.print(render_task(t, digits=digits, show_test_output=not hide_answer))
            return
        ids.append(t.id)
    bad = [f"{w}: {r}" for w, r in skipped if f"task {task_id}" in w]
    if bad:
        raise SourceError(f"task {task_id!r} in {tasks} is invalid: {bad[0]}")
    close = difflib.get_close_matches(task_id, ids, n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else "; `arcscope tasks list` shows the ids"
    raise SourceError(f"task {task_id!r} is not in {tasks} ({len(ids)} tasks){hint}")


__all__ = ["tasks_app"]
