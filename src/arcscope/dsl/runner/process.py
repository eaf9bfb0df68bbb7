"""The process engine: a pool of worker processes fed chunks of jobs over pipes, each job held to a deadline.

A worker loads the programs once (or inherits them, forked) and answers job by job, so the parent knows
which job a worker is on; a worker past its job's hard budget is killed and the job recorded as a timeout,
and a worker that dies under a job records it as ``raised``. Either way the rest of its chunk is requeued.
"""

from __future__ import annotations

import multiprocessing as mp
import signal
import sys
import time
from multiprocessing.connection import wait as mp_wait
from typing import Any

from arcscope.dsl.runner.job import EngineResults, RunPlan, _hard_budget, _Loaded, _lost_result, _set_order
from arcscope.dsl.runner.load import ProgramError
from arcscope.dsl.runner.profiling import _merge_profiles
from arcscope.dsl.runner.results import ProgramResult
from arcscope.errors import ArcscopeError


def _start_method() -> str:
    """``fork`` (fast start) on Linux while no thread pool that fork would break is running, else ``spawn``."""
    if sys.platform != "linux" or "torch" in sys.modules or "ray" in sys.modules:
        return "spawn"
    from arcscope.dsl import _kernels

    if getattr(_kernels.label_batch, "signatures", None):  # numba's parallel thread pool may be up
        return "spawn"
    return "fork"


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


def run_processes(plan: RunPlan, workers: int, start_method: str) -> EngineResults:
    """Run the plan's jobs on up to ``workers`` processes started with ``start_method``."""
    sources, entry, jobs, limit, profile, order, on_result = plan
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
