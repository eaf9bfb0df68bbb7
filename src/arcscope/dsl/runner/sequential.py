"""The sequential engine: every job in this process, one after another (the reference the others must match)."""

from __future__ import annotations

from arcscope.dsl.runner.job import EngineResults, RunPlan, _Loaded
from arcscope.dsl.runner.profiling import _merge_profiles


def run_sequential(plan: RunPlan) -> EngineResults:
    """Run the plan's jobs here, in order."""
    sources, entry, jobs, limit, profile, _order, on_result = plan
    loaded = _Loaded(sources, entry)
    out, prof_total = {}, {}
    for job in jobs:
        result, prof = loaded.run(job, limit, profile)
        _merge_profiles(prof_total, prof)
        out[job[0]] = result
        on_result(result)
    return out, prof_total
