# ruff: noqa: E741 - arc-dsl style: I and O name the input and output grids, as in the original solvers
"""Two-step compositions of the other families' rules, each a program that calls both steps."""

from __future__ import annotations

import numpy as np

from arcscope.dsl import (
    TWO,
    ZERO,
    F,
    T,
    argmax,
    asindices,
    cmirror,
    difference,
    dmirror,
    fill,
    merge,
    objects,
    ofcolor,
    rot90,
    rot180,
    rot270,
    size,
    sizefilter,
    subgrid,
    upscale,
    vmirror,
)
from arcscope.families import colours as C
from arcscope.families import objects as O
from arcscope.families import sampling as S
from arcscope.families.core import Family, Knobs, Params, program_rival


def solve_rot90_permute(I, mapping):
    """A quarter turn clockwise, then every colour c becomes ``mapping[c]``."""
    return C.recolour_by_table(rot90(I), mapping)


def _rot90_permute_sample(rng: np.random.Generator, params: Params, knobs: Knobs) -> np.ndarray | None:
    h, w = S.dims(rng, knobs, lo=2)
    moved = [c for c in range(1, 10) if params["mapping"][c] != c]
    return S.noise_grid(rng, h, w, moved)


def _rot90_permute_rivals(params: Params):
    # Either step alone, or the permutation after another turn.
    return [
        ("colour_permute", program_rival(C.solve_colour_permute, mapping=params["mapping"])),
        *(
            (f"{name}+permute", program_rival(lambda I, f=f: C.recolour_by_table(f(I), params["mapping"])))
            for name, f in (
                ("rot270", rot270),
                ("rot180", rot180),
                ("dmirror", dmirror),
                ("cmirror", cmirror),
            )
        ),
    ]


def solve_crop_upscale(I):
    """The bounding box of the largest object, scaled up by 2."""
    return upscale(subgrid(argmax(objects(I, T, F, T), size), I), TWO)


def _crop_upscale_sample(rng: np.random.Generator, params: Params, knobs: Knobs) -> np.ndarray | None:
    return O._crop_largest_sample(rng, params, knobs)


def solve_denoise_mirror(I):
    """Isolated single cells removed, then the grid flipped left to right."""
    return vmirror(fill(I, ZERO, merge(sizefilter(objects(I, F, T, T), 1))))


def _denoise_mirror_rivals(params: Params):
    return [("denoise", program_rival(O.solve_denoise))]


def solve_gravity_recolour(I, colour):
    """Every foreground cell falls down, then all of them are painted ``colour``."""
    G = O.solve_gravity(I, "down")
    return fill(G, colour, difference(asindices(G), ofcolor(G, ZERO)))


def _gravity_recolour_sample(rng: np.random.Generator, params: Params, knobs: Knobs) -> np.ndarray | None:
    h, w = S.dims(rng, knobs, lo=3)
    palette = S.colours(rng, knobs, min(2, len(knobs.colours) - 1), exclude=[params["colour"]])
    g = S.noise_grid(rng, h, w, palette, density=float(rng.uniform(0.1, 0.4)))
    return g if g.any() else None


def _colour_param(rng: np.random.Generator, knobs: Knobs) -> Params:
    return {"colour": S.colour(rng, knobs)}


FAMILIES = (
    Family(
        name="rot90_permute",
        description="rotate a quarter turn clockwise, then apply a per-task colour permutation",
        program=solve_rot90_permute,
        sample=_rot90_permute_sample,
        params=C._permute_params,
        needs=C._colours_of,
        rivals=_rot90_permute_rivals,
        tags=("composition", "dihedral", "colour"),
    ),
    Family(
        name="crop_upscale",
        description="crop to the largest object, then scale it up by 2",
        program=solve_crop_upscale,
        sample=_crop_upscale_sample,
        tags=("composition", "objects", "crop", "scaling"),
    ),
    Family(
        name="denoise_mirror",
        description="remove isolated single cells, then flip left to right",
        program=solve_denoise_mirror,
        sample=O._denoise_sample,
        rivals=_denoise_mirror_rivals,
        tags=("composition", "objects", "denoise", "dihedral"),
    ),
    Family(
        name="gravity_recolour",
        description="let every cell fall down, then paint them all a per-task colour",
        program=solve_gravity_recolour,
        sample=_gravity_recolour_sample,
        params=_colour_param,
        tags=("composition", "gravity", "colour"),
    ),
)
"""The families of this module, in registry order."""

__all__ = ["FAMILIES"]
