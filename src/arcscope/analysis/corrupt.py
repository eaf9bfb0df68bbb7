"""Corruptions made for ARC: a second prompt that differs from the clean one where the model must read.

Activation patching compares a clean prompt with a corrupted one position by position, so every corruption
here keeps

* the test output (the clean answer): both prompts are measured on the same answer tokens;
* the shape of every grid: each cell is still one token at the same position (checked by :func:`aligned`).

Corruptions, each a function ``Task -> Task`` (the test pair used is ``test_index``):

* :func:`change_cell`: one cell of the test input gets another colour (given or drawn from ``seed``);
* :func:`swap_pair`: one train pair is replaced by another task's pair with the same input and output
  shapes, searched in a task source;
* :func:`permute_colours`: a colour permutation of the prompt (train pairs and test input), colour 0 kept
  by default;
* :func:`dihedral`: a symmetry of the prompt grids that keeps every shape (any of the 8 when all prompt grids
  are square, else the identity, rot180 and the two flips).

:func:`corrupt` reads a spec string (the CLI's ``--corruption``): ``cell``, ``cell:2,3``, ``cell:2,3=5``,
``swap-pair``, ``swap-pair:1``, ``colours``, ``colours:all`` (colour 0 permuted too), ``colours:c0213456789``,
``dihedral``, ``dihedral:d2``. The corrupted task keeps the clean id and records the resolved spec (random
choices made explicit) in ``task.meta["corruption"]``, so a report can say exactly what was changed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import numpy as np

from arcscope.analysis.subject import AnalysisError
from arcscope.tasks.core import N_COLOURS, Pair, Task

CORRUPTIONS = ("cell", "swap-pair", "colours", "dihedral")
"""Corruption kinds accepted by :func:`corrupt`."""

META_KEY = "corruption"
"""``Task.meta`` key holding the resolved corruption spec."""

SQUARE_ONLY = (1, 3, 6, 7)
"""Dihedral transforms (numbered as in arcscope.tasks.augment) that swap rows and columns."""
ANY_SHAPE = (0, 2, 4, 5)
"""Dihedral transforms that keep the shape of every grid: identity, rot180, flip left-right, flip top-bottom."""


def _frozen(arr: np.ndarray) -> np.ndarray:
    out = np.ascontiguousarray(arr, dtype=np.uint8).copy()
    out.setflags(write=False)
    return out


def _test(task: Task, test_index: int) -> Pair:
    if not 0 <= test_index < len(task.test):
        raise AnalysisError(f"task {task.id}: test index {test_index} out of range ({len(task.test)} tests)")
    return task.test[test_index]


def _with(task: Task, train: tuple[Pair, ...], test_input: np.ndarray, test_index: int, spec: str, **meta):
    test = list(task.test)
    test[test_index] = Pair(test_input, test[test_index].output)
    return Task(task.id, train, tuple(test), {**task.meta, META_KEY: spec, **meta})


def _prompt_grids(task: Task, test_index: int) -> list[tuple[str, np.ndarray]]:
    """(label, grid) of every grid the prompt shows before the answer."""
    out = []
    for i, p in enumerate(task.train):
        out += [(f"train[{i}].input", p.input), (f"train[{i}].output", p.output)]
    out.append((f"test[{test_index}].input", _test(task, test_index).input))
    return out


# ------------------------------------------------------------------------------------------ one cell


def change_cell(
    task: Task,
    cell: tuple[int, int] | None = None,
    colour: int | None = None,
    *,
    test_index: int = 0,
    seed: int = 0,
) -> Task:
    """The task with cell (row, col) of the test input recoloured; a missing cell or colour is drawn from
    ``seed`` (the colour always differs from the old one)."""
    grid = np.asarray(_test(task, test_index).input)
    h, w = grid.shape
    rng = np.random.default_rng(seed)
    if cell is None:
        cell = (int(rng.integers(h)), int(rng.integers(w)))
    r, c = (int(x) for x in cell)
    if not (0 <= r < h and 0 <= c < w):
        raise AnalysisError(
            f"task {task.id}: cell ({r}, {c}) is outside the {h}x{w} test input; rows 0..{h - 1}, "
            f"columns 0..{w - 1}"
        )
    old = int(grid[r, c])
    if colour is None:
        colour = int(rng.choice([k for k in range(N_COLOURS) if k != old]))
    colour = int(colour)
    if not 0 <= colour < N_COLOURS:
        raise AnalysisError(f"task {task.id}: colour {colour} is not one of 0..9")
    if colour == old:
        raise AnalysisError(
            f"task {task.id}: test input cell ({r}, {c}) already has colour {old}; pick another colour"
        )
    new = grid.copy()
    new[r, c] = colour
    return _with(task, task.train, _frozen(new), test_index, f"cell:{r},{c}={colour}")


# ----------------------------------------------------------------------------------------- swap pair


def _source_tasks(source: Any) -> Iterable[Task]:
    if source is None:
        raise AnalysisError("swap-pair needs a task source to take the other task's pair from (source=)")
    if isinstance(source, str):
        from arcscope.tasks import load

        return load(source)
    return source


def swap_pair(task: Task, index: int | None, source: Any, *, seed: int = 0, test_index: int = 0) -> Task:
    """The task with train pair ``index`` (None: drawn from ``seed``) replaced by a pair of another task in
    ``source`` (a TaskSet, a list of tasks or a source spec) with the same input and output shapes."""
    n = len(task.train)
    rng = np.random.default_rng(seed)
    if index is None:
        index = int(rng.integers(n))
    index = int(index)
    if not 0 <= index < n:
        raise AnalysisError(f"task {task.id}: train pair {index} out of range ({n} train pairs, 0..{n - 1})")
    old = task.train[index]
    want = (old.input.shape, old.output.shape)
    found: list[tuple[str, str, Pair]] = []
    for other in _source_tasks(source):
        if other.id == task.id:
            continue
        named = [(f"train[{j}]", p) for j, p in enumerate(other.train)]
        named += [(f"test[{j}]", p) for j, p in enumerate(other.test) if p.output is not None]
        for where, p in named:
            if (p.input.shape, p.output.shape) == want and p != old:
                found.append((other.id, where, p))
    if not found:
        raise AnalysisError(
            f"task {task.id}: no other task in the source has a pair with a {want[0][0]}x{want[0][1]} input "
            f"and a {want[1][0]}x{want[1][1]} output to swap for train pair {index}; use another source or "
            "another corruption"
        )
    other_id, where, pair = found[int(rng.integers(len(found)))]
    train = list(task.train)
    train[index] = pair
    return _with(
        task,
        tuple(train),
        _test(task, test_index).input,
        test_index,
        f"swap-pair:{index}",
        swapped_from=f"{other_id} {where}",
    )


# ------------------------------------------------------------------------------------------- colours


def permute_colours(
    task: Task,
    perm: list[int] | tuple[int, ...] | None = None,
    *,
    keep_background: bool = True,
    seed: int = 0,
    test_index: int = 0,
) -> Task:
    """The task with colour ``i`` of every prompt grid (train pairs, test input) made ``perm[i]``; ``perm``
    None draws one from ``seed`` that changes the prompt (colour 0 fixed when ``keep_background``)."""
    from arcscope.tasks.augment import AugmentationError, ColourPermutation

    grids = _prompt_grids(task, test_index)
    used = set(np.unique(np.concatenate([np.asarray(g).ravel() for _, g in grids])).tolist())
    if perm is None:
        rng = np.random.default_rng(seed)
        movable = used - ({0} if keep_background else set())
        if not movable:
            raise AnalysisError(
                f"task {task.id}: the prompt uses only colour 0, which is kept; permute with "
                "keep_background=False (spec colours:all) or use another corruption"
            )
        for _ in range(1000):  # a uniform draw moves a used colour with probability >= 1/2 on each try
            cp = ColourPermutation.random(rng, keep_background=keep_background)
            if any(cp.perm[k] != k for k in used):
                break
    else:
        try:
            cp = ColourPermutation(perm)
        except AugmentationError as e:
            raise AnalysisError(f"task {task.id}: {e}") from None
        if not any(cp.perm[k] != k for k in used):
            raise AnalysisError(
                f"task {task.id}: colour permutation {cp.name} moves none of the prompt's colours "
                f"{sorted(used)}; it would not change the prompt"
            )
    train = tuple(Pair(cp.apply_grid(p.input), cp.apply_grid(p.output)) for p in task.train)
    test_in = cp.apply_grid(_test(task, test_index).input)
    return _with(task, train, test_in, test_index, f"colours:{cp.name}")


# ------------------------------------------------------------------------------------------ dihedral


def shape_preserving(task: Task, *, test_index: int = 0) -> tuple[int, ...]:
    """The dihedral transforms (0..7) that keep the shape of every prompt grid of ``task``."""
    grids = _prompt_grids(task, test_index)
    square = all(g.shape[0] == g.shape[1] for _, g in grids)
    return tuple(range(8)) if square else ANY_SHAPE


def dihedral(task: Task, k: int | None = None, *, seed: int = 0, test_index: int = 0) -> Task:
    """The prompt grids (train pairs, test input) under dihedral transform ``k`` (``d0``..``d7`` as in
    arcscope.tasks.augment); ``k`` None draws one from ``seed`` among the shape-keeping ones that change the
    prompt."""
    from arcscope.tasks.augment import DIHEDRAL_NAMES, Dihedral

    grids = _prompt_grids(task, test_index)
    allowed = shape_preserving(task, test_index=test_index)

    def changes(j: int) -> bool:
        d = Dihedral(j)
        return any(not np.array_equal(d.apply_grid(g), g) for _, g in grids)

    if k is None:
        options = [j for j in allowed if j != 0 and changes(j)]
        if not options:
            raise AnalysisError(
                f"task {task.id}: every shape-keeping dihedral transform leaves the prompt unchanged "
                "(its grids are symmetric); use another corruption"
            )
        k = int(options[int(np.random.default_rng(seed).integers(len(options)))])
    k = int(k)
    if not 0 <= k <= 7:
        raise AnalysisError(f"task {task.id}: a dihedral transform is numbered 0..7 (d0..d7), got {k}")
    if k not in allowed:
        label, g = next((lab, g) for lab, g in grids if g.shape[0] != g.shape[1])
        raise AnalysisError(
            f"task {task.id}: d{k} ({DIHEDRAL_NAMES[k]}) swaps rows and columns, which changes the shape of "
            f"the {g.shape[0]}x{g.shape[1]} grid {label}; use d2, d4 or d5 (shape-keeping) on this task"
        )
    if not changes(k):
        raise AnalysisError(
            f"task {task.id}: d{k} ({DIHEDRAL_NAMES[k]}) leaves every prompt grid unchanged; it is no corruption"
        )
    d = Dihedral(k)
    train = tuple(Pair(d.apply_grid(p.input), d.apply_grid(p.output)) for p in task.train)
    test_in = d.apply_grid(_test(task, test_index).input)
    return _with(task, train, test_in, test_index, f"dihedral:d{k}")


# ---------------------------------------------------------------------------------------------- spec


def corrupt(task: Task, spec: str, *, seed: int = 0, source: Any = None, test_index: int = 0) -> Task:
    """The corruption of ``task`` a spec string names (see the module docstring); ``source`` is where
    swap-pair looks for the other task's pair."""
    text = str(spec).strip()
    kind, _, arg = text.partition(":")
    kind, arg = kind.strip().lower().replace("_", "-"), arg.strip()
    kind = {"colors": "colours", "swap": "swap-pair", "swappair": "swap-pair"}.get(kind, kind)

    def bad(form: str) -> AnalysisError:
        return AnalysisError(f"task {task.id}: corruption {spec!r}: expected {form}")

    if kind == "cell":
        if not arg:
            return change_cell(task, seed=seed, test_index=test_index)
        m = re.fullmatch(r"(\d+)\s*,\s*(\d+)\s*(?:=\s*(\d+))?", arg)
        if not m:
            raise bad("cell, cell:ROW,COL or cell:ROW,COL=COLOUR")
        colour = None if m.group(3) is None else int(m.group(3))
        return change_cell(task, (int(m.group(1)), int(m.group(2))), colour, seed=seed, test_index=test_index)
    if kind == "swap-pair":
        if arg and not arg.isdigit():
            raise bad("swap-pair or swap-pair:INDEX (a train pair index)")
        return swap_pair(task, int(arg) if arg else None, source, seed=seed, test_index=test_index)
    if kind == "colours":
        if not arg:
            return permute_colours(task, seed=seed, test_index=test_index)
        if arg in ("all", "keep0=false", "no-keep0"):
            return permute_colours(task, keep_background=False, seed=seed, test_index=test_index)
        if re.fullmatch(r"c?\d{10}", arg):
            return permute_colours(task, [int(x) for x in arg.lstrip("c")], test_index=test_index)
        raise bad("colours, colours:all or colours:cDDDDDDDDDD (digit i: the new colour of colour i)")
    if kind == "dihedral":
        if not arg:
            return dihedral(task, seed=seed, test_index=test_index)
        m = re.fullmatch(r"d?([0-7])", arg)
        if not m:
            raise bad("dihedral or dihedral:dK with K in 0..7")
        return dihedral(task, int(m.group(1)), test_index=test_index)
    raise AnalysisError(
        f"task {task.id}: corruption {spec!r}: kind {kind!r} is not one of {', '.join(CORRUPTIONS)}"
    )


def corrupt_subject(subject: Any, spec: str, *, seed: int = 0, source: Any = None) -> Any:
    """``subject``'s task corrupted by ``spec`` as a Subject with the same model and prompt settings,
    checked to line up with ``subject`` token by token (:func:`aligned`)."""
    bad = subject.with_task(
        corrupt(subject.task, spec, seed=seed, source=source, test_index=subject.test_index)
    )
    aligned(subject, bad)
    return bad


def describe(task: Task) -> str | None:
    """The resolved corruption spec a corrupted task records (None for a clean task)."""
    spec = task.meta.get(META_KEY)
    if spec and task.meta.get("swapped_from"):
        return f"{spec} (from {task.meta['swapped_from']})"
    return spec


# --------------------------------------------------------------------------------------------- check

_FIELDS = ("role", "segment", "pair", "row", "col")


def aligned(clean: Any, corrupt: Any) -> np.ndarray:
    """Check that two Subjects' tokens line up cell for cell (same length, same role/segment/pair/row/col
    at every position, same answer tokens); return the positions whose tokens differ. AnalysisError names
    the first position that breaks the rule."""
    a, b = clean.cell_map, corrupt.cell_map
    tid = getattr(clean, "task_id", "?")

    def tok(cm: Any, p: int) -> str:
        return repr(clean.tokenizer.decode([int(cm.input_ids[p])]))

    if len(a) != len(b):
        diff = np.flatnonzero(a.input_ids[: min(len(a), len(b))] != b.input_ids[: min(len(a), len(b))])
        first = int(diff[0]) if len(diff) else min(len(a), len(b))
        raise AnalysisError(
            f"task {tid}: the clean prompt has {len(a)} tokens and the corrupted one {len(b)} (first token "
            f"that differs at position {first}); patching needs both prompts aligned token by token, so a "
            "corruption must keep every grid's shape and each cell one token"
        )
    for f in _FIELDS:
        x, y = np.asarray(getattr(a, f)), np.asarray(getattr(b, f))
        bad = np.flatnonzero(x != y)
        if len(bad):
            p = int(bad[0])
            raise AnalysisError(
                f"task {tid}: position {p} has {f} {int(x[p])} in the clean prompt (token {tok(a, p)}) and "
                f"{int(y[p])} in the corrupted one (token {tok(b, p)}); patching needs the two prompts' cells "
                "at the same positions"
            )
    ca, cb = clean.answer, corrupt.answer
    if not (np.array_equal(ca.token_pos, cb.token_pos) and np.array_equal(ca.target, cb.target)):
        raise AnalysisError(
            f"task {tid}: the clean and corrupted prompts end in different answers; a corruption must keep "
            "the test output so both are measured on the same answer"
        )
    return np.flatnonzero(np.asarray(a.input_ids) != np.asarray(b.input_ids)).astype(np.int64)


__all__ = [
    "ANY_SHAPE",
    "CORRUPTIONS",
    "META_KEY",
    "aligned",
    "change_cell",
    "corrupt",
    "corrupt_subject",
    "describe",
    "dihedral",
    "permute_colours",
    "shape_preserving",
    "swap_pair",
]
