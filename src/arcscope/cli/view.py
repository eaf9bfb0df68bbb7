"""`arcscope view`: one self-contained HTML page of tasks and, optionally, predictions."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from arcscope.cli.app import app, console, err_console
from arcscope.cli.options import OnError, OnErrorOpt


@app.command("view")
def view(
    spec: str = typer.Argument(
        ...,
        help="Task source, e.g. arc1:evaluation, arc2:training or dir:PATH (see `arcscope tasks --help`).",
    ),
    output: Path = typer.Option(Path("view.html"), "--output", "-o", help="HTML file to write."),
    predictions: Path | None = typer.Option(
        None, "--predictions", "-p", help="Kaggle submission.json whose attempts are shown and marked."
    ),
    limit: int | None = typer.Option(None, "--limit", "-n", min=1, help="Show only the first N tasks."),
    title: str | None = typer.Option(None, "--title", help="Page title (default: names the spec)."),
    on_error: OnErrorOpt = OnError.raise_,
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print nothing but errors."),
) -> None:
    """Write one self-contained HTML page of tasks, with predictions marked right or wrong."""
    from arcscope.report.viewer import summarize, write_viewer
    from arcscope.tasks import load, read_submission

    tasks = load(spec, on_error=on_error.value, limit=limit)
    preds = read_submission(predictions) if predictions is not None else None
    path = write_viewer(tasks, output, predictions=preds, title=title or f"arcscope view {spec}")
    if tasks.skipped:
        err_console.print(f"[yellow]skipped {len(tasks.skipped)} invalid item(s):[/]")
        for where, reason in tasks.skipped:
            err_console.print(f"  {escape(where)}: {escape(reason)}", highlight=False)
    if quiet:
        return
    summary = summarize(tasks, preds)
    if preds is None:
        console.print(f"wrote {path} ({summary.tasks} tasks)", highlight=False, markup=False, soft_wrap=True)
        return
    console.print(f"wrote {path}: {summary.line()}", highlight=False, markup=False, soft_wrap=True)
    # With --limit, predictions for the tasks left out are expected, not worth a note.
    if summary.extra and limit is None:
        err_console.print(
            f"note: {len(summary.extra)} task id(s) in {predictions} are not in {spec}, e.g. {summary.extra[0]!r}",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )
