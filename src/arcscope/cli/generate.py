"""`arcscope tasks generate` and `arcscope tasks families`: task families with known arc-dsl programs."""

from __future__ import annotations

import time
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from arcscope.cli.app import console, err_console, progress_bar
from arcscope.cli.options import QuietOpt, config_options
from arcscope.cli.tasks import tasks_app
from arcscope.families.core import Knobs


@tasks_app.command("generate")
@config_options(Knobs, config_file=True)
def generate_cmd(
    cfg: Knobs,
    out: Annotated[
        str,
        typer.Option(
            "--out", "-o", help="Where to write: jsonl:, parquet:, dir: or kaggle: (any task writer)."
        ),
    ],
    families: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="FAMILY...",
            help="Family names, patterns (rot*), tag:TAG, or all (the default). `arcscope tasks families` lists them.",
            show_default=False,
        ),
    ] = None,
    n: Annotated[
        int, typer.Option("--n", "-n", min=0, help="Number of tasks (shared round-robin by the families).")
    ] = 100,
    seed: Annotated[int, typer.Option("--seed", min=0, help="Seed: the same seed gives the same bytes.")] = 0,
    exclude_arc: Annotated[
        bool,
        typer.Option(
            "--exclude-arc",
            help="Leave out tasks equal to an ARC-AGI-1/2 task (or holding an ARC pair) up to symmetry.",
        ),
    ] = False,
    check_arc: Annotated[
        bool,
        typer.Option(
            "--check-arc/--no-check-arc",
            help="Count tasks that match ARC-AGI-1/2 up to symmetry (the contamination report).",
        ),
    ] = True,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing output.")] = False,
    quiet: QuietOpt = False,
) -> None:
    """Generate tasks from families with known programs and write them with any task writer."""
    from arcscope.families.registry import iter_generate
    from arcscope.tasks.writers import save

    names = families or None  # none named: every family
    t0 = time.perf_counter()
    report = None
    with progress_bar(quiet, console=err_console) as bar:
        stream = iter_generate(names, n, seed, cfg, progress=bar)
        if check_arc or exclude_arc:
            from arcscope.families.contamination import ContaminationReport, screen

            report = ContaminationReport()
            stream = screen(stream, report, exclude=exclude_arc)
        path = save(stream, out, overwrite=overwrite)
    dt = time.perf_counter() - t0
    written = n - (report.excluded if report is not None else 0)
    console.print(
        f"wrote {written} tasks to {escape(str(path))} in {dt:.1f}s ({n / max(dt, 1e-9):,.0f} tasks/s)",
        highlight=False,
        soft_wrap=True,
    )
    if report is not None:
        console.print(f"contamination: {escape(report.summary())}", highlight=False, soft_wrap=True)
        for gen_id, arc_id in (report.task_matches + report.pair_matches)[:5]:
            console.print(f"  {escape(gen_id)} ~ {escape(arc_id)}", highlight=False)


@tasks_app.command("families")
def families_cmd(
    plain: Annotated[bool, typer.Option("--plain", help="Tab-separated text instead of a table.")] = False,
) -> None:
    """List the task families: name, program, tags, whether a source map is known, the rule."""
    from arcscope.families.registry import FAMILIES

    header = ("family", "program", "tags", "source map", "rule")
    rows = [
        (f.name, f.program_name, ",".join(f.tags), "yes" if f.moves_cells else "", f.description)
        for f in FAMILIES.values()
    ]
    if plain:
        typer.echo("\t".join(header))
        for r in rows:
            typer.echo("\t".join(r))
        return
    table = Table(title=f"{len(rows)} task families")
    for h in header:
        table.add_column(h)
    for r in rows:
        table.add_row(*(escape(x) for x in r))
    console.print(table)


__all__ = ["families_cmd", "generate_cmd"]
