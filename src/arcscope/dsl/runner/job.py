"""One job (a program on every pair of its task) run in this process: time limit, verification, profile.

Every engine runs its jobs through :class:`_Loaded`; the process and Ray engines also use
:func:`_hard_budget` and :func:`_lost_result` for a worker they had to kill or lost.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from arcscope.dsl.runner.load import ProgramSource, _user_line, load_programs
from arcscope.dsl.runner.profiling import _profile_stats
from arcscope.dsl.runner.results import PairResult, ProgramResult, _summarise

_HARD_GRACE = 5.0
"""Seconds past a job's own limit before the process and Ray engines kill its worker."""

Job = tuple[int, str, str, str, list, str]
"""(job id, source name, program key, task id, [(split, index, input, output or None), ...], program name)."""


class RunPlan(NamedTuple):
    """What every engine is handed: the programs, the jobs, and how to run and report them."""

    sources: Sequence[ProgramSource]
    entry: str | None
    jobs: list[Job]
    limit: float
    """Seconds per call."""
    profile: bool
    order: str
    """The ``objects`` order mode the programs run in."""
    on_result: Callable[[ProgramResult], None]


EngineResults = tuple[dict[int, ProgramResult], dict]
"""What an engine returns: the results by job id, and the summed per-primitive profile."""


def _hard_budget(job: Job, limit: float) -> float:
    """Seconds a worker gets for a job before it is killed: the whole job's limit (every pair), plus a grace
    period for the result's transfer."""
    return limit * max(len(job[4]), 1) + _HARD_GRACE + limit


class _Timeout(BaseException):
    """Raised inside a program when its time is up (BaseException: ``except Exception`` lets it through)."""


def _on_alarm(signum, frame):
    raise _Timeout()


def _can_alarm() -> bool:
    return hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()


def is_grid(x: Any) -> bool:
    """Whether x is a DSL grid: a non-empty tuple of equal-length non-empty tuples of ints."""
    if type(x) is not tuple or not x or type(x[0]) is not tuple or not x[0]:
        return False
    w = len(x[0])
    for row in x:
        if type(row) is not tuple or len(row) != w:
            return False
        for v in row:
            if type(v) is not int:
                return False
    return True


def _run_job(fn: Callable, job: Job, limit: float) -> ProgramResult:
    _, source, _key, task_id, pairs, name = job
    results: list[PairResult] = []
    alarm = _can_alarm() and limit > 0
    old = signal.signal(signal.SIGALRM, _on_alarm) if alarm else None
    timed_out = False
    try:
        for split, index, grid_in, grid_out in pairs:
            if timed_out:
                results.append(PairResult(split, index, "skipped"))
                continue
            error = None
            t0 = time.perf_counter()
            try:
                if alarm:
                    signal.setitimer(signal.ITIMER_REAL, limit)
                try:
                    got = fn(grid_in)
                finally:
                    if alarm:
                        signal.setitimer(signal.ITIMER_REAL, 0)
            except _Timeout:
                status, got, timed_out = "timeout", None, True
                error = f"no result within {limit:g} s"
            except RecursionError:
                status, got, error = "raised", None, "RecursionError: maximum recursion depth exceeded"
            except Exception as e:  # noqa: BLE001 - a program's exception is a result, not a crash
                line = _user_line(e, source)
                where = f" (line {line})" if line else ""
                status, got, error = "raised", None, f"{type(e).__name__}: {e}"[:300] + where
            else:
                if not is_grid(got):
                    status = "invalid"
                    error = f"returned {type(got).__name__}, not a grid (tuple of tuples of ints)"
                elif grid_out is None:
                    status = "unknown"
                else:
                    status = "correct" if got == grid_out else "wrong"
            results.append(PairResult(split, index, status, time.perf_counter() - t0, error))
    finally:
        if alarm:
            signal.signal(signal.SIGALRM, old)
    return _summarise(source, name, task_id, results)


def _timeout_result(job: Job, limit: float, why: str) -> ProgramResult:
    _, source, _key, task_id, pairs, name = job
    out = [PairResult(s, i, "skipped") for s, i, _, _ in pairs]
    if out:
        out[0] = PairResult(out[0].split, out[0].index, "timeout", limit, why)
    return _summarise(source, name, task_id, out)


def _lost_result(job: Job, limit: float, status: str, why: str) -> ProgramResult:
    """The result of a job whose worker was killed (``timeout``) or died (``raised``) before it answered."""
    res = _timeout_result(job, limit, why)
    if status == "raised" and res.pairs:
        res.status, res.pairs[0].status = "raised", "raised"
    return res


class _Loaded:
    """Programs of several sources, loaded once per process."""

    def __init__(self, sources: Sequence[ProgramSource], entry: str | None):
        from arcscope.dsl.fast import warm_up

        warm_up()
        self.fns: dict[tuple[str, str], Callable] = {}
        for src in sources:
            for key, fn in load_programs(src, entry).items():
                self.fns[(src.name, key)] = fn

    def run(self, job: Job, limit: float, profile: bool) -> tuple[ProgramResult, dict | None]:
        fn = self.fns[(job[1], job[2])]
        if not profile:
            return _run_job(fn, job, limit), None
        import cProfile

        prof = cProfile.Profile()
        prof.enable()
        try:
            result = _run_job(fn, job, limit)
        finally:
            prof.disable()
        return result, _profile_stats(prof)


def _set_order(order: str) -> None:
    """Put ``objects`` of this (worker) process in the run's order mode."""
    from arcscope.dsl.fast import set_object_order

    set_object_order(order)
