# ruff: noqa: E741 - arc-dsl style: I and O name the input and output grids, as in the original solvers
"""Object families: gravity, recolouring by size, shape or count, cropping, filling, lines, denoising,
symmetry completion and counting.

Inputs are drawn on a 0 background with shapes that never touch (not even diagonally), so every choice of
connectivity in ``objects`` sees the same objects, and the background stays the most common colour, as the
``objects(..., without_bg=True)`` of the programs assumes.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from arcscope.dsl import (
    DOWN,
    LEFT,
    ONE,
    RIGHT,
    THREE,
    THREE_BY_THREE,
    UP,
    ZERO,
    F,
    T,
    add,
    apply,
    argmax,
    asindices,
    astuple,
    bordering,
    canvas,
    color,
    colorfilter,
    compose,
    difference,
    divide,
    fill,
    first,
    flip,
    hfrontier,
    hmirror,
    index,
    interval,
    mapply,
    merge,
    multiply,
    objects,
    ofcolor,
    paint,
    rbind,
    recolor,
    sfilter,
    shift,
    shoot,
    size,
    sizefilter,
    square,
    subgrid,
    subtract,
    toindices,
    toobject,
    ulcorner,
    vfrontier,
    vmirror,
)
from arcscope.families import sampling as S
from arcscope.families.core import Family, Knobs, Params, program_rival

DIRECTIONS = {"down": DOWN, "up": UP, "left": LEFT, "right": RIGHT}
"""Direction names (the parameters' JSON form) and their arc-dsl unit vectors."""


def _bg_major(g: np.ndarray) -> bool:
    return int((g == S.BG).sum()) * 2 > g.size


def _scene(
    rng: np.random.Generator,
    knobs: Knobs,
    n: int,
    shape_of: Callable[[int], np.ndarray | None],
    colour_of: Callable[[int], int],
    lo_side: int = 5,
    border: bool = True,
) -> tuple[S.Canvas, list[tuple[tuple[int, int], np.ndarray, int]]] | None:
    """``n`` non-touching shapes on a fresh canvas; None when they do not fit this time."""
    h, w = S.dims(rng, knobs, lo=lo_side)
    cv = S.Canvas(h, w)
    placed = []
    for k in range(n):
        mask = shape_of(k)
        if mask is None:
            return None
        c = colour_of(k)
        at = cv.place(rng, mask, c, border=border)
        if at is None:
            return None
        placed.append((at, mask, c))
    if not _bg_major(cv.grid):
        return None
    return cv, placed


def _blob_of(rng: np.random.Generator, lo: int, hi: int, box: int = 4) -> Callable[[int], np.ndarray | None]:
    return lambda k: S.blob(rng, int(rng.integers(lo, hi + 1)), box, box)


# ------------------------------------------------------------------------------------------- gravity


def fall_step(I, direction):
    """Every foreground cell with background next to it in ``direction`` moves one step that way."""
    cells = toobject(difference(asindices(I), ofcolor(I, ZERO)), I)
    movers = sfilter(cells, lambda cell: index(I, add(cell[1], direction)) == ZERO)
    return paint(fill(I, ZERO, toindices(movers)), shift(movers, direction))


def solve_gravity(I, direction):
    """Every foreground cell falls in ``direction`` until it rests on the edge or on another cell."""
    d = DIRECTIONS[direction]
    O = I
    while True:
        N = fall_step(O, d)
        if N == O:
            return O
        O = N


def solve_gravity_down(I):
    """Every foreground cell falls down until it rests on the bottom edge or on another cell."""
    return solve_gravity(I, "down")


def _direction_params(rng: np.random.Generator, knobs: Knobs) -> Params:
    return {"direction": list(DIRECTIONS)[int(rng.integers(4))]}


def _gravity_sample(rng: np.random.Generator, params: Params, knobs: Knobs) -> np.ndarray | None:
    h, w = S.dims(rng, knobs, lo=3)
    palette = S.colours(rng, knobs, int(rng.integers(1, min(3, len(knobs.colours)) + 1)))
    g = S.noise_grid(rng, h, w, palette, density=float(rng.uniform(0.1, 0.4)))
    return g if g.any() else None


def _gravity_rivals(params: Params):
    own = params.get("direction", "down")
    return [(f"gravity({d})", program_rival(solve_gravity, direction=d)) for d in DIRECTIONS if d != own]


# ------------------------------------------------------------------------------------------- recolouring


def solve_recolour_largest(I, colour):
    """The largest object is painted ``colour``."""
    return fill(I, colour, argmax(objects(I, T, F, T), size))


def _recolour_colour(rng: np.random.Generator, knobs: Knobs) -> Params:
    return {"colour": S.colour(rng, knobs)}


def _distinct_sizes_largest(rng: np.random.Generator, n: int, lo: int, hi: int) -> list[int]:
    """``n`` sizes in ``lo..hi`` whose maximum is unique."""
    top = int(rng.integers(lo + 1, hi + 1))
    return [top] + [int(rng.integers(lo, top)) for _ in range(n - 1)]


def _largest_sample(rng: np.random.Generator, params: Params, knobs: Knobs) -> np.ndarray | None:
    n = S.n_objects(rng, knobs, lo=2)
    sizes = _distinct_sizes_largest(rng, n, 1, 8)
    c = S.colour(rng, knobs, exclude=[params["colour"]])  # one colour: only the size can pick the largest
    scene = _scene(rng, knobs, n, lambda k: S.blob(rng, sizes[k], 4, 4), lambda k: c)
    return None if scene is None else scene[0].grid


def solve_recolour_by_size(I, by_size):
    """Each object is painted ``by_size[n - 1]``, n its number of cells."""
    return paint(I, mapply(lambda obj: recolor(by_size[size(obj) - 1], obj), objects(I, T, F, T)))


def _table_params(key: str):
    def params(rng: np.random.Generator, knobs: Knobs) -> Params:
        if len(knobs.colours) < 3:  # two table colours (else the table is a colour map) and the input's
            raise S.GenerationError(f"needs at least 3 colours, but the knobs allow {knobs.colours}")
        pool = S.colours(rng, knobs, min(4, len(knobs.colours) - 1))
        return {key: [pool[k % len(pool)] for k in range(4)]}

    return params


def _table_sample(key: str, hi: int):
    def sample(rng: np.random.Generator, params: Params, knobs: Knobs) -> np.ndarray | None:
        # One colour for all objects, never one of the table's, so the table is all the output shows.
        c = S.colour(rng, knobs, exclude=params[key])
        n = S.n_objects(rng, knobs, hi=hi)
        scene = _scene(rng, knobs, n, _blob_of(rng, 1, 4, 3), lambda k: c)
        return None if scene is None else scene[0].grid

    return sample


def _object_sizes(params: Params, grid: np.ndarray) -> frozenset:
    return frozenset(size(o) for o in objects(S.to_dsl(grid), T, F, T))


def solve_recolour_squares(I, colour):
    """Every object that is a filled square is painted ``colour``."""
    return fill(I, colour, merge(sfilter(objects(I, T, F, T), square)))


def _squares_sample(rng: np.random.Generator, params: Params, knobs: Knobs) -> np.ndarray | None:
    n = S.n_objects(rng, knobs, lo=2)
    kinds = [True, False] + [bool(rng.integers(2)) for _ in range(n - 2)]
    kinds = [kinds[int(i)] for i in rng.permutation(n)]

    def shape_of(k: int) -> np.ndarray:
        if kinds[k]:
            s = int(rng.integers(1, 4))
            return S.rect(s, s)
        while True:
            a, b = (int(x) for x in rng.integers(1, 5, size=2))
            if a != b:
                return S.rect(a, b)

    c = S.colour(rng, knobs, exclude=[params["colour"]])
    scene = _scene(rng, knobs, n, shape_of, lambda k: c)
    return None if scene is None else scene[0].grid


def solve_recolour_by_count(I, by_count):
    """All objects are painted ``by_count[n - 1]``, n the number of objects."""
    objs = objects(I, T, F, T)
    return fill(I, by_count[size(objs) - 1], merge(objs))


def _object_count(params: Params, grid: np.ndarray) -> frozenset:
    return frozenset({size(objects(S.to_dsl(grid), T, F, T))})


# ------------------------------------------------------------------------------------------- cropping


def solve_crop_largest(I):
    """The bounding box of the largest object."""
    return subgrid(argmax(objects(I, T, F, T), size), I)


def _crop_largest_sample(rng: np.random.Generator, params: Params, knobs: Knobs) -> np.ndarray | None:
    n = S.n_objects(rng, knobs, lo=2)
    sizes = _distinct_sizes_largest(rng, n, 2, 9)
    palette = S.colours(rng, knobs, min(3, len(knobs.colours)))
    scene = _scene(
        rng,
        knobs,
        n,
        lambda k: S.blob(rng, sizes[k], 4, 4),
        lambda k: palette[int(rng.integers(len(palette)))],
    )
    return None if scene is None else scene[0].grid


def solve_crop_colour(I, colour):
    """The bounding box of the cells of ``colour``."""
    return subgrid(ofcolor(I, colour), I)


def _crop_colour_sample(rng: np.random.Generator, params: Params, knobs: Knobs) -> np.ndarray | None:
    h, w = S.dims(rng, knobs, lo=4)
    a = params["colour"]
    others = S.colours(rng, knobs, min(2, len(knobs.colours) - 1), exclude=[a])
    g = (
        S.noise_grid(rng, h, w, others, density=float(rng.uniform(0.1, 0.4)))
        if others
        else np.zeros((h, w), np.uint8)
    )
    mask = S.blob(rng, int(rng.integers(2, 9)), min(4, h - 1), min(4, w - 1))
    if mask is None:
        return None
    i, j = int(rng.integers(h - mask.shape[0] + 1)), int(rng.integers(w - mask.shape[1] + 1))
    g[i : i + mask.shape[0], j : j + mask.shape[1]][mask] = a
    return g


# ------------------------------------------------------------------------------------------- filling


def solve_fill_enclosed(I, colour):
    """Background regions that do not reach the grid's edge are filled with ``colour``."""
    holes = sfilter(colorfilter(objects(I, T, F, F), ZERO), compose(flip, rbind(bordering, I)))
    return fill(I, colour, merge(holes))


def _fill_sample(rng: np.random.Generator, params: Params, knobs: Knobs) -> np.ndarray | None:
    n = S.n_objects(rng, knobs)
    closed = [True] + [bool(rng.random() < 0.7) for _ in range(n - 1)]
    palette = S.colours(rng, knobs, min(2, len(knobs.colours) - 1), exclude=[params["colour"]])

    def shape_of(k: int) -> np.ndarray:
        a, b = (int(x) for x in rng.integers(3, 7, size=2))
        m = S.frame(a, b)
        if not closed[k]:  # a gap in a wall (never a corner) lets the inside reach the outside
            if rng.integers(2):
                m[int(rng.integers(2)) * (a - 1), int(rng.integers(1, b - 1))] = False
            else:
                m[int(rng.integers(1, a - 1)), int(rng.integers(2)) * (b - 1)] = False
        return m

    order = [int(i) for i in rng.permutation(n)]
    closed = [closed[i] for i in order]
    scene = _scene(rng, knobs, n, shape_of, lambda k: palette[int(rng.integers(len(palette)))], lo_side=5)
    if scene is None:
        return None
    return scene[0].grid


# ------------------------------------------------------------------------------------------- lines


def solve_lines_ray(I, direction):
    """Every seed cell shoots a line of its colour in ``direction`` up to the grid's edge."""
    d = DIRECTIONS[direction]
    return paint(I, mapply(lambda obj: recolor(color(obj), shoot(ulcorner(obj), d)), objects(I, T, F, T)))


def solve_lines_frontier(I, axis):
    """Every seed cell draws a line of its colour across its whole row (``axis`` row) or column."""
    line = hfrontier if axis == "row" else vfrontier
    return paint(I, mapply(lambda obj: recolor(color(obj), line(ulcorner(obj))), objects(I, T, F, T)))


def _seeds(rng: np.random.Generator, knobs: Knobs, along_rows: bool) -> np.ndarray | None:
    """Single-cell seeds, at most one per row (``along_rows``) or per column, never touching."""
    h, w = S.dims(rng, knobs, lo=3)
    n = S.n_objects(rng, knobs)
    lines = h if along_rows else w
    if n > (lines + 1) // 2:
        return None
    palette = S.colours(rng, knobs, min(3, len(knobs.colours)))
    cv = S.Canvas(h, w)
    for k in rng.permutation(lines)[: n * 3]:
        if int((cv.grid != 0).sum()) == n:
            break
        other = int(rng.integers(w if along_rows else h))
        i, j = (int(k), other) if along_rows else (other, int(k))
        cv.put(i, j, palette[int(rng.integers(len(palette)))])
    g = cv.grid
    return g if int((g != 0).sum()) == n else None


def _ray_sample(rng: np.random.Generator, params: Params, knobs: Knobs) -> np.ndarray | None:
    return _seeds(rng, knobs, along_rows=params["direction"] in ("left", "right"))


def _frontier_sample(rng: np.random.Generator, params: Params, knobs: Knobs) -> np.ndarray | None:
    return _seeds(rng, knobs, along_rows=params["axis"] == "row")


def _ray_rivals(params: Params):
    out = [(f"lines_frontier({a})", program_rival(solve_lines_frontier, axis=a)) for a in ("row", "column")]
    return out + [
        (f"lines_ray({d})", program_rival(solve_lines_ray, direction=d))
        for d in DIRECTIONS
        if d != params["direction"]
    ]


def _frontier_rivals(params: Params):
    out = [(f"lines_ray({d})", program_rival(solve_lines_ray, direction=d)) for d in DIRECTIONS]
    other = "column" if params["axis"] == "row" else "row"
    return out + [(f"lines_frontier({other})", program_rival(solve_lines_frontier, axis=other))]


def _axis_params(rng: np.random.Generator, knobs: Knobs) -> Params:
    return {"axis": ["row", "column"][int(rng.integers(2))]}


# ------------------------------------------------------------------------------------------- denoising


def solve_denoise(I):
    """Isolated single cells (noise) are removed; shapes of two or more cells stay."""
    return fill(I, ZERO, merge(sizefilter(objects(I, F, T, T), ONE)))


def _noisy_scene(rng: np.random.Generator, knobs: Knobs) -> np.ndarray | None:
    n = S.n_objects(rng, knobs)
    palette = S.colours(rng, knobs, min(3, len(knobs.colours)))
    used = [palette[int(rng.integers(len(palette)))] for _ in range(n)]
    scene = _scene(rng, knobs, n, _blob_of(rng, 3, 8), lambda k: used[k], lo_side=5)
    if scene is None:
        return None
    cv = scene[0]
    h, w = cv.shape
    want = int(rng.integers(1, max(2, h * w // 12) + 1))
    got = 0
    for _ in range(want * 4):
        # Noise takes the shapes' colours, so no colour map could explain its removal.
        if cv.put(int(rng.integers(h)), int(rng.integers(w)), used[int(rng.integers(n))]):
            got += 1
            if got == want:
                break
    return cv.grid if got else None


def _denoise_sample(rng: np.random.Generator, params: Params, knobs: Knobs) -> np.ndarray | None:
    return _noisy_scene(rng, knobs)


# ------------------------------------------------------------------------------------------- symmetry


def solve_symmetry_complete(I, axis):
    """The grid is mirror-symmetric (``axis`` v: left-right, h: top-bottom); erased (0) cells are restored."""
    mirrored = vmirror(I) if axis == "v" else hmirror(I)
    return paint(mirrored, toobject(difference(asindices(I), ofcolor(I, ZERO)), I))


def _symmetry_params(rng: np.random.Generator, knobs: Knobs) -> Params:
    return {"axis": ["v", "h"][int(rng.integers(2))]}


def _symmetry_sample(rng: np.random.Generator, params: Params, knobs: Knobs) -> np.ndarray | None:
    h, w = S.dims(rng, knobs, lo=4)
    palette = S.colours(rng, knobs, min(len(knobs.colours), int(rng.integers(2, 5))))
    g = S.full_grid(rng, h, w, palette)
    if params["axis"] == "h":
        g = g.T.copy()
        h, w = w, h
    half = w // 2
    g[:, w - half :] = g[:, :half][:, ::-1]
    # Erase a block inside one half only, so its mirror image still holds every erased cell.
    bh, bw = int(rng.integers(1, min(3, h) + 1)), int(rng.integers(1, min(3, half) + 1))
    i = int(rng.integers(h - bh + 1))
    j = int(rng.integers(half - bw + 1))
    if rng.integers(2):
        j = w - half + j
    g[i : i + bh, j : j + bw] = 0
    return g.T.copy() if params["axis"] == "h" else g


# ------------------------------------------------------------------------------------------- counting


def solve_count_bar(I):
    """A 1 x n bar in the objects' colour, n the number of objects."""
    objs = objects(I, T, F, T)
    return canvas(color(first(objs)), astuple(ONE, size(objs)))


def solve_count_grid(I):
    """A 3 x 3 grid with its first n cells (reading order) in the objects' colour, n the number of objects."""
    objs = objects(I, T, F, T)
    cells = apply(
        lambda k: astuple(divide(k, THREE), subtract(k, multiply(divide(k, THREE), THREE))),
        interval(ZERO, size(objs), ONE),
    )
    return fill(canvas(ZERO, THREE_BY_THREE), color(first(objs)), frozenset(cells))


def _count_sample(hi: int):
    def sample(rng: np.random.Generator, params: Params, knobs: Knobs) -> np.ndarray | None:
        n = S.n_objects(rng, knobs, hi=hi)
        c = S.colour(rng, knobs)
        scene = _scene(rng, knobs, n, _blob_of(rng, 1, 4, 3), lambda k: c, lo_side=3)
        return None if scene is None else scene[0].grid

    return sample


FAMILIES = (
    Family(
        name="gravity_down",
        description="every foreground cell falls down until it rests on the floor or another cell",
        program=solve_gravity_down,
        sample=_gravity_sample,
        rivals=_gravity_rivals,
        tags=("gravity",),
    ),
    Family(
        name="gravity",
        description="every foreground cell falls in a per-task direction (down, up, left, right)",
        program=solve_gravity,
        sample=_gravity_sample,
        params=_direction_params,
        rivals=_gravity_rivals,
        tags=("gravity",),
    ),
    Family(
        name="recolour_largest",
        description="the largest object is painted a per-task colour",
        program=solve_recolour_largest,
        sample=_largest_sample,
        params=_recolour_colour,
        tags=("objects", "recolour"),
    ),
    Family(
        name="recolour_by_size",
        description="each object is painted a colour given by its size (a per-task table for sizes 1-4)",
        program=solve_recolour_by_size,
        sample=_table_sample("by_size", 30),
        params=_table_params("by_size"),
        needs=_object_sizes,
        tags=("objects", "recolour"),
    ),
    Family(
        name="recolour_squares",
        description="objects that are filled squares are painted a per-task colour, other rectangles stay",
        program=solve_recolour_squares,
        sample=_squares_sample,
        params=_recolour_colour,
        tags=("objects", "recolour"),
    ),
    Family(
        name="recolour_by_count",
        description="all objects are painted a colour given by how many there are (a per-task table, 1-4)",
        program=solve_recolour_by_count,
        sample=_table_sample("by_count", 4),
        params=_table_params("by_count"),
        needs=_object_count,
        tags=("objects", "recolour", "counting"),
    ),
    Family(
        name="crop_largest",
        description="crop to the bounding box of the largest object",
        program=solve_crop_largest,
        sample=_crop_largest_sample,
        tags=("objects", "crop"),
    ),
    Family(
        name="crop_colour",
        description="crop to the bounding box of a per-task colour, among noise of other colours",
        program=solve_crop_colour,
        sample=_crop_colour_sample,
        params=_recolour_colour,
        tags=("crop",),
    ),
    Family(
        name="fill_enclosed",
        description="background regions enclosed by walls are filled with a per-task colour",
        program=solve_fill_enclosed,
        sample=_fill_sample,
        params=_recolour_colour,
        tags=("objects", "fill"),
    ),
    Family(
        name="lines_ray",
        description="every seed cell shoots a line of its colour to the edge, in a per-task direction",
        program=solve_lines_ray,
        sample=_ray_sample,
        params=_direction_params,
        rivals=_ray_rivals,
        tags=("lines",),
    ),
    Family(
        name="lines_frontier",
        description="every seed cell draws a line of its colour across its row or column (per task)",
        program=solve_lines_frontier,
        sample=_frontier_sample,
        params=_axis_params,
        rivals=_frontier_rivals,
        tags=("lines",),
    ),
    Family(
        name="denoise",
        description="isolated single cells are removed, shapes stay",
        program=solve_denoise,
        sample=_denoise_sample,
        tags=("objects", "denoise"),
    ),
    Family(
        name="symmetry_complete",
        description="restore the erased block of a mirror-symmetric pattern (per-task axis)",
        program=solve_symmetry_complete,
        sample=_symmetry_sample,
        params=_symmetry_params,
        tags=("symmetry",),
    ),
    Family(
        name="count_bar",
        description="count the objects; answer a 1 x n bar in their colour",
        program=solve_count_bar,
        sample=_count_sample(30),
        tags=("objects", "counting"),
    ),
    Family(
        name="count_grid",
        description="count the objects (1-9); answer a 3 x 3 grid with n cells filled in reading order",
        program=solve_count_grid,
        sample=_count_sample(9),
        tags=("objects", "counting"),
    ),
)
"""The families of this module, in registry order."""

__all__ = ["DIRECTIONS", "FAMILIES", "fall_step"]
