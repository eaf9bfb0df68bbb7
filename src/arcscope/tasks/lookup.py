"""Grids by (task id, augmentation name, role, pair): how store rows find the grid their cell lies in.

A store's index names each row's task, augmentation, role and pair; :class:`GridLookup` turns that back into
the grid the prompt showed (the augmentation applied on demand and cached). SAE dashboards and probes use it
to know a cell's colour.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from arcscope.errors import ArcscopeError


class GridLookup:
    """Grids of a task set by (task id, augmentation name, role, pair), augmented on demand and cached."""

    def __init__(self, tasks: Any):
        self.tasks = {t.id: t for t in tasks}
        self._aug: dict[tuple[str, str], Any] = {}

    def task(self, task_id: str, augmentation: str | None) -> Any | None:
        """The task as its prompt showed it (augmentation applied); None for an unknown task or augmentation."""
        key = (task_id, augmentation or "id")
        if key not in self._aug:
            from arcscope.tasks.augment import parse_augmentation

            base = self.tasks.get(task_id)
            try:
                self._aug[key] = None if base is None else parse_augmentation(key[1]).apply(base)
            except ArcscopeError:  # an augmentation this task cannot take: its rows have no known grid
                self._aug[key] = None
        return self._aug[key]

    def grid(
        self, task_id: str, augmentation: str | None, role: str, pair: int, *, output: bool = False
    ) -> np.ndarray | None:
        """The grid a cell of (role, pair) lies in, or with ``output`` the output grid of an input's pair;
        None when there is none (unknown task, pair out of range, unknown test output, other roles)."""
        t = self.task(task_id, augmentation)
        if t is None or pair is None or pair < 0:
            return None
        if output:
            which = {"train_input": ("train", "output"), "test_input": ("test", "output")}
        else:
            which = {
                "train_input": ("train", "input"),
                "train_output": ("train", "output"),
                "test_input": ("test", "input"),
                "answer": ("test", "output"),
            }
        if role not in which:
            return None
        part, side = which[role]
        pairs = t.train if part == "train" else t.test
        if pair >= len(pairs):
            return None
        g = getattr(pairs[pair], side)
        return None if g is None else np.asarray(g)
