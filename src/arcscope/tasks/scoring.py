"""The official ARC metric, pass@k, voting over augmentations, and Kaggle ``submission.json`` files.

The ARC Prize (Kaggle) metric: a task test output counts as solved when any of the first ``max_attempts``
(2) attempts equals it exactly; a task scores the fraction of its test outputs solved; the final score is the
mean of the task scores over all tasks (the arc-agi-benchmarking harness computes it the same way). A task
with no prediction scores 0. :func:`score` reports that figure (``ScoreReport.score``) and, beside it, the
mean over test outputs, the all-or-nothing task accuracy and pass@k for several k.

Predictions are ``{task_id: [attempts for test 0, attempts for test 1, ...]}`` where each entry is a list of
grids ranked best first. ``None`` stands for an attempt that produced no grid (it never matches).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from arcscope.errors import SourceError, TaskFormatError
from arcscope.files import atomic_write_text
from arcscope.tasks.augment import Augmentation, parse_augmentation
from arcscope.tasks.core import Grid, Task, TaskSet, as_grid, grid_to_list, grids_equal

Predictions = dict[str, list[list[Grid]]]
"""Per task id, per test input, the attempts ranked best first."""

PLACEHOLDER: list[list[int]] = [[0]]
"""What :func:`submission_dict` writes for a test input with no attempt at all (Kaggle needs a grid)."""

__all__ = [
    "Predictions",
    "PLACEHOLDER",
    "TaskScore",
    "ScoreReport",
    "score",
    "pass_at_k",
    "Voted",
    "vote",
    "predictions_from_votes",
    "submission_dict",
    "write_submission",
    "read_submission",
]


@dataclass
class TaskScore:
    """How one task fared: per scored test output, whether it was solved and at which rank."""

    task_id: str
    correct: list[bool] = field(default_factory=list)
    """Per scored test output: solved within ``max_attempts``."""
    rank: list[int | None] = field(default_factory=list)
    """Per scored test output: 1-based rank of the first correct attempt among all given, None if none."""
    test_indices: list[int] = field(default_factory=list)
    """The test indices scored (those with a known output), aligned with ``correct`` and ``rank``."""
    missing: list[int] = field(default_factory=list)
    """Scored test indices with no attempt at all."""
    extra: int = 0
    """Predicted test entries beyond the task's test inputs (ignored)."""

    @property
    def score(self) -> float:
        """Fraction of the scored test outputs solved (the official per-task score)."""
        return sum(self.correct) / len(self.correct) if self.correct else 0.0

    @property
    def solved(self) -> bool:
        """True when every scored test output is solved."""
        return bool(self.correct) and all(self.correct)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {**asdict(self), "score": self.score, "solved": self.solved}


@dataclass
class ScoreReport:
    """The figures for a prediction set against a task set, with per-task details."""

    score: float
    """The official ARC Prize figure: mean over tasks of the fraction of test outputs solved."""
    output_accuracy: float
    """Fraction of all test outputs solved (each output weighs the same)."""
    task_accuracy: float
    """Fraction of tasks with every test output solved (all-or-nothing)."""
    pass_at: dict[int, float]
    """pass@k per k: like ``score`` but counting the first k ranked attempts."""
    max_attempts: int
    n_tasks: int
    """Tasks scored (those with at least one known test output)."""
    n_outputs: int
    """Test outputs scored."""
    n_correct: int
    """Test outputs solved."""
    n_solved: int
    """Tasks with every test output solved."""
    n_missing_tasks: int
    """Scored tasks with no prediction at all."""
    n_missing_outputs: int
    """Scored test outputs with no attempt (including those of missing tasks)."""
    n_extra_predictions: int
    """Predicted test entries beyond a task's test inputs (ignored)."""
    unknown_tasks: list[str]
    """Predicted task ids that are not in the task set (ignored)."""
    unanswered_tasks: list[str]
    """Tasks left out of the figures because none of their test outputs is known."""
    tasks: list[TaskScore]

    def to_dict(self, details: bool = True) -> dict[str, Any]:
        """A JSON-ready dict (``details`` adds the per-task entries)."""
        d: dict[str, Any] = {
            "score": self.score,
            "output_accuracy": self.output_accuracy,
            "task_accuracy": self.task_accuracy,
            "pass_at_k": {str(k): v for k, v in self.pass_at.items()},
            "max_attempts": self.max_attempts,
            "n_tasks": self.n_tasks,
            "n_outputs": self.n_outputs,
            "n_correct": self.n_correct,
            "n_solved": self.n_solved,
            "n_missing_tasks": self.n_missing_tasks,
            "n_missing_outputs": self.n_missing_outputs,
            "n_extra_predictions": self.n_extra_predictions,
            "unknown_tasks": list(self.unknown_tasks),
            "unanswered_tasks": list(self.unanswered_tasks),
        }
        if details:
            d["tasks"] = [t.to_dict() for t in self.tasks]
        return d


def _attempt(obj: Any, task_id: str, where: str) -> Grid | None:
    if obj is None:
        return None
    return as_grid(obj, source="predictions", task_id=task_id, where=where)


def _score_task(task: Task, entries: Sequence[Sequence[Any]] | None, max_attempts: int) -> TaskScore:
    ts = TaskScore(task.id)
    entries = list(entries) if entries is not None else []
    ts.extra = max(0, len(entries) - len(task.test))
    for i, pair in enumerate(task.test):
        if pair.output is None:
            continue
        attempts = list(entries[i]) if i < len(entries) and entries[i] is not None else []
        rank = None
        for r, a in enumerate(attempts, start=1):
            if grids_equal(_attempt(a, task.id, f"test[{i}] attempt {r}"), pair.output):
                rank = r
                break
        ts.test_indices.append(i)
        ts.rank.append(rank)
        ts.correct.append(rank is not None and rank <= max_attempts)
        if not any(a is not None for a in attempts):
            ts.missing.append(i)
    return ts


def _mean(xs: Sequence[float]) -> float:
    return float(sum(xs) / len(xs)) if xs else 0.0


def _pass_at(task_scores: Sequence[TaskScore], k: int) -> float:
    return _mean([_mean([r is not None and r <= k for r in t.rank]) for t in task_scores])


def score(
    tasks: TaskSet | Iterable[Task],
    predictions: Mapping[str, Sequence[Sequence[Any]]],
    max_attempts: int = 2,
    *,
    ks: Sequence[int] = (1, 2),
    only_predicted: bool = False,
) -> ScoreReport:
    """Score ``predictions`` against the known test outputs of ``tasks`` (official metric first).

    Tasks without a prediction score 0 unless ``only_predicted`` restricts the figures to predicted tasks.
    Predicted ids missing from ``tasks`` and tasks with no known test output are listed, not scored.
    """
    if max_attempts < 1:
        raise ValueError(f"max_attempts must be >= 1, got {max_attempts}")
    task_list = list(tasks)
    known_ids = {t.id for t in task_list}
    scored: list[TaskScore] = []
    unanswered: list[str] = []
    n_missing_tasks = 0
    for task in task_list:
        if all(p.output is None for p in task.test):
            unanswered.append(task.id)
            continue
        entries = predictions.get(task.id)
        if entries is None:
            if only_predicted:
                continue
            n_missing_tasks += 1
        scored.append(_score_task(task, entries, max_attempts))
    n_outputs = sum(len(t.correct) for t in scored)
    n_correct = sum(sum(t.correct) for t in scored)
    n_solved = sum(t.solved for t in scored)
    return ScoreReport(
        score=_mean([t.score for t in scored]),
        output_accuracy=n_correct / n_outputs if n_outputs else 0.0,
        task_accuracy=n_solved / len(scored) if scored else 0.0,
        pass_at={int(k): _pass_at(scored, int(k)) for k in ks},
        max_attempts=max_attempts,
        n_tasks=len(scored),
        n_outputs=n_outputs,
        n_correct=n_correct,
        n_solved=n_solved,
        n_missing_tasks=n_missing_tasks,
        n_missing_outputs=sum(len(t.missing) for t in scored),
        n_extra_predictions=sum(t.extra for t in scored),
        unknown_tasks=sorted(tid for tid in predictions if tid not in known_ids),
        unanswered_tasks=unanswered,
        tasks=scored,
    )


def pass_at_k(
    tasks: TaskSet | Iterable[Task],
    predictions: Mapping[str, Sequence[Sequence[Any]]],
    ks: Sequence[int] = (1, 2),
) -> dict[int, float]:
    """pass@k for each k from ranked attempts: the official per-task mean, counting the first k attempts."""
    return score(tasks, predictions, max_attempts=1, ks=ks).pass_at


# ---------------------------------------------------------------------------------------------- voting


@dataclass(eq=False)
class Voted:
    """One distinct grid (in the original frame) with the candidates that voted for it."""

    grid: Grid
    votes: int
    score: float | None
    """Mean of the candidates' scores (higher is better), None when no candidate had one."""
    augmentations: list[str]
    """Canonical names of the augmentations whose prediction this was, in the order given."""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "grid": grid_to_list(self.grid),
            "votes": self.votes,
            "score": self.score,
            "augmentations": list(self.augmentations),
        }


@lru_cache(maxsize=4096)
def _parse_cached(name: str) -> Augmentation:
    return parse_augmentation(name)


def vote(candidates: Iterable[Sequence[Any]], *, top: int | None = None) -> list[Voted]:
    """Rank the distinct predictions for one test input by votes, then mean score, then first seen.

    Each candidate is ``(augmentation or its name, grid predicted in the augmented frame[, score])``; the grid
    may be None (no parse) and is then skipped. Grids are mapped back to the original frame before they are
    compared, so ``result[0]`` and ``result[1]`` are attempt_1 and attempt_2.
    """
    groups: dict[tuple[tuple[int, int], bytes], dict[str, Any]] = {}
    for n, cand in enumerate(candidates):
        if len(cand) not in (2, 3):
            raise ValueError(f"candidate {n}: expected (augmentation, grid) or (augmentation, grid, score)")
        aug, grid = cand[0], cand[1]
        cscore = cand[2] if len(cand) == 3 else None
        if grid is None:
            continue
        aug = _parse_cached(aug) if isinstance(aug, str) else aug
        original = aug.invert_grid(as_grid(grid, source="candidates", where=f"candidate {n}"))
        key = (original.shape, original.tobytes())
        g = groups.setdefault(key, {"grid": original, "votes": 0, "scores": [], "augs": [], "first": n})
        g["votes"] += 1
        g["augs"].append(aug.canonical().name)
        if cscore is not None and np.isfinite(cscore):
            g["scores"].append(float(cscore))
    ranked = [
        Voted(g["grid"], g["votes"], _mean(g["scores"]) if g["scores"] else None, g["augs"])
        for g in sorted(
            groups.values(),
            key=lambda g: (
                -g["votes"],
                -_mean(g["scores"]) if g["scores"] else float("inf"),
                g["first"],
            ),
        )
    ]
    return ranked[:top] if top is not None else ranked


def predictions_from_votes(votes: Mapping[str, Sequence[Sequence[Voted]]], attempts: int = 2) -> Predictions:
    """Predictions (the top ``attempts`` grids per test input) from per-task, per-test vote rankings."""
    return {
        tid: [[v.grid for v in ranked[:attempts]] for ranked in per_test] for tid, per_test in votes.items()
    }


# ---------------------------------------------------------------------------------------- submissions


def submission_dict(predictions: Mapping[str, Sequence[Sequence[Any]]], attempts: int = 2) -> dict[str, Any]:
    """The Kaggle submission dict: ``{task_id: [{"attempt_1": grid, "attempt_2": grid}, ...]}``.

    Each test input gets exactly ``attempts`` attempts: extra ones are dropped, a missing one repeats the
    last given (which cannot change the score), and a test input with none gets :data:`PLACEHOLDER`.
    """
    if attempts < 1:
        raise ValueError(f"attempts must be >= 1, got {attempts}")
    out: dict[str, Any] = {}
    for tid, per_test in predictions.items():
        entries = []
        for i, ranked in enumerate(per_test):
            grids = [
                grid_to_list(as_grid(a, source="predictions", task_id=tid, where=f"test[{i}] attempt {r}"))
                for r, a in enumerate(ranked or [], start=1)
                if a is not None
            ][:attempts]
            if not grids:
                grids = [PLACEHOLDER]
            grids += [grids[-1]] * (attempts - len(grids))
            entries.append({f"attempt_{r}": g for r, g in enumerate(grids, start=1)})
        out[str(tid)] = entries
    return out


def write_submission(
    path: str | os.PathLike[str], predictions: Mapping[str, Sequence[Sequence[Any]]], attempts: int = 2
) -> Path:
    """Write a Kaggle ``submission.json`` atomically (a temporary file renamed into place)."""
    path = Path(path)
    text = json.dumps(submission_dict(predictions, attempts), separators=(",", ":"))
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, text)
    return path


def read_submission(path: str | os.PathLike[str]) -> Predictions:
    """Read and validate a Kaggle ``submission.json`` into predictions (attempts in attempt order)."""
    src = str(path)
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise SourceError(f"cannot read submission {src}: {e.strerror or e}") from None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise TaskFormatError(f"not valid JSON ({e.msg})", source=src, line=e.lineno) from None
    if not isinstance(obj, dict):
        raise TaskFormatError(
            f"a submission is a JSON object {{task_id: [...]}}, got {type(obj).__name__}", source=src
        )
    out: Predictions = {}
    for tid, entries in obj.items():

        def fail(rule: str, where: str | None = None, _tid: str = tid) -> TaskFormatError:
            return TaskFormatError(rule, source=src, task_id=_tid, where=where)

        if not isinstance(entries, list) or not entries:
            got = "an empty list" if isinstance(entries, list) else type(entries).__name__
            raise fail(f"a task maps to a list with one object per test input, got {got}")
        per_test: list[list[Grid]] = []
        for i, entry in enumerate(entries):
            where = f"[{i}]"
            if not isinstance(entry, dict):
                raise fail(
                    f"each test entry is an object {{'attempt_1': grid, 'attempt_2': grid}}, "
                    f"got {type(entry).__name__}",
                    where,
                )
            numbered: list[tuple[int, Any]] = []
            for key, value in entry.items():
                num = key[len("attempt_") :] if isinstance(key, str) and key.startswith("attempt_") else ""
                if not num.isdigit() or int(num) < 1:
                    raise fail(f"unexpected key {key!r}: keys must be attempt_1, attempt_2, ...", where)
                numbered.append((int(num), value))
            if "attempt_1" not in entry:
                raise fail("missing key 'attempt_1'", where)
            numbered.sort(key=lambda kv: kv[0])
            per_test.append(
                [as_grid(v, source=src, task_id=tid, where=f"{where}.attempt_{n}") for n, v in numbered]
            )
        out[tid] = per_test
    return out
