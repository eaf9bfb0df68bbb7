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
"""

from __future__ import annotations

import bisect
import hashlib
import multiprocessing as mp
import os
import re
import signal
import sys
import threading
import time
import traceback
import types
from collections.abc import Callable, Iterable, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import wait as mp_wait
from pathlib import Path
from typing import Any

from arcscope.errors import ArcscopeError

STATUSES = ("solved", "wrong", "invalid", "raised", "timeout")
"""Program statuses, best first."""
_SEVERITY = {"timeout": 4, "raised": 3, "invalid": 2, "wrong": 1, "correct": 0, "unknown": 0, "skipped": 0}
ENGINES = ("sequential", "process", "ray")
_HARD_GRACE = 5.0
"""Seconds past a job's own limit before the process and Ray engines kill its worker."""


class ProgramError(ArcscopeError):
    """A programs file cannot be read, compiled or loaded, or it has no program to run."""


@dataclass
class ProgramSource:
    """Program source text and the name it is reported under (the file path)."""

    name: str
    text: str

    @classmethod
    def read(cls, path: str | os.PathLike[str]) -> ProgramSource:
        """Read a programs file; a missing or unreadable file is a ProgramError naming it."""
        p = Path(path)
        try:
            return cls(str(p), p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ProgramError(f"{p}: no such programs file") from None
        except (OSError, UnicodeDecodeError) as e:
            raise ProgramError(f"{p}: cannot read the programs file ({e})") from None


# -------------------------------------------------------------------------------------------- loading

_ALIASES = {
    "dsl": "arcscope.dsl",
    "constants": "arcscope.dsl.constants",
    "arc_types": "arcscope.dsl.arc_types",
}
_alias_lock = threading.Lock()


@contextmanager
def _dsl_aliases():
    """Make ``import dsl`` / ``constants`` / ``arc_types`` mean arcscope's modules while a file loads."""
    import importlib

    with _alias_lock:
        added = []
        for alias, target in _ALIASES.items():
            if alias not in sys.modules:
                sys.modules[alias] = importlib.import_module(target)
                added.append(alias)
        try:
            yield
        finally:
            for alias in added:
                sys.modules.pop(alias, None)


def load_programs(
    source: ProgramSource | str | os.PathLike[str], entry: str | None = None
) -> dict[str, Callable]:
    """The programs of a file: ``{task_id: fn}`` for ``solve_<task_id>``, or ``{"*": fn}`` for ``entry``."""
    src = source if isinstance(source, ProgramSource) else ProgramSource.read(source)
    try:
        code = compile(src.text, src.name, "exec")
    except SyntaxError as e:
        raise ProgramError(f"{src.name} line {e.lineno}: syntax error: {e.msg}; fix the file") from None
    digest = hashlib.sha1(src.text.encode()).hexdigest()[:12]
    module = types.ModuleType(f"arcscope_programs_{digest}")
    module.__file__ = src.name
    with _dsl_aliases():
        try:
            exec(code, module.__dict__)
        except Exception as e:  # noqa: BLE001 - any error in user code is reported, with its line
            line = _user_line(e, src.name)
            where = f" line {line}" if line else ""
            raise ProgramError(
                f"{src.name}{where}: loading the file raised {type(e).__name__}: {e}; "
                "a programs file must import and define functions without errors"
            ) from None
    if entry is not None:
        fn = module.__dict__.get(entry)
        if not callable(fn):
            raise ProgramError(f"{src.name}: no function named {entry!r} (asked for with --entry)")
        return {"*": fn}
    found = {
        name[len("solve_") :]: fn
        for name, fn in module.__dict__.items()
        if name.startswith("solve_") and callable(fn) and len(name) > len("solve_")
    }
    if not found:
        raise ProgramError(
            f"{src.name}: no solve_<task_id> functions found; name them after their task, or use --entry NAME"
        )
    return found


def _user_line(e: BaseException, filename: str) -> int | None:
    """The deepest line of ``filename`` in the traceback (the program's own line)."""
    line = None
    for frame, lineno in traceback.walk_tb(e.__traceback__):
        if frame.f_code.co_filename == filename:
            line = lineno
    return line


# ----------------------------------------------------------------------------------------------- results


@dataclass
class PairResult:
    """One call of a program on one input."""

    split: str
    """``train`` or ``test``."""
    index: int
    status: str
    """correct, wrong, invalid, raised, timeout, unknown (no known output) or skipped (after a timeout)."""
    seconds: float = 0.0
    error: str | None = None


@dataclass
class ProgramResult:
    """A program's run on its task."""

    source: str
    program: str
    task_id: str
    status: str
    pairs: list[PairResult] = field(default_factory=list)
    seconds: float = 0.0
    error: str | None = None

    def outcome(self) -> tuple:
        """Everything but the timings: equal across engines for the same programs and tasks."""
        return (
            self.source,
            self.program,
            self.task_id,
            self.status,
            tuple((p.split, p.index, p.status, p.error) for p in self.pairs),
            self.error,
        )


@dataclass
class RunReport:
    """Results of a run, with the engine, wall time and (on request) a per-primitive profile."""

    results: list[ProgramResult]
    engine: str
    workers: int
    wall_seconds: float
    tasks: int
    no_task: list[tuple[str, str]] = field(default_factory=list)
    """(source, program) pairs whose task id is not in the task source."""
    skipped: list[tuple[str, str]] = field(default_factory=list)
    """Bad items passed over with ``on_error="skip"``: (where, reason)."""
    profile: dict[str, dict[str, float]] | None = None
    """Primitive -> {calls, self_s, total_s}, summed over all calls (None unless asked for)."""
    order: str = "exact"
    """How ``objects`` built its objects: ``exact`` (arc-dsl's iteration order) or ``fast``."""

    def counts(self) -> dict[str, int]:
        """Number of programs per status."""
        out = dict.fromkeys(STATUSES, 0)
        for r in self.results:
            out[r.status] = out.get(r.status, 0) + 1
        return out

    def slowest(self, n: int = 10) -> list[ProgramResult]:
        """The n programs that took longest."""
        return sorted(self.results, key=lambda r: -r.seconds)[:n]

    def top_primitives(self, n: int = 15) -> list[tuple[str, dict[str, float]]]:
        """The n primitives with the most self time (empty without a profile)."""
        if not self.profile:
            return []
        return sorted(self.profile.items(), key=lambda kv: -kv[1]["self_s"])[:n]

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict of the whole report."""
        return {
            "engine": self.engine,
            "workers": self.workers,
            "order": self.order,
            "wall_seconds": self.wall_seconds,
            "tasks": self.tasks,
            "counts": self.counts(),
            "results": [asdict(r) for r in self.results],
            "no_task": [list(x) for x in self.no_task],
            "skipped": [list(x) for x in self.skipped],
            "profile": self.profile,
        }


# ------------------------------------------------------------------------------------------- execution


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


Job = tuple[int, str, str, str, list, str]
"""(job id, source name, program key, task id, [(split, index, input, output or None), ...], program name)."""


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


def _summarise(source: str, name: str, task_id: str, pairs: list[PairResult]) -> ProgramResult:
    worst = max(pairs, key=lambda p: _SEVERITY[p.status], default=None)
    if worst is None or _SEVERITY[worst.status] == 0:
        status = "solved"
    else:
        status = worst.status
    error = next((p.error for p in pairs if p.error), None)
    return ProgramResult(source, name, task_id, status, pairs, sum(p.seconds for p in pairs), error)


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


def _hard_budget(job: Job, limit: float) -> float:
    """Seconds a worker gets for a job before it is killed: the whole job's limit (every pair), plus a grace
    period for the result's transfer."""
    return limit * max(len(job[4]), 1) + _HARD_GRACE + limit


# --------------------------------------------------------------------------------------------- profile

_DEF_LINES: dict[str, tuple[list[int], list[str]]] = {}


def _enclosing(filename: str, lineno: int) -> str:
    """The name of the top-level function around a line of a DSL module (names the primitive of a lambda)."""
    table = _DEF_LINES.get(filename)
    if table is None:
        lines, names = [], []
        try:
            for n, text in enumerate(Path(filename).read_text().splitlines(), 1):
                m = re.match(r"def (\w+)\(", text)
                if m:
                    lines.append(n)
                    names.append(m.group(1))
        except OSError:
            pass
        table = _DEF_LINES[filename] = (lines, names)
    k = bisect.bisect_right(table[0], lineno) - 1
    return table[1][k] if k >= 0 else "?"


def _profile_stats(prof) -> dict[str, dict[str, float]]:
    """Per-primitive calls, self and total seconds from a cProfile run (DSL functions only)."""
    import pstats

    dsl_dir = str(Path(__file__).parent)
    out: dict[str, dict[str, float]] = {}
    for (filename, lineno, func), (_cc, nc, tt, ct, _callers) in pstats.Stats(prof).stats.items():
        if not filename.startswith(dsl_dir) or os.path.basename(filename) == "runner.py":
            continue
        # A lambda is named after the combinator that made it (compose.<lambda>, rbind.<lambda>, ...).
        name = f"{_enclosing(filename, lineno)}.{func}" if func.startswith("<") else func
        slot = out.setdefault(name, {"calls": 0, "self_s": 0.0, "total_s": 0.0})
        slot["calls"] += nc
        slot["self_s"] += tt
        slot["total_s"] += ct
    return out


def _merge_profiles(into: dict, more: dict | None) -> None:
    for name, s in (more or {}).items():
        slot = into.setdefault(name, {"calls": 0, "self_s": 0.0, "total_s": 0.0})
        for k in slot:
            slot[k] += s[k]


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


def _worker(conn, sources, entry: str | None, limit: float, profile: bool, order: str) -> None:
    """Process-pool worker: load the programs once (or inherit them, forked), then run jobs until told to stop.

    A job whose pairs are None reuses the pairs of its task sent earlier to this worker.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and stops its workers
    _set_order(order)
    try:
        loaded = sources if isinstance(sources, _Loaded) else _Loaded(sources, entry)
    except ProgramError as e:
        conn.send(("error", str(e)))
        return
    conn.send(("ready", None))
    pairs_of: dict[str, list] = {}
    while True:
        chunk = conn.recv()
        if chunk is None:
            return
        # Results go back one by one, so the parent's per-job deadline follows the chunk's progress.
        for job in chunk:
            if job[4] is None:
                job = (*job[:4], pairs_of[job[3]], job[5])
            else:
                pairs_of[job[3]] = job[4]
            result, prof = loaded.run(job, limit, profile)
            conn.send(("done", (job[0], result, prof)))


# ---------------------------------------------------------------------------------------------- engines


def _run_sequential(sources, entry, jobs, limit, profile, on_result):
    loaded = _Loaded(sources, entry)
    out, prof_total = {}, {}
    for job in jobs:
        result, prof = loaded.run(job, limit, profile)
        _merge_profiles(prof_total, prof)
        out[job[0]] = result
        on_result(result)
    return out, prof_total


def _run_processes(sources, entry, jobs, limit, profile, workers, on_result, start_method, order):
    ctx = mp.get_context(start_method)
    pending = list(reversed(jobs))
    out: dict[int, ProgramResult] = {}
    prof_total: dict = {}
    live: dict[Any, dict] = {}
    failed_starts = [0]
    n_workers = max(1, min(workers, len(jobs)))
    # Forked workers inherit the programs loaded here (and the compiled kernels) instead of loading again.
    programs = _Loaded(sources, entry) if start_method == "fork" else list(sources)

    def spawn():
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=_worker, args=(child, programs, entry, limit, profile, order), daemon=True)
        proc.start()
        child.close()
        live[parent] = {"proc": proc, "jobs": [], "deadline": None, "ready": False, "tasks": set()}

    def budget(job) -> float:
        return _hard_budget(job, limit)

    def give(conn):
        state = live[conn]
        # Several jobs per message: cheap programs would otherwise spend their time in pipe round trips.
        size = max(1, min(32, len(pending) // (4 * n_workers)))
        chunk = [pending.pop() for _ in range(min(size, len(pending)))]
        state["jobs"] = chunk
        state["deadline"] = time.monotonic() + budget(chunk[0]) if chunk else None
        # Each task's grids cross the pipe once per worker; later jobs of the task refer to them.
        wire = []
        for job in chunk:
            if job[3] in state["tasks"]:
                job = (*job[:4], None, job[5])
            state["tasks"].add(job[3])
            wire.append(job)
        conn.send(wire or None)

    def record(res: ProgramResult, job) -> None:
        out[job[0]] = res
        on_result(res)

    def retire(conn, status: str, why: str) -> None:
        """Drop a dead or killed worker: its current job gets ``status``, the rest of its chunk goes back."""
        state = live.pop(conn)
        if state["jobs"]:
            head, rest = state["jobs"][0], state["jobs"][1:]
            record(_lost_result(head, limit, status, why), head)
            pending.extend(reversed(rest))
        if pending:
            spawn()

    for _ in range(n_workers):
        spawn()
    try:
        while len(out) < len(jobs):
            for conn in mp_wait(list(live), timeout=0.5):
                state = live[conn]
                try:
                    kind, payload = conn.recv()
                except (EOFError, OSError):
                    if not state["ready"]:
                        failed_starts[0] += 1
                        if failed_starts[0] >= 3:
                            raise ArcscopeError(
                                f"worker processes ({start_method!r} start) keep dying before they are ready; "
                                "a script that calls run_programs must guard it with "
                                "`if __name__ == '__main__':`, or use engine='sequential'"
                            ) from None
                    # The worker died (killed by the OS, a crash in user code): its job counts as raised.
                    state["proc"].join(timeout=1)
                    retire(conn, "raised", "worker process died")
                    continue
                if kind == "error":
                    raise ProgramError(payload)
                state["ready"] = True
                if kind == "done":
                    job_id, result, prof = payload
                    head = state["jobs"].pop(0)
                    assert head[0] == job_id
                    _merge_profiles(prof_total, prof)
                    record(result, head)
                    if state["jobs"]:
                        state["deadline"] = time.monotonic() + budget(state["jobs"][0])
                        continue
                if pending:
                    give(conn)
                else:
                    state["jobs"], state["deadline"] = [], None
            now = time.monotonic()
            for conn, state in list(live.items()):
                if state["jobs"] and state["deadline"] is not None and now > state["deadline"]:
                    state["proc"].kill()
                    state["proc"].join(timeout=5)
                    retire(conn, "timeout", f"no result within {limit:g} s (worker killed)")
            if not live and len(out) < len(jobs):  # pragma: no cover - every worker failed to start
                spawn()
    finally:
        for conn in live:
            try:
                conn.send(None)
            except (BrokenPipeError, OSError):
                pass
        for state in live.values():
            state["proc"].join(timeout=2)
            if state["proc"].is_alive():
                state["proc"].kill()
    return out, prof_total


_RAY_LOADED: dict[str, _Loaded] = {}


def _set_order(order: str) -> None:
    """Put ``objects`` of this (worker) process in the run's order mode."""
    from arcscope.dsl.fast import set_object_order

    set_object_order(order)


def _ray_chunk(sources, entry, limit, profile, chunk, order):
    """Run a chunk of jobs in a Ray worker (programs loaded once per worker process).

    A generator, run as a Ray streaming task: it yields None once the programs are loaded, then each job's
    ``(job id, result, profile)`` as soon as the job is done, so the driver holds every job to its own deadline
    (as the process engine does) and knows which job a killed worker was stuck in.
    """
    key = hashlib.sha1(repr([(s.name, s.text) for s in sources] + [entry]).encode()).hexdigest()
    loaded = _RAY_LOADED.get(key)
    if loaded is None:
        loaded = _RAY_LOADED[key] = _Loaded(sources, entry)
    _set_order(order)
    yield None
    for job in chunk:
        yield (job[0], *loaded.run(job, limit, profile))


def _run_ray(sources, entry, jobs, limit, profile, workers, on_result, address, order):
    """Run the jobs as Ray tasks of up to 16 jobs each, with the process engine's hard time limit.

    Each task streams its results back one job at a time. From the moment a task reports that it has loaded
    the programs, the job it is on has ``_hard_budget`` seconds (the job's whole limit plus a grace period,
    counted afresh at each result; a task still queued has no deadline). A task past its deadline is
    cancelled with ``force=True``, which kills its worker process: the job it was on is recorded as a
    timeout, the rest of its chunk goes back to the queue. A task whose worker dies (killed by the OS, a crash
    in C code, ``sys.exit`` in a program) may have lost results it had already sent, so which job killed it is
    not known: its unrecorded jobs go back to the queue one job per task, and a one-job task whose worker
    dies records its job as ``raised`` ("worker process died"). Tasks are never retried by Ray itself.
    """
    try:
        import ray
    except ImportError:
        raise ArcscopeError("--engine ray needs the ray package: pip install 'ray>=2.9'") from None
    from collections import deque

    started = False
    if not ray.is_initialized():
        kw = {"address": address} if address else {"num_cpus": workers, "include_dashboard": False}
        ray.init(log_to_driver=False, configure_logging=False, **kw)
        started = True
    live: dict[Any, dict] = {}
    try:
        _Loaded(sources, entry)  # fail here, with the file's error, rather than in every Ray task
        remote = ray.remote(num_cpus=1, max_retries=0, num_returns="streaming")(_ray_chunk)
        sources_ref = ray.put(list(sources))
        # Tasks in flight: two per CPU, so a worker that finishes a chunk finds the next one queued. Queued
        # tasks have no deadline yet, so queueing more than can run costs nothing but memory.
        cpus = workers if started else int(ray.cluster_resources().get("CPU", 0))
        in_flight = 2 * max(1, workers, cpus)
        size = max(1, min(16, len(jobs) // (4 * max(workers, 1)) or 1))
        queue = deque(jobs[k : k + size] for k in range(0, len(jobs), size))
        out: dict[int, ProgramResult] = {}
        prof_total: dict = {}

        def submit() -> None:
            while queue and len(live) < in_flight:
                chunk = queue.popleft()
                gen = remote.remote(sources_ref, entry, limit, profile, chunk, order)
                live[gen] = {"jobs": list(chunk), "deadline": None}

        def record(res: ProgramResult, job) -> None:
            assert job[0] not in out, "a job's result is recorded once"
            out[job[0]] = res
            on_result(res)

        def retire(gen, status: str, why: str) -> None:
            state = live.pop(gen)
            left = state["jobs"]
            if not left:
                return
            if status == "timeout":  # the worker was alive and had sent every result before this job's
                record(_lost_result(left[0], limit, status, why), left[0])
                if left[1:]:
                    queue.appendleft(left[1:])
            elif len(left) == 1:
                record(_lost_result(left[0], limit, status, why), left[0])
            else:
                queue.extendleft([job] for job in reversed(left))

        def take(gen) -> None:
            """Take the next item a task streamed back (its 'loaded' signal, a result, its end or its death)."""
            state = live[gen]
            try:
                item = ray.get(next(gen))
            except StopIteration:
                if state["jobs"]:  # pragma: no cover - a task ends only after all of its jobs
                    retire(gen, "raised", "worker process died")
                else:
                    live.pop(gen)
                return
            except ray.exceptions.RayTaskError as e:
                cause = getattr(e, "cause", None)
                if isinstance(cause, ProgramError):
                    raise ProgramError(str(cause)) from None
                if isinstance(cause, Exception) and not isinstance(cause, ray.exceptions.RayError):
                    raise  # the runner's own code failed in the worker, not a program: a real error
                # A program raised a BaseException that ends the worker (SystemExit, KeyboardInterrupt, ...).
                retire(gen, "raised", "worker process died")
                return
            except ray.exceptions.RayError:  # WorkerCrashedError, OutOfMemoryError, a lost node, ...
                retire(gen, "raised", "worker process died")
                return
            if item is not None:
                job_id, result, prof = item
                head = state["jobs"].pop(0)
                assert head[0] == job_id
                _merge_profiles(prof_total, prof)
                record(result, head)
            jobs_left = state["jobs"]
            state["deadline"] = time.monotonic() + _hard_budget(jobs_left[0], limit) if jobs_left else None

        submit()
        while live:
            now = time.monotonic()
            deadlines = [s["deadline"] for s in live.values() if s["deadline"] is not None]
            timeout = min([1.0] + [max(0.0, d - now) for d in deadlines])
            ready, _ = ray.wait(list(live), num_returns=1, timeout=timeout)
            for gen in ready:
                take(gen)
            now = time.monotonic()
            for gen, state in list(live.items()):
                if state["deadline"] is None or now <= state["deadline"]:
                    continue
                if ray.wait([gen], num_returns=1, timeout=0)[0]:
                    take(gen)  # it answered just now
                    continue
                ray.cancel(gen, force=True)
                retire(gen, "timeout", f"no result within {limit:g} s (worker killed)")
            submit()
        assert len(out) == len(jobs)
        return out, prof_total
    finally:
        for gen in live:  # left over by an error or Ctrl-C: stop them, on a cluster too
            try:
                ray.cancel(gen, force=True)
            except Exception:  # noqa: BLE001 - best effort while unwinding
                pass
        if started:
            ray.shutdown()


def _start_method() -> str:
    """``fork`` (fast start) on Linux while no thread pool that fork would break is running, else ``spawn``."""
    if sys.platform != "linux" or "torch" in sys.modules or "ray" in sys.modules:
        return "spawn"
    from arcscope.dsl import _kernels

    if getattr(_kernels.label_batch, "signatures", None):  # numba's parallel thread pool may be up
        return "spawn"
    return "fork"


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
    callback = on_result or (lambda r: None)
    t0 = time.perf_counter()
    saved = set_object_order(order)  # this process's mode; forked workers start from it too
    try:
        if not jobs:
            results_by_id, prof = {}, {}
        elif engine == "sequential":
            results_by_id, prof = _run_sequential(sources, entry, jobs, time_limit, profile, callback)
        elif engine == "process":
            results_by_id, prof = _run_processes(
                sources, entry, jobs, time_limit, profile, workers, callback, start_method, order
            )
        else:
            results_by_id, prof = _run_ray(
                sources, entry, jobs, time_limit, profile, workers, callback, ray_address, order
            )
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
