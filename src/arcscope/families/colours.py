# ruff: noqa: E741 - arc-dsl style: I and O name the input and output grids, as in the original solvers
"""Colour-map families: a fixed map, a per-task random permutation, one colour replaced, two swapped."""

from __future__ import annotations

import numpy as np

from arcscope.dsl import color, mapply, paint, partition, recolor, replace, switch
from arcscope.families import sampling as S
from arcscope.families.core import Family, Knobs, Params

CYCLE = (0, 2, 3, 4, 5, 6, 7, 8, 9, 1)
"""The fixed map of ``colour_cycle``: every foreground colour c becomes c + 1 (9 becomes 1)."""


def recolour_by_table(I, table):
    """Every cell of colour c painted ``table[c]`` (the arc-dsl way: one object per colour, recoloured)."""
    return paint(I, mapply(lambda obj: recolor(table[color(obj)], obj), partition(I)))


def solve_colour_cycle(I):
    """Every foreground colour c becomes c + 1, 9 becomes 1 (the same map in every task)."""
    return recolour_by_table(I, CYCLE)


def solve_colour_permute(I, mapping):
    """Every colour c becomes ``mapping[c]`` (a permutation drawn per task)."""
    return recolour_by_table(I, mapping)


def solve_colour_replace(I, source, target):
    """Colour ``source`` becomes ``target``; everything else stays."""
    return replace(I, source, target)


def solve_colour_swap(I, a, b):
    """Colours ``a`` and ``b`` trade places."""
    return switch(I, a, b)


def _input(
    rng: np.random.Generator, palette: list[int], knobs: Knobs, must: tuple[int, ...] = ()
) -> np.ndarray:
    h, w = S.dims(rng, knobs)
    g = S.noise_grid(rng, h, w, palette)
    for c in must:  # the colour the rule acts on must be there, else the pair shows nothing
        if not (g == c).any():
            g[int(rng.integers(h)), int(rng.integers(w))] = c
    return g


def _cycle_sample(rng: np.random.Generator, params: Params, knobs: Knobs) -> np.ndarray:
    k = int(rng.integers(1, min(4, len(knobs.colours)) + 1))
    return _input(rng, S.colours(rng, knobs, k), knobs)


def _permute_params(rng: np.random.Generator, knobs: Knobs) -> Params:
    k = int(rng.integers(min(2, len(knobs.colours)), min(5, len(knobs.colours)) + 1))
    if k < 2:
        raise S.GenerationError("needs at least 2 colours to permute")
    palette = S.colours(rng, knobs, k)
    while True:
        perm = [int(c) for c in rng.permutation(palette)]
        if perm != palette:
            break
    mapping = list(range(10))
    for a, b in zip(palette, perm, strict=True):
        mapping[a] = b
    return {"mapping": mapping}


def _moved(params: Params) -> list[int]:
    return [c for c in range(1, 10) if params["mapping"][c] != c]


def _permute_sample(rng: np.random.Generator, params: Params, knobs: Knobs) -> np.ndarray:
    return _input(rng, _moved(params), knobs)


def _colours_of(params: Params, grid: np.ndarray) -> frozenset:
    return frozenset(int(c) for c in np.unique(grid) if c)


def _pair_params(rng: np.random.Generator, knobs: Knobs) -> Params:
    a, b = S.colours(rng, knobs, 2)
    return {"a": a, "b": b}


def _replace_params(rng: np.random.Generator, knobs: Knobs) -> Params:
    a, b = S.colours(rng, knobs, 2)
    return {"source": a, "target": b}


def _replace_sample(rng: np.random.Generator, params: Params, knobs: Knobs) -> np.ndarray:
    others = S.colours(
        rng, knobs, int(rng.integers(0, min(3, len(knobs.colours) - 2) + 1)), exclude=list(params.values())
    )
    return _input(rng, [params["source"], *others], knobs, must=(params["source"],))


def _swap_sample(rng: np.random.Generator, params: Params, knobs: Knobs) -> np.ndarray:
    a, b = params["a"], params["b"]
    others = S.colours(rng, knobs, int(rng.integers(0, min(2, len(knobs.colours) - 2) + 1)), exclude=[a, b])
    return _input(rng, [a, b, *others], knobs, must=(a, b))


FAMILIES = (
    Family(
        name="colour_cycle",
        description="a fixed colour map: every foreground colour c becomes c + 1, 9 becomes 1",
        program=solve_colour_cycle,
        sample=_cycle_sample,
        same_as=frozenset({"colour_map"}),
        needs=_colours_of,
        tags=("colour",),
    ),
    Family(
        name="colour_permute",
        description="a per-task random permutation of 2-5 colours (every test colour shown in train)",
        program=solve_colour_permute,
        sample=_permute_sample,
        params=_permute_params,
        same_as=frozenset({"colour_map"}),
        needs=_colours_of,
        tags=("colour",),
    ),
    Family(
        name="colour_replace",
        description="one per-task colour is replaced by another, the rest stays",
        program=solve_colour_replace,
        sample=_replace_sample,
        params=_replace_params,
        same_as=frozenset({"colour_map"}),
        tags=("colour",),
    ),
    Family(
        name="colour_swap",
        description="two per-task colours trade places",
        program=solve_colour_swap,
        sample=_swap_sample,
        params=_pair_params,
        same_as=frozenset({"colour_map"}),
        tags=("colour",),
    ),
)
"""The families of this module, in registry order."""

__all__ = ["CYCLE", "FAMILIES", "recolour_by_table"]
