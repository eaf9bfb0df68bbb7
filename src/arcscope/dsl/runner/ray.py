"""The Ray engine: chunks of jobs as Ray streaming tasks, each job held to the process engine's deadline."""

from __future__ import annotations

import hashlib
import time
from typing import Any

from arcscope.dsl.runner.job import EngineResults, RunPlan, _hard_budget, _Loaded, _lost_result, _set_order
from arcscope.dsl.runner.load import ProgramError
from arcscope.dsl.runner.profiling import _merge_profiles
from arcscope.dsl.runner.results import ProgramResult
from arcscope.errors import ArcscopeError

_RAY_LOADED: dict[str, _Loaded] = {}


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


def run_ray(plan: RunPlan, workers: int, address: str | None) -> EngineResults:
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
    sources, entry, jobs, limit, profile, order, on_result = plan
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
