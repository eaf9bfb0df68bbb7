"""Grids by (task id, augmentation name, role, pair): how store rows find the grid their cell lies in.

A store's index names each row's task, augmentation, role and pair; :class:`GridLookup` turns that back into
the grid the prompt showed (the augmentation applied on demand and cached), and :meth:`GridLookup.cells` the
colour of every cell row. SAE dashboards and probes use it to know a cell's colour.
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

    def cells(self, index: Any, *, output: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Per row of a store index (a pyarrow table with task_id, augmentation, role, pair, row, col): the
        colour of its cell (int16; -1 where unknown: not a cell, no such grid, outside it) and whether the
        cell lies on its grid's border; with ``output``, of the same cell of its pair's output grid."""
        import pyarrow as pa
        import pyarrow.compute as pc

        n = index.num_rows
        colour = np.full(n, -1, dtype=np.int16)
        border = np.zeros(n, dtype=bool)
        if n == 0:
            return colour, border
        row = pc.fill_null(index["row"], -1).to_numpy().astype(np.int64)
        col = pc.fill_null(index["col"], -1).to_numpy().astype(np.int64)
        # One lookup per grid, not per row: rows are grouped by the key naming their grid.
        key = pc.binary_join_element_wise(
            pc.fill_null(index["task_id"], ""),
            pc.fill_null(index["augmentation"], "id"),
            pc.fill_null(index["role"], "none"),
            pc.fill_null(index["pair"].cast(pa.string()), "-1"),
            "\x1f",
        )
        enc = pc.dictionary_encode(key).combine_chunks()
        codes = enc.indices.to_numpy(zero_copy_only=False).astype(np.int64)
        order = np.argsort(codes, kind="stable")
        bounds = np.searchsorted(codes[order], np.arange(len(enc.dictionary) + 1))
        for g, k in enumerate(enc.dictionary.to_pylist()):
            rows_g = order[bounds[g] : bounds[g + 1]]
            rows_g = rows_g[(row[rows_g] >= 0) & (col[rows_g] >= 0)]
            if not len(rows_g):
                continue
            task_id, aug, role, pair = k.split("\x1f")
            grid = self.grid(task_id, aug, role, int(pair), output=output)
            if grid is None:
                continue
            h, w = grid.shape
            rr, cc = row[rows_g], col[rows_g]
            ok = (rr < h) & (cc < w)
            rr, cc, at = rr[ok], cc[ok], rows_g[ok]
            colour[at] = grid[rr, cc]
            border[at] = (rr == 0) | (cc == 0) | (rr == h - 1) | (cc == w - 1)
        return colour, border
