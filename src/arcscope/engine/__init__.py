"""Capture jobs over many tasks: the job description, length-bucketed batches, resume, the local runner."""

from arcscope.engine.job import MODES, POSITIONS, JobConfig, JobConfigError, split_hooks
from arcscope.engine.local import JobResult, LocalRunner, run_job
from arcscope.engine.plan import Batch, Plan, WorkItem, build_plan, make_batches

__all__ = [
    "MODES",
    "POSITIONS",
    "JobConfig",
    "JobConfigError",
    "split_hooks",
    "JobResult",
    "LocalRunner",
    "run_job",
    "Batch",
    "Plan",
    "WorkItem",
    "build_plan",
    "make_batches",
]
