"""Run DSL programs against ARC tasks: load, time-limit, verify, in one process, in parallel, or on Ray.

A programs file is Python source that defines ``solve_<task_id>(I)`` functions (arc-dsl's ``solvers.py``
style); ``from dsl import *`` / ``from constants import *`` / ``from arc_types import *`` resolve to
:mod:`arcscope.dsl` while the file loads, so such files run unchanged. With ``entry="name"`` one function
is run on every task instead.

Each program runs on its task's train and test inputs; each call has a time limit. A call's result is
``correct`` or ``wrong`` against the known output, ``invalid`` when it is not a grid, ``raised`` or
``timeout``; a program is ``solved`` when every pair with a known output is correct, else its worst pair
status names it (timeout > raised > invalid > wrong). Results do not depend on the engine: ``sequential``,
``process`` (one worker process per core; pure-Python code gains nothing from threads) and ``ray``.

Time limits: the call is interrupted by SIGALRM (a ``BaseException``, so a program's ``except Exception``
does not swallow it). Code stuck inside one C call, or with SIGALRM blocked, cannot be interrupted that way;
the ``process`` and ``ray`` engines also kill a worker whose job runs past the whole job's limit plus a grace
period, and record a timeout. A job whose worker dies under it (killed by the OS, a crash in C code) is
recorded as ``raised``.

The package, one idea per module: ``load`` (programs files), ``results`` (result types and the report),
``job`` (one job run in this process: time limit, verification, profile), ``profiling``, and one module per
engine: ``sequential``, ``process``, ``ray``. This module plans the jobs and hands them to the engine.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from arcscope.dsl.runner.job import Job, RunPlan, is_grid
from arcscope.dsl.runner.load import ProgramError, ProgramSource, load_programs
from arcscope.dsl.runner.process import _start_method, run_processes
from arcscope.dsl.runner.ray import run_ray
from arcscope.dsl.runner.results import STATUSES, PairResult, ProgramResult, RunReport
from arcscope.dsl.runner.sequential import run_sequential
from arcscope.errors import ArcscopeError
from arcscope.progress import ProgressFn, emit

ENGINES = ("sequential", "process", "ray")


def _task_pairs(task) -> list:
    def tup(g):
        return None if g is None else tuple(tuple(int(v) for v in row) for row in g.tolist())

    pairs = [("train", k, tup(p.input), tup(p.output)) for k, p in enumerate(task.train)]
    pairs += [("test", k, tup(p.input), tup(p.output)) for k, p in enumerate(task.test)]
    return pairs


def run_programs(
    programs: Sequence[str | os.PathLike[str] | ProgramSource] | str | os.PathLike[str] | ProgramSource,
    tasks: Any,
    *,
    entry: str | None = None,
    engine: str = "process",
    workers: int | None = None,
    time_limit: float = 10.0,
    profile: bool = False,
    on_error: str = "raise",
    on_result: Callable[[ProgramResult], None] | None = None,
    progress: ProgressFn | None = None,
    ray_address: str | None = None,
    start_method: str = "auto",
    order: str | None = None,
) -> RunReport:
    """Run every ``solve_<task_id>`` (or the ``entry`` function) on its tasks and verify the outputs.

    ``tasks`` is a task source spec (``arc1:training``, ``dir:PATH``, ...) or a TaskSet. ``engine`` is
    ``sequential``, ``process`` (``workers`` processes, default one per core; ``start_method`` "auto" forks
    on Linux when that is safe, else spawns) or ``ray``. ``time_limit``
    is per call, in seconds. With ``on_error="skip"`` a programs file that cannot be loaded, and a bad
    task in the source, are skipped and listed in ``report.skipped`` instead of raising. ``order`` is the
    ``objects`` mode every engine runs the programs in: ``exact`` (arc-dsl's iteration order, the default)
    or ``fast`` (see :func:`arcscope.dsl.fast.set_object_order`); None keeps this process's current mode.
    ``on_result`` sees each program's result as it arrives; ``progress`` gets a "programs" event for each.
    """
    from arcscope.dsl.fast import ORDERS, object_order, set_object_order
    from arcscope.tasks import TaskSet, load

    if engine not in ENGINES:
        raise ArcscopeError(f"unknown engine {engine!r}: use one of {', '.join(ENGINES)}")
    if on_error not in ("raise", "skip"):
        raise ArcscopeError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    if time_limit <= 0:
        raise ArcscopeError(f"time_limit must be positive, got {time_limit}")
    if order is not None and order not in ORDERS:
        raise ArcscopeError(f"unknown object order {order!r}: use one of {', '.join(ORDERS)}")
    order = order or object_order()
    items = [programs] if isinstance(programs, (str, os.PathLike, ProgramSource)) else list(programs)
    skipped: list[tuple[str, str]] = []
    sources: list[ProgramSource] = []
    keys: dict[str, list[str]] = {}
    for item in items:
        try:
            src = item if isinstance(item, ProgramSource) else ProgramSource.read(item)
            keys[src.name] = list(load_programs(src, entry))
            sources.append(src)
        except ProgramError as e:
            if on_error == "raise":
                raise
            skipped.append((item.name if isinstance(item, ProgramSource) else str(item), str(e)))
    taskset = tasks if isinstance(tasks, TaskSet) else load(tasks, on_error=on_error)
    skipped += list(taskset.skipped)
    jobs: list[Job] = []
    no_task: list[tuple[str, str]] = []
    for src in sources:
        targets: Iterable[tuple[str, str]]
        if entry is not None:
            targets = [("*", t.id) for t in taskset]
        else:
            targets = [(k, k) for k in keys[src.name]]
        for key, task_id in targets:
            if task_id not in taskset:
                no_task.append((src.name, f"solve_{key}"))
                continue
            name = entry if key == "*" else f"solve_{key}"
            jobs.append((len(jobs), src.name, key, task_id, _task_pairs(taskset[task_id]), name))
    workers = workers or os.cpu_count() or 1
    if start_method == "auto":
        start_method = _start_method()
    done = [0]

    def callback(result: ProgramResult) -> None:
        done[0] += 1
        if on_result is not None:
            on_result(result)
        emit(progress, "programs", done[0], len(jobs))

    plan = RunPlan(sources, entry, jobs, time_limit, profile, order, callback)
    t0 = time.perf_counter()
    saved = set_object_order(order)  # this process's mode; forked workers start from it too
    try:
        if not jobs:
            results_by_id, prof = {}, {}
        elif engine == "sequential":
            results_by_id, prof = run_sequential(plan)
        elif engine == "process":
            results_by_id, prof = run_processes(plan, workers, start_method)
        else:
            results_by_id, prof = run_ray(plan, workers, ray_address)
    finally:
        set_object_order(saved)
    wall = time.perf_counter() - t0
    results = [results_by_id[j[0]] for j in jobs]
    return RunReport(
        results=results,
        engine=engine,
        workers=1 if engine == "sequential" else workers,
        wall_seconds=wall,
        tasks=len({j[3] for j in jobs}),
        no_task=no_task,
        skipped=skipped,
        profile=prof if profile else None,
        order=order,
    )


__all__ = [
    "ENGINES",
    "STATUSES",
    "PairResult",
    "ProgramError",
    "ProgramResult",
    "ProgramSource",
    "RunReport",
    "is_grid",
    "load_programs",
    "run_programs",
]
