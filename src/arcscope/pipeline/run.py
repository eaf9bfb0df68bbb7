"""``arcscope run``: tasks -> prompts -> capture + predictions -> score -> report.

The engine writes the activation store and per-item predictions (resumable); this module turns predictions
into attempts (voting over augmentations), scores them with the official metric and writes the run's
files next to the store: ``predictions.jsonl``, ``submission.json``, ``score.json``, ``report.html``.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np

from arcscope.engine.job import JobConfig
from arcscope.engine.local import JobResult, LocalRunner
from arcscope.files import atomic_write_json, atomic_write_text
from arcscope.progress import ProgressFn


@dataclass
class RunSummary:
    """The outcome of ``arcscope run``."""

    job: JobResult
    score: Any
    """arcscope.tasks.scoring.ScoreReport (None when no test output is known)."""
    attempts: dict[str, list[list[np.ndarray]]]
    files: dict[str, str]


def attempts_from_predictions(predictions: dict[str, dict[str, Any]], max_attempts: int = 2):
    """Vote over augmentations: per task and test index, rank inverted grids by votes, then mean log-prob."""
    from arcscope.tasks.scoring import vote

    groups: dict[tuple[str, int], list[tuple[str, np.ndarray, float]]] = defaultdict(list)
    n_tests: dict[str, int] = defaultdict(int)
    for p in predictions.values():
        key = (p["task_id"], int(p["test_index"]))
        n_tests[p["task_id"]] = max(n_tests[p["task_id"]], key[1] + 1)
        if p.get("grid") is not None:
            # grids are stored already inverted to the original frame, so vote with the identity
            groups[key].append(
                ("id", np.asarray(p["grid"], dtype=np.uint8), float(p.get("mean_logprob", 0.0)))
            )
    out: dict[str, list[list[np.ndarray]]] = {}
    for task_id, n in n_tests.items():
        per_test = []
        for ti in range(n):
            ranked = vote(groups.get((task_id, ti), []))
            per_test.append([r.grid for r in ranked[:max_attempts]])
        out[task_id] = per_test
    return out


def run(
    cfg: JobConfig,
    *,
    progress: ProgressFn | None = None,
    resume: bool = True,
    overwrite: bool = False,
    storage_options: dict | None = None,
    report: bool = True,
) -> RunSummary:
    """Run the main job end to end (on ``cfg.runner``) and write its files into ``cfg.out``."""
    import fsspec

    from arcscope.tasks import load
    from arcscope.tasks.scoring import score, submission_dict

    cfg.validate()
    tasks = load(cfg.tasks)
    kw = dict(
        storage_options=storage_options,
        progress=progress,
        resume=resume,
        overwrite=overwrite,
        tasks=tasks,
    )
    if cfg.runner == "ray":
        from arcscope.engine.ray_runner import RayRunner

        job_runner: LocalRunner = RayRunner(cfg, **kw)
    else:
        job_runner = LocalRunner(cfg, **kw)
    result = job_runner.run()
    attempts = attempts_from_predictions(result.predictions)
    scored = [t for t in tasks if t.id in attempts]
    report_obj = None
    if scored and all(t.has_test_outputs for t in scored):
        from arcscope.tasks import TaskSet

        report_obj = score(TaskSet(scored, name=cfg.tasks), attempts)
    fs, root = fsspec.core.url_to_fs(cfg.out, **(storage_options or {}))
    root = root.rstrip("/")
    files = {}
    preds_sorted = sorted(result.predictions.values(), key=lambda p: p["sample"])
    files["predictions"] = f"{root}/predictions.jsonl"
    atomic_write_text(files["predictions"], "".join(json.dumps(p) + "\n" for p in preds_sorted), fs=fs)
    files["submission"] = f"{root}/submission.json"
    atomic_write_json(files["submission"], submission_dict(attempts), fs=fs)
    if report_obj is not None:
        files["score"] = f"{root}/score.json"
        payload = report_obj.to_dict()
        payload["mode"] = cfg.mode
        payload["teacher_forced"] = cfg.mode == "prefill"
        atomic_write_json(files["score"], payload, indent=2, fs=fs)
    if report:
        from arcscope.report.run_report import render_run_report

        files["report"] = f"{root}/report.html"
        html = render_run_report(
            cfg,
            result,
            report_obj,
            attempts,
            [t for t in tasks if t.id in attempts],
            storage_options=storage_options,
        )
        atomic_write_text(files["report"], html, fs=fs)
    return RunSummary(result, report_obj, attempts, files)
