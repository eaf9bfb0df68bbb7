"""`arcscope score`: score a Kaggle submission.json against a task source."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from arcscope.cli.app import app, console, err_console
from arcscope.files import atomic_write_json

_SHOW_IDS = 10


def _ids(ids: list[str]) -> str:
    shown = ", ".join(ids[:_SHOW_IDS])
    return shown + (f", ... ({len(ids) - _SHOW_IDS} more)" if len(ids) > _SHOW_IDS else "")


def _write_json(path: Path, obj: object) -> None:
    # Atomic, so an interrupted run never leaves a half-written figures file behind.
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, obj, indent=2, newline=True)


@app.command("score")
def score_cmd(
    submission: Path = typer.Argument(
        ..., help="Kaggle submission.json: {task_id: [{attempt_1, attempt_2}, ...]}."
    ),
    tasks: str = typer.Option(
        ..., "--tasks", "-t", help="Task source with known test outputs, e.g. arc1:evaluation or dir:PATH."
    ),
    json_out: Path | None = typer.Option(
        None, "--json", help="Also write the figures (and per-task details) to this JSON file."
    ),
    max_attempts: int = typer.Option(
        2, "--max-attempts", min=1, help="Attempts that count per test output (official: 2)."
    ),
    ks: str = typer.Option("1,2", "--k", help="Comma-separated k values for pass@k."),
    only_predicted: bool = typer.Option(
        False,
        "--only-predicted",
        help="Score only the tasks in the submission (official: missing tasks score 0).",
    ),
    per_task: bool = typer.Option(False, "--per-task", help="Also print one line per scored task."),
) -> None:
    """Score a submission with the official ARC metric (plus output accuracy, task accuracy and pass@k)."""
    from arcscope.tasks import load
    from arcscope.tasks.scoring import read_submission, score

    try:
        k_values = sorted({int(k) for k in ks.split(",") if k.strip()})
    except ValueError:
        raise typer.BadParameter(f"--k takes comma-separated integers, got {ks!r}") from None
    if not k_values or min(k_values) < 1:
        raise typer.BadParameter(f"--k takes integers >= 1, got {ks!r}")

    predictions = read_submission(submission)
    task_set = load(tasks)
    report = score(
        task_set, predictions, max_attempts=max_attempts, ks=k_values, only_predicted=only_predicted
    )

    table = Table(title=f"{escape(str(submission))} vs {escape(tasks)}", title_justify="left")
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_column("", style="dim")
    table.add_row(
        "[bold]score (official)[/]",
        f"[bold]{report.score:.4f}[/]",
        f"mean over {report.n_tasks} tasks of the fraction of test outputs solved (top {max_attempts})",
    )
    table.add_row(
        "output accuracy",
        f"{report.output_accuracy:.4f}",
        f"{report.n_correct} / {report.n_outputs} test outputs",
    )
    table.add_row(
        "task accuracy",
        f"{report.task_accuracy:.4f}",
        f"{report.n_solved} / {report.n_tasks} tasks fully solved",
    )
    for k, v in report.pass_at.items():
        table.add_row(f"pass@{k}", f"{v:.4f}", "per-task mean, first k ranked attempts")
    console.print(table)

    if per_task:
        t = Table(title="per task", title_justify="left")
        t.add_column("task")
        t.add_column("score", justify="right")
        t.add_column("first correct rank per test output")
        for ts in report.tasks:
            ranks = ", ".join("-" if r is None else str(r) for r in ts.rank)
            missing = " (no prediction)" if len(ts.missing) == len(ts.rank) else ""
            t.add_row(escape(ts.task_id), f"{ts.score:.2f}", ranks + missing)
        console.print(t)

    if report.n_missing_tasks or report.n_missing_outputs:
        err_console.print(
            f"[yellow]{report.n_missing_tasks} task(s) of the set have no prediction; "
            f"{report.n_missing_outputs} test output(s) have no attempt (they score 0)[/]"
        )
    if report.unknown_tasks:
        err_console.print(
            f"[yellow]{len(report.unknown_tasks)} task(s) in the submission are not in {escape(tasks)} "
            f"(ignored): {escape(_ids(report.unknown_tasks))}[/]"
        )
    if report.unanswered_tasks:
        err_console.print(
            f"[yellow]{len(report.unanswered_tasks)} task(s) have no known test output (not scored): "
            f"{escape(_ids(report.unanswered_tasks))}[/]"
        )
    if report.n_extra_predictions:
        err_console.print(
            f"[yellow]{report.n_extra_predictions} predicted test entr(ies) beyond a task's test inputs (ignored)[/]"
        )
    if task_set.skipped:
        err_console.print(f"[yellow]{len(task_set.skipped)} item(s) of the task source were skipped[/]")

    if json_out is not None:
        payload = report.to_dict()
        payload["submission"] = str(submission)
        payload["tasks_spec"] = tasks
        _write_json(json_out, payload)
        err_console.print(f"wrote {escape(str(json_out))}")
