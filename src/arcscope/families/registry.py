"""The registry of task families and the generator of task sets over them.

``generate(["rot90", "gravity"], n=1000, seed=0, max_side=8)`` gives a :class:`~arcscope.tasks.TaskSet`;
:func:`iter_generate` streams the same tasks one at a time for sets too large to hold. Task ``i`` belongs to
family ``families[i % len(families)]`` (so every family gets its share) and is drawn from the seed
``(seed, i)`` alone: the same arguments give the same tasks, byte for byte, and any one task can be redrawn
from its meta (``FAMILIES[meta["family"]].task(meta["seed"], meta["index"], meta.get("knobs"))``).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from arcscope.families import colours, composed, geometry, objects
from arcscope.families.core import Family, Knobs, make_knobs
from arcscope.families.sampling import GenerationError
from arcscope.progress import ProgressFn, Ticker
from arcscope.tasks.core import Task, TaskSet

FAMILIES: dict[str, Family] = {
    f.name: f for f in (*geometry.FAMILIES, *colours.FAMILIES, *objects.FAMILIES, *composed.FAMILIES)
}
"""Every family by name, in a fixed order (the order ``all`` generates in)."""


def get_family(name: str) -> Family:
    """The family called ``name``; a GenerationError names the nearest ones when there is none."""
    try:
        return FAMILIES[name]
    except KeyError:
        import difflib

        near = difflib.get_close_matches(name, FAMILIES, n=3)
        hint = f" (did you mean {', '.join(near)}?)" if near else ""
        raise GenerationError(
            f"unknown task family {name!r}{hint}; `arcscope tasks families` lists them"
        ) from None


def select(names: str | Iterable[str] | None = None) -> list[Family]:
    """Families by name, glob pattern (``rot*``), tag (``tag:dihedral``), or ``all``/None for every one.

    Order follows ``names``; a family named twice appears once (at its first mention)."""
    if names is None:
        return list(FAMILIES.values())
    if isinstance(names, str):
        names = [x for x in names.split(",") if x.strip()]
    picked: dict[str, Family] = {}
    for raw in names:
        name = raw.strip()
        if name == "all":
            hits = list(FAMILIES.values())
        elif name.startswith("tag:"):
            tag = name[4:]
            hits = [f for f in FAMILIES.values() if tag in f.tags]
            if not hits:
                tags = sorted({t for f in FAMILIES.values() for t in f.tags})
                raise GenerationError(f"no family has tag {tag!r}; tags: {', '.join(tags)}")
        elif any(ch in name for ch in "*?["):
            hits = [f for n, f in FAMILIES.items() if fnmatch.fnmatchcase(n, name)]
            if not hits:
                raise GenerationError(f"no family matches {name!r}; `arcscope tasks families` lists them")
        else:
            hits = [get_family(name)]
        for f in hits:
            picked.setdefault(f.name, f)
    if not picked:
        raise GenerationError("no task family named; give names, patterns, tag:NAME or all")
    return list(picked.values())


def iter_generate(
    families: str | Iterable[str] | None = None,
    n: int = 100,
    seed: int = 0,
    knobs: Knobs | Mapping[str, Any] | None = None,
    *,
    progress: ProgressFn | None = None,
    **options: Any,
) -> Iterator[Task]:
    """Stream ``n`` generated tasks over ``families`` (see :func:`select`); keyword options are knobs."""
    fams = select(families)
    k = make_knobs(knobs, **options)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise GenerationError(f"seed must be a non-negative integer, got {seed!r}")
    if n < 0:
        raise GenerationError(f"n must be >= 0, got {n}")
    return _stream(fams, n, seed, k, progress)  # arguments checked now, not at the first task


def _stream(
    fams: list[Family], n: int, seed: int, knobs: Knobs, progress: ProgressFn | None
) -> Iterator[Task]:
    width = len(str(max(n - 1, 0)))
    ticker = Ticker(progress, "generating", total=n, every=100)
    for i in range(n):
        f = fams[i % len(fams)]
        yield f.task(seed, i, knobs, task_id=f"{f.name}-{seed}-{i:0{width}d}")
        ticker.tick()
    ticker.done()


def generate(
    families: str | Iterable[str] | None = None,
    n: int = 100,
    seed: int = 0,
    knobs: Knobs | Mapping[str, Any] | None = None,
    *,
    progress: ProgressFn | None = None,
    **options: Any,
) -> TaskSet:
    """``n`` generated tasks over ``families`` as a TaskSet; keyword options are knobs (``max_side=8``)."""
    tasks = iter_generate(families, n, seed, knobs, progress=progress, **options)
    return TaskSet(tasks, name=f"generated(seed={seed})")


__all__ = ["FAMILIES", "generate", "get_family", "iter_generate", "select"]
