"""Seeded building blocks for input samplers: sizes, colours, noise grids, shapes and their placement.

Samplers build inputs as numpy ``uint8`` arrays (background 0) from one ``numpy.random.Generator``; the
ground-truth programs then run on the arc-dsl form of the same grid. A helper that cannot honour the knobs
(an empty size range, too few colours) raises :class:`~arcscope.families.core.GenerationError`; one that
merely fails this time (no room left for a shape) returns None, and the caller draws again.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from arcscope.config import ConfigError
from arcscope.tasks.core import MAX_SIDE


class GenerationError(ConfigError):
    """A family cannot generate under the knobs asked (or an unknown family name); the message says why."""


BG = 0
"""The background colour of every family."""


def side_range(knobs, lo: int = 1, hi: int = MAX_SIDE) -> tuple[int, int]:
    """The input sides allowed by ``knobs`` and the family's own ``lo..hi``; raises when they do not meet."""
    a, b = max(knobs.min_side, lo), min(knobs.max_side, hi)
    if a > b:
        raise GenerationError(
            f"needs input sides in {lo}..{hi}, but the knobs allow {knobs.min_side}..{knobs.max_side}"
        )
    return a, b


def side(rng: np.random.Generator, knobs, lo: int = 1, hi: int = MAX_SIDE) -> int:
    """One input side, uniform over what ``knobs`` and ``lo..hi`` allow."""
    a, b = side_range(knobs, lo, hi)
    return int(rng.integers(a, b + 1))


def dims(rng: np.random.Generator, knobs, lo: int = 1, hi: int = MAX_SIDE) -> tuple[int, int]:
    """An input shape ``(h, w)``, each side drawn independently."""
    return side(rng, knobs, lo, hi), side(rng, knobs, lo, hi)


def count_range(knobs, lo: int = 1, hi: int = 30) -> tuple[int, int]:
    """The object counts allowed by ``knobs`` and the family's own ``lo..hi``."""
    a, b = max(knobs.min_objects, lo), min(knobs.max_objects, hi)
    if a > b:
        raise GenerationError(
            f"needs {lo}..{hi} objects, but the knobs allow {knobs.min_objects}..{knobs.max_objects}"
        )
    return a, b


def n_objects(rng: np.random.Generator, knobs, lo: int = 1, hi: int = 30) -> int:
    """A number of objects, uniform over what ``knobs`` and ``lo..hi`` allow."""
    a, b = count_range(knobs, lo, hi)
    return int(rng.integers(a, b + 1))


def colours(rng: np.random.Generator, knobs, k: int, exclude: Sequence[int] = ()) -> list[int]:
    """``k`` distinct foreground colours from the knobs' palette (minus ``exclude``), in random order."""
    pool = [c for c in knobs.colours if c not in exclude]
    if len(pool) < k:
        raise GenerationError(
            f"needs {k} colours besides {list(exclude)}, but the knobs allow {knobs.colours}"
        )
    return [int(c) for c in rng.permutation(pool)[:k]]


def colour(rng: np.random.Generator, knobs, exclude: Sequence[int] = ()) -> int:
    """One foreground colour from the knobs' palette, not in ``exclude``."""
    return colours(rng, knobs, 1, exclude)[0]


def noise_grid(
    rng: np.random.Generator, h: int, w: int, palette: Sequence[int], density: float | None = None
) -> np.ndarray:
    """A random grid: each cell a colour of ``palette`` with probability ``density`` (random when None), else 0."""
    if density is None:
        density = float(rng.uniform(0.3, 0.8))
    cells = np.asarray(palette, dtype=np.uint8)[rng.integers(0, len(palette), size=(h, w))]
    keep = rng.random((h, w)) < density
    return np.where(keep, cells, BG).astype(np.uint8)


def full_grid(rng: np.random.Generator, h: int, w: int, palette: Sequence[int]) -> np.ndarray:
    """A random grid with every cell a colour of ``palette`` (no background)."""
    return np.asarray(palette, dtype=np.uint8)[rng.integers(0, len(palette), size=(h, w))]


def blob(rng: np.random.Generator, size: int, max_h: int = 4, max_w: int = 4) -> np.ndarray | None:
    """A random 4-connected shape of exactly ``size`` cells inside ``max_h x max_w``, cropped to its box."""
    if size > max_h * max_w:
        return None
    mask = np.zeros((max_h, max_w), dtype=bool)
    start = (int(rng.integers(max_h)), int(rng.integers(max_w)))
    mask[start] = True
    cells = [start]
    while len(cells) < size:
        frontier = sorted(
            {
                (i + di, j + dj)
                for i, j in cells
                for di, dj in ((1, 0), (-1, 0), (0, 1), (0, -1))
                if 0 <= i + di < max_h and 0 <= j + dj < max_w and not mask[i + di, j + dj]
            }
        )
        if not frontier:
            return None
        nxt = frontier[int(rng.integers(len(frontier)))]
        mask[nxt] = True
        cells.append(nxt)
    rows, cols = np.nonzero(mask)
    return mask[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]


def rect(h: int, w: int) -> np.ndarray:
    """A filled ``h x w`` rectangle mask."""
    return np.ones((h, w), dtype=bool)


def frame(h: int, w: int) -> np.ndarray:
    """The outline of an ``h x w`` rectangle."""
    m = np.zeros((h, w), dtype=bool)
    m[0, :] = m[-1, :] = m[:, 0] = m[:, -1] = True
    return m


class Canvas:
    """A grid being drawn on, with the cells already claimed (shapes plus a gap around them)."""

    def __init__(self, h: int, w: int):
        self.grid = np.zeros((h, w), dtype=np.uint8)
        self.taken = np.zeros((h, w), dtype=bool)

    @property
    def shape(self) -> tuple[int, int]:
        """``(h, w)``."""
        return self.grid.shape  # type: ignore[return-value]

    def place(
        self,
        rng: np.random.Generator,
        mask: np.ndarray,
        colour: int,
        gap: int = 1,
        tries: int = 30,
        border: bool = True,
    ) -> tuple[int, int] | None:
        """Draw ``mask`` in ``colour`` where it and ``gap`` cells around it are free; its corner, or None.

        ``gap=1`` keeps shapes from touching, diagonally too, so every connectivity sees the same objects.
        ``border=False`` keeps the shape off the grid's edge.
        """
        h, w = self.shape
        mh, mw = mask.shape
        lo = 0 if border else 1
        hi_i, hi_j = h - mh - lo, w - mw - lo
        if hi_i < lo or hi_j < lo:
            return None
        for _ in range(tries):
            i, j = int(rng.integers(lo, hi_i + 1)), int(rng.integers(lo, hi_j + 1))
            a, b = max(0, i - gap), max(0, j - gap)
            region = self.taken[a : i + mh + gap, b : j + mw + gap]
            if region.any():
                continue
            self.grid[i : i + mh, j : j + mw][mask] = colour
            self.taken[a : i + mh + gap, b : j + mw + gap] = True
            return i, j
        return None

    def put(self, i: int, j: int, colour: int, gap: int = 1) -> bool:
        """Set one cell if it and ``gap`` cells around it are free."""
        a, b = max(0, i - gap), max(0, j - gap)
        if self.taken[a : i + gap + 1, b : j + gap + 1].any():
            return False
        self.grid[i, j] = colour
        self.taken[a : i + gap + 1, b : j + gap + 1] = True
        return True


def to_dsl(grid: np.ndarray) -> tuple[tuple[int, ...], ...]:
    """The arc-dsl form of a grid: a tuple of row tuples of ints."""
    return tuple(map(tuple, grid.tolist()))


def from_dsl(grid) -> np.ndarray:
    """A numpy ``uint8`` array from an arc-dsl grid (tuples of tuples)."""
    return np.array(grid, dtype=np.uint8)


__all__ = [
    "BG",
    "Canvas",
    "GenerationError",
    "blob",
    "colour",
    "colours",
    "count_range",
    "dims",
    "frame",
    "from_dsl",
    "full_grid",
    "n_objects",
    "noise_grid",
    "rect",
    "side",
    "side_range",
    "to_dsl",
]
