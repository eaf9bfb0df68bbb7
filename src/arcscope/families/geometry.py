# ruff: noqa: E741 - arc-dsl style: I and O name the input and output grids, as in the original solvers
"""Families that move cells without changing them: the 8 dihedral transforms, shifts, scaling and tiling.

Every family here has a source map (:meth:`~arcscope.families.core.Family.source_map`): the input cell each
output cell copies, written with numpy index arithmetic, independently of the arc-dsl program, so a test can
check one against the other and an analysis tool can be checked against both.
"""

from __future__ import annotations

import numpy as np

from arcscope.dsl import (
    ORIGIN,
    ZERO,
    asobject,
    canvas,
    cmirror,
    crop,
    dmirror,
    hconcat,
    hmirror,
    identity,
    paint,
    rot90,
    rot180,
    rot270,
    shape,
    shift,
    upscale,
    vconcat,
    vmirror,
)
from arcscope.families import sampling as S
from arcscope.families.core import Family, Knobs, Params, np_dihedral

# ------------------------------------------------------------------------------------------- samplers


def _random_input(
    rng: np.random.Generator, params: Params, knobs: Knobs, hi: int = 30, lo: int = 1
) -> np.ndarray:
    """A random grid over a few of the knobs' colours: dense or sparse, never empty."""
    h, w = S.dims(rng, knobs, lo=lo, hi=hi)
    k = int(rng.integers(1, min(4, len(knobs.colours)) + 1))
    palette = S.colours(rng, knobs, k)
    g = S.noise_grid(rng, h, w, palette)
    if not g.any():
        g[int(rng.integers(h)), int(rng.integers(w))] = palette[0]
    return g


def _index_grid(shape: tuple[int, int]) -> np.ndarray:
    """``[h, w, 2]``: each cell's own (row, col)."""
    return np.stack(np.indices(shape), axis=-1)


# ------------------------------------------------------------------------------------------- dihedral


def solve_identity(I):
    """The grid unchanged."""
    return identity(I)


def solve_rot90(I):
    """A quarter turn clockwise."""
    return rot90(I)


def solve_rot180(I):
    """A half turn."""
    return rot180(I)


def solve_rot270(I):
    """A quarter turn anticlockwise."""
    return rot270(I)


def solve_hmirror(I):
    """Flipped top to bottom."""
    return hmirror(I)


def solve_vmirror(I):
    """Flipped left to right."""
    return vmirror(I)


def solve_dmirror(I):
    """Transposed (mirrored along the main diagonal)."""
    return dmirror(I)


def solve_cmirror(I):
    """Mirrored along the anti-diagonal."""
    return cmirror(I)


def _dihedral_source(name: str):
    f = np_dihedral(name)

    def source(params: Params, shape_: tuple[int, int]) -> np.ndarray:
        # Transform the grid of indices the way the rule transforms cells: axes 0, 1 move, the pair stays.
        idx = _index_grid(shape_)
        return np.stack([f(idx[..., 0]), f(idx[..., 1])], axis=-1)

    return source


_DIHEDRAL_TEXT = {
    "identity": "the output is the input (the control: a copy)",
    "rot90": "rotate the grid a quarter turn clockwise",
    "rot180": "rotate the grid a half turn",
    "rot270": "rotate the grid a quarter turn anticlockwise",
    "hmirror": "flip the grid top to bottom",
    "vmirror": "flip the grid left to right",
    "dmirror": "transpose the grid (mirror along the main diagonal)",
    "cmirror": "mirror the grid along the anti-diagonal",
}
_DIHEDRAL_PROGRAMS = {
    "identity": solve_identity,
    "rot90": solve_rot90,
    "rot180": solve_rot180,
    "rot270": solve_rot270,
    "hmirror": solve_hmirror,
    "vmirror": solve_vmirror,
    "dmirror": solve_dmirror,
    "cmirror": solve_cmirror,
}


def _dihedral_family(name: str) -> Family:
    same = frozenset({name, "colour_map"} if name == "identity" else {name})
    return Family(
        name=name,
        description=_DIHEDRAL_TEXT[name],
        program=_DIHEDRAL_PROGRAMS[name],
        sample=_random_input,
        source=_dihedral_source(name),
        same_as=same,
        keeps_input=name == "identity",
        tags=("dihedral", "moves-cells"),
    )


# ------------------------------------------------------------------------------------------- shifts


def _shift_params(rng: np.random.Generator, knobs: Knobs) -> Params:
    while True:
        di, dj = (int(x) for x in rng.integers(-2, 3, size=2))
        if (di, dj) != (0, 0):
            return {"offset": [di, dj]}


def solve_shift_wrap(I, offset):
    """Every cell moved by ``offset`` (rows, cols), wrapping around the edges (a torus)."""
    di, dj = offset
    h, w = shape(I)
    a, b = di % h, dj % w
    G = I if a == ZERO else vconcat(crop(I, (h - a, 0), (a, w)), crop(I, ORIGIN, (h - a, w)))
    return G if b == ZERO else hconcat(crop(G, (0, w - b), (h, b)), crop(G, ORIGIN, (h, w - b)))


def _shift_wrap_source(params: Params, shape_: tuple[int, int]) -> np.ndarray:
    di, dj = params["offset"]
    h, w = shape_
    idx = _index_grid(shape_)
    return np.stack([(idx[..., 0] - di) % h, (idx[..., 1] - dj) % w], axis=-1)


def solve_shift_crop(I, offset):
    """Every cell moved by ``offset``; cells pushed past an edge are lost, vacated cells become 0."""
    return paint(canvas(ZERO, shape(I)), shift(asobject(I), tuple(offset)))


def _shift_crop_source(params: Params, shape_: tuple[int, int]) -> np.ndarray:
    di, dj = params["offset"]
    h, w = shape_
    idx = _index_grid(shape_)
    src = np.stack([idx[..., 0] - di, idx[..., 1] - dj], axis=-1)
    outside = (src[..., 0] < 0) | (src[..., 0] >= h) | (src[..., 1] < 0) | (src[..., 1] >= w)
    src[outside] = -1
    return src


def _sparse_input(rng: np.random.Generator, params: Params, knobs: Knobs) -> np.ndarray:
    # Sparse, so a cropping shift loses little and the moved shape stays recognisable.
    h, w = S.dims(rng, knobs, lo=3)
    palette = S.colours(rng, knobs, int(rng.integers(1, min(3, len(knobs.colours)) + 1)))
    g = S.noise_grid(rng, h, w, palette, density=float(rng.uniform(0.15, 0.45)))
    return g if g.any() else None


# ------------------------------------------------------------------------------------------- scaling, tiling


def _upscale_params(rng: np.random.Generator, knobs: Knobs) -> Params:
    return {"factor": int(rng.integers(2, 4))}


def solve_upscale(I, factor):
    """Every cell becomes a ``factor x factor`` block."""
    return upscale(I, factor)


def _upscale_source(params: Params, shape_: tuple[int, int]) -> np.ndarray:
    k = params["factor"]
    idx = _index_grid((shape_[0] * k, shape_[1] * k))
    return idx // k


def _tile_params(rng: np.random.Generator, knobs: Knobs) -> Params:
    while True:
        n, m = (int(x) for x in rng.integers(1, 4, size=2))
        if (n, m) != (1, 1):
            return {"reps": [n, m]}


def solve_tile(I, reps):
    """The grid repeated ``reps`` = (down, across) times."""
    n, m = reps
    row = I
    for _ in range(m - 1):
        row = hconcat(row, I)
    O = row
    for _ in range(n - 1):
        O = vconcat(O, row)
    return O


def _tile_source(params: Params, shape_: tuple[int, int]) -> np.ndarray:
    n, m = params["reps"]
    h, w = shape_
    idx = _index_grid((h * n, w * m))
    return np.stack([idx[..., 0] % h, idx[..., 1] % w], axis=-1)


def solve_tile_mirror(I):
    """Four copies in a 2x2 block, mirrored outwards: the input, its left-right, top-bottom and half-turn images."""
    return vconcat(hconcat(I, vmirror(I)), hconcat(hmirror(I), rot180(I)))


def _reflect(i: np.ndarray, n: int) -> np.ndarray:
    return np.where(i < n, i, 2 * n - 1 - i)


def _tile_mirror_source(params: Params, shape_: tuple[int, int]) -> np.ndarray:
    h, w = shape_
    idx = _index_grid((2 * h, 2 * w))
    return np.stack([_reflect(idx[..., 0], h), _reflect(idx[..., 1], w)], axis=-1)


def _mirror_extend_params(rng: np.random.Generator, knobs: Knobs) -> Params:
    return {"side": ["right", "below"][int(rng.integers(2))]}


def solve_mirror_extend(I, side):
    """The grid with its mirror image attached on ``side`` (right: left-right mirror; below: top-bottom)."""
    return hconcat(I, vmirror(I)) if side == "right" else vconcat(I, hmirror(I))


def _mirror_extend_source(params: Params, shape_: tuple[int, int]) -> np.ndarray:
    h, w = shape_
    if params["side"] == "right":
        idx = _index_grid((h, 2 * w))
        return np.stack([idx[..., 0], _reflect(idx[..., 1], w)], axis=-1)
    idx = _index_grid((2 * h, w))
    return np.stack([_reflect(idx[..., 0], h), idx[..., 1]], axis=-1)


def _tile_sample(rng: np.random.Generator, params: Params, knobs: Knobs) -> np.ndarray:
    n, m = params["reps"]
    return _random_input(rng, params, knobs, hi=30 // max(n, m))


def _half_sample(rng: np.random.Generator, params: Params, knobs: Knobs) -> np.ndarray:
    return _random_input(rng, params, knobs, hi=15)


FAMILIES = (
    *(_dihedral_family(name) for name in _DIHEDRAL_PROGRAMS),
    Family(
        name="shift_wrap",
        description="move every cell by a per-task offset, wrapping around the edges",
        program=solve_shift_wrap,
        sample=lambda rng, p, k: _random_input(rng, p, k, lo=3),
        params=_shift_params,
        source=_shift_wrap_source,
        tags=("shift", "moves-cells"),
    ),
    Family(
        name="shift_crop",
        description="move every cell by a per-task offset; what leaves the grid is lost, the rest is 0",
        program=solve_shift_crop,
        sample=_sparse_input,
        params=_shift_params,
        source=_shift_crop_source,
        tags=("shift", "moves-cells"),
    ),
    Family(
        name="upscale",
        description="scale the grid up by a per-task factor (2 or 3)",
        program=solve_upscale,
        sample=lambda rng, p, k: _random_input(rng, p, k, hi=30 // p["factor"]),
        params=_upscale_params,
        source=_upscale_source,
        tags=("scaling", "moves-cells"),
    ),
    Family(
        name="tile",
        description="repeat the grid a per-task number of times down and across",
        program=solve_tile,
        sample=_tile_sample,
        params=_tile_params,
        source=_tile_source,
        tags=("tiling", "moves-cells"),
    ),
    Family(
        name="tile_mirror",
        description="a 2x2 block of the grid and its mirror images (a kaleidoscope)",
        program=solve_tile_mirror,
        sample=_half_sample,
        source=_tile_mirror_source,
        tags=("tiling", "moves-cells"),
    ),
    Family(
        name="mirror_extend",
        description="attach the grid's mirror image on a per-task side (right or below)",
        program=solve_mirror_extend,
        sample=_half_sample,
        params=_mirror_extend_params,
        source=_mirror_extend_source,
        tags=("tiling", "moves-cells"),
    ),
)
"""The families of this module, in registry order."""

__all__ = ["FAMILIES"]
