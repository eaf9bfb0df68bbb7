"""A task family: a seeded input sampler plus a ground-truth arc-dsl program, and the checks on what it makes.

:meth:`Family.task` draws one task from a seed: the per-task parameters first (a colour map, a shift, a
direction), then 2-5 train and 1-2 test inputs, each output computed by the program. A pair is drawn again
when its output is no valid grid, equals its input (for any rule but the identity), or repeats an earlier
input; the whole task is drawn again when a rival rule (:data:`RIVALS`: the identity, another dihedral
transform, a cell-wise colour map, a constant output, or a rival the family names) also fits every train
pair, and a test input is drawn again when it needs something the train pairs never showed (a colour a
colour map was never seen on, an object size a size table was never seen for). The task records its family,
program and parameters in ``Task.meta`` (JSONL and Parquet keep it), so :func:`check_task` can re-run it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from arcscope.config import Config, field_defaults
from arcscope.families.sampling import GenerationError, from_dsl, to_dsl
from arcscope.tasks.core import MAX_SIDE, Pair, Task

GENERATOR = "arcscope.families/1"
"""Recorded in ``Task.meta['generator']``: bump when a change makes a seed give another task."""

PAIR_TRIES = 200
"""Draws of one pair before the task attempt is given up."""
TASK_TRIES = 60
"""Task attempts before :meth:`Family.task` raises a GenerationError naming the family and knobs."""

Params = dict[str, Any]
"""A family's per-task parameters: JSON values only (ints, strings, lists), so meta round-trips them."""
Sampler = Callable[[np.random.Generator, Params, "Knobs"], "np.ndarray | None"]
"""Draws one input grid (numpy ``uint8``, background 0) for the parameters, or None to draw again."""


@dataclass
class Knobs(Config):
    """What generated tasks look like: input sizes, object counts, colours and pair counts."""

    config_error: ClassVar[type] = GenerationError
    config_name: ClassVar[str] = "knobs"

    min_side: int = 3
    """Smallest input grid side (rows and columns); families that need more use their own minimum."""
    max_side: int = 10
    """Largest input grid side; families whose output grows (scaling, tiling) cap the input so it fits 30."""
    min_objects: int = 1
    """Fewest objects (shapes, seeds, boxes) in an input of an object family."""
    max_objects: int = 4
    """Most objects in an input of an object family (a family may need fewer, e.g. count-as-grid, 9)."""
    colours: list[int] = field(default_factory=lambda: list(range(1, 10)))
    """Foreground colours inputs may use (1..9; 0 is the background). Outputs may hold a family's own colours."""
    min_train: int = 2
    """Fewest train (demonstration) pairs per task."""
    max_train: int = 5
    """Most train pairs per task."""
    min_test: int = 1
    """Fewest test pairs per task."""
    max_test: int = 2
    """Most test pairs per task."""

    def validate(self) -> Knobs:
        """Check the ranges and the palette."""

        def bad(msg: str) -> GenerationError:
            return GenerationError(f"knobs: {msg}")

        for lo, hi, top in (
            ("min_side", "max_side", MAX_SIDE),
            ("min_objects", "max_objects", 30),
            ("min_train", "max_train", 10),
            ("min_test", "max_test", 10),
        ):
            a, b = getattr(self, lo), getattr(self, hi)
            if not 1 <= a <= b <= top:
                raise bad(f"need 1 <= {lo} <= {hi} <= {top}, got {lo}={a}, {hi}={b}")
        cs = [int(c) for c in self.colours]
        if not cs or any(not 1 <= c <= 9 for c in cs) or len(set(cs)) != len(cs):
            raise bad(f"colours must be distinct foreground colours 1..9, got {self.colours}")
        self.colours = sorted(cs)
        return self

    def changed(self) -> dict[str, Any]:
        """The knobs that differ from the defaults (what a task's meta records)."""
        base = field_defaults(Knobs)
        return {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if getattr(self, f.name) != base[f.name]
        }


def make_knobs(knobs: Knobs | Mapping[str, Any] | None = None, **options: Any) -> Knobs:
    """A validated :class:`Knobs` from a Knobs, a mapping or None, with keyword knobs on top."""
    from arcscope.config import make_config

    return make_config(Knobs, knobs, options)


# ------------------------------------------------------------------------------------------- rivals


def np_dihedral(name: str) -> Callable[[np.ndarray], np.ndarray]:
    """The numpy spelling of an arc-dsl grid transform (independent of the programs it checks)."""
    return {
        "identity": lambda g: g,
        "rot90": lambda g: np.rot90(g, -1),
        "rot180": lambda g: np.rot90(g, 2),
        "rot270": lambda g: np.rot90(g, 1),
        "hmirror": lambda g: g[::-1, :],
        "vmirror": lambda g: g[:, ::-1],
        "dmirror": lambda g: g.T,
        "cmirror": lambda g: np.rot90(g, 2).T,
    }[name]


DIHEDRAL = ("identity", "rot90", "rot180", "rot270", "hmirror", "vmirror", "dmirror", "cmirror")
"""The 8 symmetries of the square under their arc-dsl names (``hmirror`` flips top-bottom)."""


def _fits_map(f: Callable[[np.ndarray], np.ndarray]) -> Callable[[list[Pair]], bool]:
    def fits(train: list[Pair]) -> bool:
        for p in train:
            g = f(p.input)
            if g.shape != p.output.shape or not np.array_equal(g, p.output):
                return False
        return True

    return fits


def _fits_colour_map(train: list[Pair]) -> bool:
    """One colour table (input colour -> output colour) explains every train pair, cell by cell."""
    table = np.full(10, -1, dtype=np.int16)
    for p in train:
        if p.input.shape != p.output.shape:
            return False
        pairs = np.unique(p.input.astype(np.int16) * 10 + p.output, return_counts=False)
        src, dst = pairs // 10, pairs % 10
        if len(np.unique(src)) != len(src):
            return False
        known = table[src]
        if np.any((known >= 0) & (known != dst)):
            return False
        table[src] = dst
    return True


def _fits_constant(train: list[Pair]) -> bool:
    """Every train output is the same grid (needs two pairs to mean anything)."""
    if len(train) < 2:
        return False
    first = train[0].output
    return all(p.output.shape == first.shape and np.array_equal(p.output, first) for p in train[1:])


Rival = Callable[[list[Pair]], bool]
"""A rival rule, as a test of whether it explains every train pair."""


def program_rival(program: Callable[..., Any], **params: Any) -> Rival:
    """A rival rule given as an arc-dsl program with fixed parameters."""

    def fits(train: list[Pair]) -> bool:
        for p in train:
            try:
                got = from_dsl(program(to_dsl(p.input), **params))
            except (ValueError, IndexError, StopIteration):
                return False
            if got.shape != p.output.shape or not np.array_equal(got, p.output):
                return False
        return True

    return fits


RIVALS: dict[str, Rival] = {
    **{name: _fits_map(np_dihedral(name)) for name in DIHEDRAL},
    "colour_map": _fits_colour_map,
    "constant": _fits_constant,
}
"""The simple rules checked against every family's train pairs (a family skips those that equal its own)."""


# ------------------------------------------------------------------------------------------- family


def _no_params(rng: np.random.Generator, knobs: Knobs) -> Params:
    return {}


@dataclass(frozen=True)
class Family:
    """A task family: a seeded input sampler and the arc-dsl program that computes every output."""

    name: str
    """Registry name (``rot90``, ``gravity``, ...)."""
    description: str
    """The rule in one line."""
    program: Callable[..., Any]
    """The ground truth: ``program(I, **params)`` on an arc-dsl grid, written with :mod:`arcscope.dsl`."""
    sample: Sampler
    """Draws one input grid for the task's parameters."""
    params: Callable[[np.random.Generator, Knobs], Params] = _no_params
    """Draws the per-task parameters (JSON values) from the task's generator."""
    source: Callable[[Params, tuple[int, int]], np.ndarray] | None = None
    """For rules that only move cells: the input cell of every output cell (see :meth:`source_map`)."""
    same_as: frozenset[str] = frozenset()
    """Rivals in :data:`RIVALS` that are this rule itself (never a reason to reject)."""
    rivals: Callable[[Params], Sequence[tuple[str, Rival]]] | None = None
    """Extra rival rules for a task's parameters (the same rule with other parameters, a related family)."""
    needs: Callable[[Params, np.ndarray], frozenset] | None = None
    """What an input needs the train pairs to have shown (colours, sizes); a test input's must be covered."""
    keeps_input: bool = False
    """True only for the identity: an output may equal its input."""
    tags: tuple[str, ...] = ()
    """Groups: ``dihedral``, ``colour``, ``moves-cells``, ``objects``, ``composition`` ..."""

    @property
    def program_name(self) -> str:
        """The program's function name (recorded in ``Task.meta['program']``)."""
        return self.program.__name__

    @property
    def moves_cells(self) -> bool:
        """True when every output cell is a copy of one input cell (or background) and the map is known."""
        return self.source is not None

    def run(self, params: Params, grid: np.ndarray) -> np.ndarray:
        """The program's output for ``grid`` (numpy in, numpy out; the program sees arc-dsl tuples)."""
        return from_dsl(self.program(to_dsl(np.asarray(grid)), **params))

    def source_map(self, params: Params, input_shape: tuple[int, int]) -> np.ndarray:
        """``int64 [h_out, w_out, 2]``: the input (row, col) each output cell copies; ``-1, -1`` where the
        rule writes background instead (cells a cropping shift brings in)."""
        if self.source is None:
            raise GenerationError(f"family {self.name!r} does not only move cells: it has no source map")
        h, w = (int(x) for x in input_shape)
        return np.asarray(self.source(params, (h, w)), dtype=np.int64)

    # -------------------------------------------------------------------------------- generation

    def _output(self, params: Params, grid: np.ndarray) -> np.ndarray | None:
        try:
            out = self.run(params, grid)
        except (ValueError, IndexError, StopIteration):
            return None  # an unlucky input the program cannot handle (e.g. no object at all): draw again
        if out.ndim != 2 or not (1 <= out.shape[0] <= MAX_SIDE and 1 <= out.shape[1] <= MAX_SIDE):
            return None
        if out.size and out.max() > 9:
            return None
        if not self.keeps_input and out.shape == grid.shape and np.array_equal(out, grid):
            return None
        return out

    def _pair(
        self,
        rng: np.random.Generator,
        params: Params,
        knobs: Knobs,
        seen: set[bytes],
        covered: frozenset | None = None,
    ) -> Pair | None:
        for _ in range(PAIR_TRIES):
            grid = self.sample(rng, params, knobs)
            if grid is None:
                continue
            grid = np.ascontiguousarray(grid, dtype=np.uint8)
            key = bytes(grid.shape) + grid.tobytes()
            if key in seen:
                continue
            if covered is not None and self.needs is not None and not self.needs(params, grid) <= covered:
                continue
            out = self._output(params, grid)
            if out is None:
                continue
            seen.add(key)
            grid.setflags(write=False)
            out.setflags(write=False)
            return Pair(grid, out)
        return None

    def fitting_rivals(self, train: Iterable[Pair], params: Params | None = None) -> list[str]:
        """The rival rules (generic, and this family's for ``params``) that explain every pair of ``train`` too."""
        train = list(train)
        out = [name for name, fits in RIVALS.items() if name not in self.same_as and fits(train)]
        if self.rivals is not None:
            out += [name for name, fits in self.rivals(params or {}) if fits(train)]
        return out

    def task(
        self,
        seed: int,
        index: int = 0,
        knobs: Knobs | Mapping[str, Any] | None = None,
        task_id: str | None = None,
    ) -> Task:
        """The task number ``index`` of ``seed``: the same arguments give the same task, on any machine."""
        knobs = knobs if isinstance(knobs, Knobs) else make_knobs(knobs)
        rng = np.random.default_rng([int(seed), int(index)])
        try:
            for _ in range(TASK_TRIES):
                task = self._attempt(rng, knobs, seed, index, task_id)
                if task is not None:
                    return task
        except GenerationError as e:
            raise GenerationError(f"family {self.name!r}: {e}") from None
        raise GenerationError(
            f"family {self.name!r}: no unambiguous task in {TASK_TRIES} attempts under knobs "
            f"{knobs.changed() or 'default'}; widen the sizes, objects or colours"
        )

    def _attempt(
        self, rng: np.random.Generator, knobs: Knobs, seed: int, index: int, task_id: str | None
    ) -> Task | None:
        params = self.params(rng, knobs)
        n_train = int(rng.integers(knobs.min_train, knobs.max_train + 1))
        n_test = int(rng.integers(knobs.min_test, knobs.max_test + 1))
        seen: set[bytes] = set()
        train = []
        for _ in range(n_train):
            p = self._pair(rng, params, knobs, seen)
            if p is None:
                return None
            train.append(p)
        if self.fitting_rivals(train, params):
            return None
        covered = None
        if self.needs is not None:
            covered = frozenset().union(*(self.needs(params, p.input) for p in train))
        test = []
        for _ in range(n_test):
            p = self._pair(rng, params, knobs, seen, covered)
            if p is None:
                return None
            test.append(p)
        meta: dict[str, Any] = {
            "family": self.name,
            "program": self.program_name,
            "params": params,
            "seed": int(seed),
            "index": int(index),
            "generator": GENERATOR,
        }
        if changed := knobs.changed():
            meta["knobs"] = changed
        tid = task_id if task_id is not None else f"{self.name}-{seed}-{index}"
        return Task(tid, tuple(train), tuple(test), meta)


# ------------------------------------------------------------------------------------------- checks


def check_task(task: Task, family: Family | None = None) -> list[str]:
    """What is wrong with a generated task (empty when nothing): every pair re-run through its program,
    outputs that equal inputs, rival rules that fit, test inputs the train pairs do not cover."""
    if family is None:
        from arcscope.families.registry import get_family

        name = task.meta.get("family")
        if not isinstance(name, str):
            return [f"task {task.id}: meta has no 'family' (not a generated task)"]
        family = get_family(name)
    params = task.meta.get("params", {})
    problems = []
    for where, pairs in (("train", task.train), ("test", task.test)):
        for i, p in enumerate(pairs):
            try:
                got = family.run(params, p.input)
            except Exception as e:  # a report, not a crash: any failure of the program is a finding
                problems.append(f"{where}[{i}]: program {family.program_name} raised {type(e).__name__}: {e}")
                continue
            if p.output is None or got.shape != p.output.shape or not np.array_equal(got, p.output):
                problems.append(f"{where}[{i}]: output is not {family.program_name}(input)")
            if not family.keeps_input and p.output is not None and np.array_equal(p.input, p.output):
                problems.append(f"{where}[{i}]: output equals input")
    if not problems:
        for name in family.fitting_rivals(task.train, params):
            problems.append(f"rival rule {name!r} fits every train pair too")
        if family.needs is not None:
            covered = frozenset().union(*(family.needs(params, p.input) for p in task.train))
            for i, p in enumerate(task.test):
                missing = family.needs(params, p.input) - covered
                if missing:
                    problems.append(f"test[{i}]: needs {sorted(missing)} that no train input shows")
    return problems


__all__ = [
    "DIHEDRAL",
    "GENERATOR",
    "RIVALS",
    "Family",
    "GenerationError",
    "Knobs",
    "Params",
    "Rival",
    "Sampler",
    "check_task",
    "make_knobs",
    "np_dihedral",
    "program_rival",
]
