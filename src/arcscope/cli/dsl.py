"""`arcscope dsl` commands: run DSL programs against tasks, list the primitives, label grids in batches."""

from __future__ import annotations

import time
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from arcscope.cli.app import app, console, err_console, progress_bar
from arcscope.cli.options import OnError, OnErrorOpt, QuietOpt
from arcscope.errors import ArcscopeError
from arcscope.files import atomic_write_json

dsl_app = typer.Typer(
    help="The ARC DSL (arc-dsl compatible primitives): run solver programs, list primitives, batch-label.",
    no_args_is_help=True,
)
app.add_typer(dsl_app, name="dsl")


class Engine(StrEnum):
    """Where programs run."""

    sequential = "sequential"
    process = "process"
    ray = "ray"


class Order(StrEnum):
    """How objects() builds its objects."""

    exact = "exact"
    fast = "fast"


@dsl_app.command("run")
def run(
    programs: Annotated[
        list[Path] | None, typer.Argument(help="Programs files defining solve_<task_id>(I) functions.")
    ] = None,
    tasks: Annotated[str, typer.Option("--tasks", "-t", help="Task source spec.")] = "arc1:training",
    entry: Annotated[
        str | None, typer.Option("--entry", help="Run this one function on every task instead of solve_<id>.")
    ] = None,
    examples: Annotated[
        bool, typer.Option("--examples", help="Also run arcscope's bundled example programs.")
    ] = False,
    engine: Annotated[Engine, typer.Option("--engine", help="sequential, process or ray.")] = Engine.process,
    workers: Annotated[
        int | None, typer.Option("--workers", "-j", min=1, help="Worker processes (default: one per core).")
    ] = None,
    time_limit: Annotated[float, typer.Option("--time-limit", min=0.001, help="Seconds per call.")] = 10.0,
    profile: Annotated[bool, typer.Option("--profile", help="Time every primitive (slower).")] = False,
    on_error: OnErrorOpt = OnError.raise_,
    details: Annotated[bool, typer.Option("--details", help="One row per program.")] = False,
    slowest: Annotated[int, typer.Option("--slowest", min=0, help="Show the N slowest programs.")] = 5,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Write the full report as JSON here.")
    ] = None,
    ray_address: Annotated[
        str | None, typer.Option("--ray-address", help="Ray cluster to join (default: a local one).")
    ] = None,
    order: Annotated[
        Order,
        typer.Option(
            "--order",
            help="exact: objects() iterates as arc-dsl's does (default); fast: equal objects, about 2x faster "
            "objects(), but the cells inside an object iterate in another order.",
            envvar="ARCSCOPE_DSL_ORDER",
        ),
    ] = Order.exact,
    quiet: QuietOpt = False,
) -> None:
    """Run each program on its task's train and test inputs and verify the outputs."""
    from arcscope.dsl.runner import run_programs

    files: list = list(programs or [])
    if examples:
        import arcscope.dsl.corpus as corpus

        files.append(corpus.__file__)
    if not files:
        raise ArcscopeError("no programs given: pass one or more PROGRAMS.py files, or --examples")
    with progress_bar(quiet) as bar:
        report = run_programs(
            files,
            tasks,
            entry=entry,
            engine=engine.value,
            workers=workers,
            time_limit=time_limit,
            profile=profile,
            on_error=on_error.value,
            progress=bar,
            ray_address=ray_address,
            order=order.value,
        )
    counts = report.counts()
    total = len(report.results)
    summary = Table(title=f"{total} programs on {report.tasks} tasks of {tasks}")
    for name in counts:
        summary.add_column(name.replace("timeout", "timed out"), justify="right")
    summary.add_column("wall s", justify="right")
    summary.add_column("programs/s", justify="right")
    summary.add_row(
        *(str(v) for v in counts.values()),
        f"{report.wall_seconds:.2f}",
        f"{total / max(report.wall_seconds, 1e-9):,.1f}",
    )
    console.print(summary)
    console.print(
        f"engine {report.engine}, {report.workers} worker(s), time limit {time_limit:g} s per call, "
        f"objects order {report.order}"
    )
    if details:
        table = Table(title="programs")
        for h in ("task", "program", "status", "seconds", "first error"):
            table.add_column(h)
        for r in report.results:
            table.add_row(r.task_id, r.program, r.status, f"{r.seconds:.4f}", escape(r.error or ""))
        console.print(table)
    if slowest and report.results:
        table = Table(title=f"slowest {min(slowest, total)} programs")
        for h in ("task", "program", "status", "seconds"):
            table.add_column(h, justify="right" if h == "seconds" else "left")
        for r in report.slowest(slowest):
            table.add_row(r.task_id, r.program, r.status, f"{r.seconds:.4f}")
        console.print(table)
    if profile:
        table = Table(title="slowest primitives (self time, all calls)")
        for h in ("primitive", "calls", "self s", "total s"):
            table.add_column(h, justify="left" if h == "primitive" else "right")
        for name, s in report.top_primitives(15):
            table.add_row(escape(name), f"{int(s['calls']):,}", f"{s['self_s']:.4f}", f"{s['total_s']:.4f}")
        console.print(table)
    failed = [r for r in report.results if r.status in ("raised", "timeout", "invalid")]
    for r in failed[:20]:
        err_console.print(
            f"[yellow]{escape(r.status)}[/] {escape(r.program)} on {escape(r.task_id)}: {escape(r.error or '')}",
            highlight=False,
            soft_wrap=True,
        )
    if len(failed) > 20:
        err_console.print(f"... and {len(failed) - 20} more (see --details or --json)")
    if report.no_task:
        err_console.print(f"[yellow]{len(report.no_task)} program(s) name a task that is not in {tasks}[/]")
    if report.skipped:
        err_console.print(f"[yellow]skipped {len(report.skipped)} bad item(s):[/]")
        for where, reason in report.skipped:
            err_console.print(f"  {escape(where)}: {escape(reason)}", highlight=False, soft_wrap=True)
    if json_out is not None:
        atomic_write_json(json_out, report.to_json(), indent=1)
        console.print(f"report written to {escape(str(json_out))}")


@dsl_app.command("primitives")
def primitives(
    plain: Annotated[bool, typer.Option("--plain", help="Names only, one a line.")] = False,
) -> None:
    """List the DSL primitives with their signatures, marking those with fast kernels."""
    import inspect

    import arcscope.dsl as dsl
    from arcscope.dsl.fast import FAST
    from arcscope.dsl.reference import PRIMITIVES

    if plain:
        for name in PRIMITIVES:
            typer.echo(name)
        return
    table = Table(title=f"{len(PRIMITIVES)} primitives ({len(FAST)} with fast kernels)")
    for h in ("primitive", "signature", "fast", "what it does"):
        table.add_column(h)
    for name in PRIMITIVES:
        fn = getattr(dsl, name)
        sig = str(inspect.signature(fn)).replace("'", "")
        doc = (fn.__doc__ or "").strip().splitlines()[0] if fn.__doc__ else ""
        table.add_row(name, escape(sig), "yes" if name in FAST else "", escape(doc))
    console.print(table)


@dsl_app.command("objects")
def objects_cmd(
    tasks: Annotated[str, typer.Option("--tasks", "-t", help="Task source spec.")] = "arc1:training",
    univalued: Annotated[bool, typer.Option("--univalued/--multicolour")] = True,
    diagonal: Annotated[bool, typer.Option("--diagonal/--orthogonal")] = False,
    without_bg: Annotated[bool, typer.Option("--without-bg/--with-bg")] = True,
    backend: Annotated[str, typer.Option("--backend", help="numba (CPU threads) or torch.")] = "numba",
    device: Annotated[
        str | None,
        typer.Option(
            "--device",
            help="torch device for --backend torch: auto (CUDA, then MPS, else CPU), cpu, cuda, cuda:N or mps.",
        ),
    ] = None,
) -> None:
    """Label the objects of every grid of a task source in one batch and summarise the counts."""
    import numpy as np

    from arcscope.dsl.batch import batch_objects
    from arcscope.tasks import load

    ts = load(tasks)
    grids = [g for t in ts for p in t.pairs for g in (p.input, p.output) if g is not None]
    t0 = time.perf_counter()
    res = batch_objects(grids, univalued, diagonal, without_bg, backend=backend, device=device).numpy()
    took = time.perf_counter() - t0
    n = np.asarray(res.n_objects)
    table = Table(
        title=f"objects(grid, {univalued}, {diagonal}, {without_bg}) over {len(grids)} grids of {tasks}"
    )
    for h in ("grids", "objects", "mean per grid", "max", "seconds", "grids/s"):
        table.add_column(h, justify="right")
    table.add_row(
        f"{len(grids):,}",
        f"{int(n.sum()):,}",
        f"{n.mean():.2f}",
        str(int(n.max())),
        f"{took:.3f}",
        f"{len(grids) / max(took, 1e-9):,.0f}",
    )
    console.print(table)
