"""Contamination report: generated tasks (or pairs) that equal an ARC-AGI-1/2 task (or pair) up to symmetry.

Equality is the datasets dedupe's (:func:`arcscope.datasets.canonical.canonical_hash`): the same up to a
dihedral transform of every grid, a permutation of the colours and, for whole tasks, the order of the train
pairs. Two levels are counted:

* **task**: a generated task equal to an ARC task;
* **pair**: a generated task with some pair (train or test) equal to a pair of an ARC task, which leaks an
  ARC answer into training even when the tasks differ.

Canonical hashes are slow-ish (8 transforms, pair orders), so each item first gets a cheap signature that
the same symmetries leave unchanged (sorted grid sides, sorted colour counts); a hash is computed only where
a generated signature meets an ARC one, and the ARC side's hashes are cached.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np

from arcscope.datasets.canonical import canonical_hash
from arcscope.tasks.core import Pair, Task

ARC_SOURCES = ("arc1:training", "arc1:evaluation", "arc2:training", "arc2:evaluation")
"""The bundled ARC sets every generated set is checked against."""


def _grid_sig(g: np.ndarray | None) -> tuple:
    if g is None:
        return ()
    counts = np.bincount(np.asarray(g, dtype=np.uint8).ravel(), minlength=10)
    return (tuple(sorted(g.shape)), tuple(sorted(int(c) for c in counts if c)))


def _pair_sig(p: Pair) -> tuple:
    return (_grid_sig(p.input), _grid_sig(p.output))


def _task_sig(t: Task) -> tuple:
    return (len(t.train), len(t.test), tuple(sorted(map(_pair_sig, t.train))), tuple(map(_pair_sig, t.test)))


def _task_hash(t: Task) -> str:
    return canonical_hash(t, "all", pair_order=True)


def _pair_hash(p: Pair) -> str:
    return canonical_hash(Task("pair", (p,), ()), "all")


class ArcIndex:
    """Reference tasks indexed for matching up to symmetry (see the module docstring)."""

    def __init__(self, tasks: Iterable[tuple[str, Task]]):
        self._tasks: dict[tuple, list[tuple[str, Task]]] = defaultdict(list)
        self._pairs: dict[tuple, list[tuple[str, Pair]]] = defaultdict(list)
        self._task_hashes: dict[tuple, dict[str, str]] = {}
        self._pair_hashes: dict[tuple, dict[str, str]] = {}
        self.size = 0
        for name, t in tasks:
            self.size += 1
            self._tasks[_task_sig(t)].append((name, t))
            for p in t.pairs:
                self._pairs[_pair_sig(p)].append((name, p))

    @classmethod
    def from_sources(cls, sources: Iterable[str] = ARC_SOURCES) -> ArcIndex:
        """The index of every task of ``sources`` (ids named ``SOURCE/ID``)."""
        from arcscope.tasks.sources import iter_tasks

        return cls((f"{src}/{t.id}", t) for src in sources for t in iter_tasks(src))

    def _hashes(self, cache: dict, sig: tuple, items: list, hash_fn) -> dict[str, str]:
        if sig not in cache:
            table: dict[str, str] = {}
            for name, item in items:
                table.setdefault(hash_fn(item), name)
            cache[sig] = table
        return cache[sig]

    def task_match(self, task: Task) -> str | None:
        """The reference task equal to ``task`` up to symmetry, or None."""
        sig = _task_sig(task)
        items = self._tasks.get(sig)
        if not items:
            return None
        return self._hashes(self._task_hashes, sig, items, _task_hash).get(_task_hash(task))

    def pair_match(self, task: Task) -> str | None:
        """A reference task holding a pair equal to one of ``task``'s pairs up to symmetry, or None."""
        for p in task.pairs:
            sig = _pair_sig(p)
            items = self._pairs.get(sig)
            if not items:
                continue
            hit = self._hashes(self._pair_hashes, sig, items, _pair_hash).get(_pair_hash(p))
            if hit is not None:
                return hit
        return None


@lru_cache(maxsize=2)
def arc_index(sources: tuple[str, ...] = ARC_SOURCES) -> ArcIndex:
    """The (cached) index of the bundled ARC-AGI-1 and -2 sets."""
    return ArcIndex.from_sources(sources)


@dataclass
class ContaminationReport:
    """What a contamination check found: generated tasks equal to ARC tasks, or holding ARC pairs."""

    checked: int = 0
    """Generated tasks checked."""
    task_matches: list[tuple[str, str]] = field(default_factory=list)
    """(generated id, ARC id) for tasks equal to an ARC task up to symmetry."""
    pair_matches: list[tuple[str, str]] = field(default_factory=list)
    """(generated id, ARC id) for tasks (not whole-task matches) with a pair equal to an ARC pair."""
    excluded: int = 0
    """Tasks left out because they matched (with ``exclude``)."""
    reference: int = 0
    """ARC tasks checked against."""

    @property
    def contaminated(self) -> int:
        """Tasks that match at either level."""
        return len(self.task_matches) + len(self.pair_matches)

    def summary(self) -> str:
        """One line: how many of how many, at which level, and what was excluded."""
        text = (
            f"{self.contaminated} of {self.checked} generated tasks match ARC-AGI-1/2 up to symmetry "
            f"({len(self.task_matches)} whole tasks, {len(self.pair_matches)} by a pair; "
            f"{self.reference} ARC tasks checked)"
        )
        return text + (f"; {self.excluded} excluded" if self.excluded else "")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able form."""
        return {
            "checked": self.checked,
            "contaminated": self.contaminated,
            "task_matches": [list(m) for m in self.task_matches],
            "pair_matches": [list(m) for m in self.pair_matches],
            "excluded": self.excluded,
            "reference": self.reference,
        }


def screen(
    tasks: Iterable[Task],
    report: ContaminationReport,
    *,
    exclude: bool = False,
    index: ArcIndex | None = None,
) -> Iterator[Task]:
    """Pass ``tasks`` through, counting ARC matches into ``report``; with ``exclude``, drop the matches."""
    index = index if index is not None else arc_index()
    report.reference = index.size
    for t in tasks:
        report.checked += 1
        hit = index.task_match(t)
        if hit is not None:
            report.task_matches.append((t.id, hit))
        else:
            hit = index.pair_match(t)
            if hit is not None:
                report.pair_matches.append((t.id, hit))
        if hit is not None and exclude:
            report.excluded += 1
            continue
        yield t


def contamination(tasks: Iterable[Task], index: ArcIndex | None = None) -> ContaminationReport:
    """Count the tasks of ``tasks`` that equal an ARC task, or hold an ARC pair, up to symmetry."""
    report = ContaminationReport()
    for _ in screen(tasks, report, index=index):
        pass
    return report


def exclude_arc(
    tasks: Iterable[Task], index: ArcIndex | None = None, report: ContaminationReport | None = None
) -> Iterator[Task]:
    """``tasks`` without those that equal an ARC task or hold an ARC pair up to symmetry."""
    return screen(tasks, report if report is not None else ContaminationReport(), exclude=True, index=index)


__all__ = [
    "ARC_SOURCES",
    "ArcIndex",
    "ContaminationReport",
    "arc_index",
    "contamination",
    "exclude_arc",
    "screen",
]
