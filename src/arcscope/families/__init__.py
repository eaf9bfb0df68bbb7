"""Task families with known programs: seeded generators of ARC tasks whose rule is an arc-dsl program.

Each :class:`Family` pairs an input sampler with a ground-truth program written with :mod:`arcscope.dsl`
primitives; :func:`generate` draws task sets over any of the :data:`FAMILIES` (dihedral transforms, colour
maps, shifts, scaling and tiling, gravity, recolouring, cropping, filling, lines, denoising, symmetry,
counting, compositions), every pair checked and ambiguous tasks drawn again. Rules that only move cells
expose :meth:`Family.source_map`, the ground truth for analysis tools. :func:`contamination` counts generated
tasks that equal ARC-AGI-1/2 tasks up to symmetry. On the command line: ``arcscope tasks generate``.

Names are loaded lazily from their submodules.
"""

from __future__ import annotations

from arcscope._lazy import lazy_names

_LAZY = {
    # core.py
    "Family": "core",
    "Knobs": "core",
    "make_knobs": "core",
    "check_task": "core",
    "program_rival": "core",
    "RIVALS": "core",
    "DIHEDRAL": "core",
    "GENERATOR": "core",
    # sampling.py
    "GenerationError": "sampling",
    # registry.py
    "FAMILIES": "registry",
    "generate": "registry",
    "iter_generate": "registry",
    "get_family": "registry",
    "select": "registry",
    # contamination.py
    "ArcIndex": "contamination",
    "ContaminationReport": "contamination",
    "arc_index": "contamination",
    "contamination": "contamination",
    "exclude_arc": "contamination",
    "screen": "contamination",
    "ARC_SOURCES": "contamination",
}

__all__ = sorted(_LAZY)

__getattr__, __dir__ = lazy_names(__name__, _LAZY)
