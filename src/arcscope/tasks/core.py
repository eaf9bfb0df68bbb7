"""Grids, pairs, tasks and task sets: the shared vocabulary of arcscope.

A grid is a numpy ``uint8`` array of shape ``(h, w)`` with 1 <= h, w <= 30 and values 0..9. Everything that
enters arcscope from outside goes through :func:`as_grid` once, so code past the boundary can trust it.
"""

from __future__ import annotations

import hashlib
import reprlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import chain
from typing import Any

import numpy as np

from arcscope.errors import TaskFormatError

Grid = np.ndarray
"""A validated ARC grid: ``uint8``, shape ``(h, w)``, 1..30 each side, values 0..9."""

MAX_SIDE = 30
N_COLOURS = 10


_COLOURS = frozenset(range(N_COLOURS))

# A bad cell is named in one short line even when it is a huge number or a deeply nested list.
_SHORT = reprlib.Repr()  # Python 3.11's Repr takes no keyword arguments
_SHORT.maxlevel, _SHORT.maxlist, _SHORT.maxstring, _SHORT.maxother, _SHORT.maxlong = 2, 4, 30, 30, 30


class JsonObject(dict):
    """A parsed JSON object that held some key more than once (readers build it; plain dicts otherwise).

    The dict keeps the last value of each key, as :mod:`json` does; ``pairs`` keeps every ``(key, value)``
    in file order and ``duplicates`` names the repeated keys, so a reader can report them instead of
    silently dropping all but one.
    """

    def __init__(self, pairs: list[tuple[str, Any]]):
        super().__init__(pairs)
        self.pairs = pairs
        seen: set[str] = set()
        repeated: dict[str, None] = {}
        for k, _ in pairs:
            if k in seen:
                repeated[k] = None
            seen.add(k)
        self.duplicates = tuple(repeated)


def _duplicate_rule(obj: Any) -> str | None:
    if isinstance(obj, JsonObject) and obj.duplicates:
        return (
            f"duplicate key {obj.duplicates[0]!r}: a JSON object may hold each key once "
            f"(all but one value would be silently dropped)"
        )
    return None


_INT_ONLY = {int}
_LIST_ONLY = {list}


def _fast_grid(obj: Any) -> Grid | None:
    """The common case (a list of equal-length lists of ints 0..9) checked with C-level set passes.

    Returns None whenever anything is unusual, so the slow path below finds the exact rule and message.
    """
    if type(obj) is not list or not 0 < len(obj) <= MAX_SIDE:
        return None
    row0 = obj[0]
    if type(row0) is not list or not 0 < len(row0) <= MAX_SIDE:
        return None
    if set(map(type, obj)) != _LIST_ONLY or set(map(len, obj)) != {len(row0)}:
        return None
    # The type pass must come first: True == 1, so a bool would hide in the value set.
    if set(map(type, chain.from_iterable(obj))) != _INT_ONLY:
        return None
    if not set(chain.from_iterable(obj)) <= _COLOURS:
        return None
    out = np.array(obj, dtype=np.uint8)
    out.setflags(write=False)
    return out


def as_grid(
    obj: Any,
    *,
    source: str | None = None,
    task_id: str | None = None,
    where: str | None = None,
    line: int | None = None,
) -> Grid:
    """Validate ``obj`` (nested lists or an array) and return it as a read-only uint8 grid."""
    fast = _fast_grid(obj)
    if fast is not None:
        return fast

    def fail(rule: str) -> TaskFormatError:
        return TaskFormatError(rule, source=source, task_id=task_id, where=where, line=line)

    if isinstance(obj, np.ndarray):
        arr = obj
        if arr.ndim != 2:
            raise fail(f"a grid must be 2-dimensional, got an array of shape {arr.shape}")
        if arr.dtype.kind == "f":
            if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
                raise fail("grid cells must be integers 0..9, found a non-integer number")
        elif arr.dtype.kind not in "iub":
            raise fail(f"grid cells must be integers 0..9, got dtype {arr.dtype}")
    else:
        if not isinstance(obj, (list, tuple)):
            raise fail(f"a grid must be a list of rows, got {type(obj).__name__}")
        if len(obj) == 0:
            raise fail("a grid must have 1..30 rows, got 0")
        width = None
        for r, row in enumerate(obj):
            if not isinstance(row, (list, tuple)):
                raise fail(f"row {r} must be a list of cells, got {type(row).__name__}")
            if width is None:
                width = len(row)
            elif len(row) != width:
                raise fail(f"ragged grid: row {r} has {len(row)} cells, row 0 has {width}")
            for c, v in enumerate(row):
                # bool is an int subclass; a JSON true/false in a grid is a mistake, not a colour.
                if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                    if isinstance(v, float) and v.is_integer():
                        continue
                    raise fail(f"cell ({r}, {c}) is {_SHORT.repr(v)}: grid cells must be integers 0..9")
        try:
            arr = np.asarray(obj, dtype=np.int64)
        except (OverflowError, ValueError) as e:
            raise fail(f"grid cells must be integers 0..9 ({e})") from None
    h, w = arr.shape
    if not (1 <= h <= MAX_SIDE and 1 <= w <= MAX_SIDE):
        raise fail(f"grid size {h}x{w} is outside 1..30 x 1..30")
    if arr.size and (arr.min() < 0 or arr.max() >= N_COLOURS):
        bad = arr[(arr < 0) | (arr >= N_COLOURS)].flat[0]
        pos = tuple(int(x) for x in np.argwhere((arr < 0) | (arr >= N_COLOURS))[0])
        raise fail(f"cell {pos} has colour {int(bad)}: colours must be 0..9")
    out = np.ascontiguousarray(arr, dtype=np.uint8)
    if out is arr:
        out = out.copy()
    out.setflags(write=False)
    return out


def grid_to_list(grid: Grid) -> list[list[int]]:
    """Convert a grid to nested Python lists of ints (the ARC JSON form)."""
    return np.asarray(grid).tolist()


def grids_equal(a: Grid | None, b: Grid | None) -> bool:
    """Exact equality of two grids (shape and every cell); None equals only None."""
    if a is None or b is None:
        return a is None and b is None
    return a.shape == b.shape and bool(np.array_equal(a, b))


@dataclass(frozen=True, eq=False)
class Pair:
    """One input/output example. ``output`` is None when the answer is unknown."""

    input: Grid
    output: Grid | None = None

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Pair):
            return NotImplemented
        return grids_equal(self.input, other.input) and grids_equal(self.output, other.output)

    __hash__ = None  # type: ignore[assignment]

    def to_json(self) -> dict[str, Any]:
        """The ARC JSON form of this pair (``output`` omitted when unknown)."""
        d: dict[str, Any] = {"input": grid_to_list(self.input)}
        if self.output is not None:
            d["output"] = grid_to_list(self.output)
        return d


@dataclass(frozen=True, eq=False)
class Task:
    """An ARC task: demonstration pairs (``train``) and test pairs whose outputs may be unknown."""

    id: str
    train: tuple[Pair, ...]
    test: tuple[Pair, ...]
    meta: dict[str, Any] = field(default_factory=dict)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Task):
            return NotImplemented
        return self.id == other.id and self.train == other.train and self.test == other.test

    __hash__ = None  # type: ignore[assignment]

    @property
    def pairs(self) -> tuple[Pair, ...]:
        """All pairs, train first then test."""
        return self.train + self.test

    @property
    def has_test_outputs(self) -> bool:
        """True when every test pair has a known output."""
        return all(p.output is not None for p in self.test)

    def content_hash(self) -> str:
        """A stable sha256 of the grids (not the id): same content gives the same hash from any source."""
        h = hashlib.sha256()
        for name, pairs in (("train", self.train), ("test", self.test)):
            h.update(f"{name}:{len(pairs)};".encode())
            for p in pairs:
                for g in (p.input, p.output):
                    if g is None:
                        h.update(b"-;")
                    else:
                        h.update(f"{g.shape[0]}x{g.shape[1]}:".encode())
                        h.update(np.ascontiguousarray(g, dtype=np.uint8).tobytes())
                        h.update(b";")
        return h.hexdigest()

    def with_id(self, new_id: str) -> Task:
        """A copy of this task under another id."""
        return Task(new_id, self.train, self.test, dict(self.meta))

    def to_json(self) -> dict[str, Any]:
        """The ARC JSON form: ``{"train": [...], "test": [...]}``."""
        return {"train": [p.to_json() for p in self.train], "test": [p.to_json() for p in self.test]}

    @classmethod
    def from_json(
        cls,
        task_id: str,
        obj: Any,
        *,
        source: str | None = None,
        line: int | None = None,
        meta: dict[str, Any] | None = None,
    ) -> Task:
        """Build and validate a task from its ARC JSON form (``{"train": [...], "test": [...]}``)."""

        def fail(rule: str, where: str | None = None) -> TaskFormatError:
            return TaskFormatError(rule, source=source, task_id=task_id, where=where, line=line)

        if not isinstance(obj, dict):
            raise fail(f"a task must be a JSON object with 'train' and 'test', got {type(obj).__name__}")
        if rule := _duplicate_rule(obj):
            raise fail(rule)
        for key in ("train", "test"):
            if key not in obj:
                raise fail(f"missing key '{key}'")
            if not isinstance(obj[key], list):
                raise fail(f"'{key}' must be a list of pairs, got {type(obj[key]).__name__}")
        if len(obj["train"]) == 0:
            raise fail("empty train set: a task needs at least one demonstration pair")
        if len(obj["test"]) == 0:
            raise fail("empty test set: a task needs at least one test pair")
        parts: dict[str, list[Pair]] = {"train": [], "test": []}
        for key in ("train", "test"):
            for i, p in enumerate(obj[key]):
                where = f"{key}[{i}]"
                if not isinstance(p, dict):
                    raise fail(
                        f"a pair must be an object with 'input' and 'output', got {type(p).__name__}", where
                    )
                if rule := _duplicate_rule(p):
                    raise fail(rule, where)
                if "input" not in p:
                    raise fail("missing key 'input'", where)
                if key == "train" and p.get("output") is None:
                    raise fail("missing key 'output' (demonstration pairs need outputs)", where)
                kw = dict(source=source, task_id=task_id, line=line)
                inp = as_grid(p["input"], where=f"{where}.input", **kw)
                out = p.get("output")
                out = None if out is None else as_grid(out, where=f"{where}.output", **kw)
                parts[key].append(Pair(inp, out))
        return cls(task_id, tuple(parts["train"]), tuple(parts["test"]), dict(meta or {}))


class TaskSet(Sequence[Task]):
    """An ordered collection of tasks with unique ids, indexable by position or id."""

    def __init__(
        self, tasks: Iterable[Task], name: str = "tasks", skipped: list[tuple[str, str]] | None = None
    ):
        self.name = name
        self._tasks: list[Task] = []
        self._by_id: dict[str, int] = {}
        for t in tasks:
            if t.id in self._by_id:
                raise TaskFormatError("duplicate task id", source=name, task_id=t.id)
            self._by_id[t.id] = len(self._tasks)
            self._tasks.append(t)
        self.skipped: list[tuple[str, str]] = list(skipped or [])
        """Items skipped while loading with ``on_error="skip"``: (where, reason)."""

    def __len__(self) -> int:
        return len(self._tasks)

    def __getitem__(self, key):  # type: ignore[override]
        if isinstance(key, str):
            try:
                return self._tasks[self._by_id[key]]
            except KeyError:
                from arcscope.errors import SourceError

                raise SourceError(f"task {key!r} is not in {self.name} ({len(self)} tasks)") from None
        if isinstance(key, slice):
            return TaskSet(self._tasks[key], name=self.name)
        return self._tasks[key]

    def __iter__(self) -> Iterator[Task]:
        return iter(self._tasks)

    def __contains__(self, key: object) -> bool:
        if isinstance(key, str):
            return key in self._by_id
        return key in self._tasks

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TaskSet):
            return NotImplemented
        return self._tasks == other._tasks

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"TaskSet({self.name!r}, {len(self)} tasks)"

    @property
    def ids(self) -> list[str]:
        """Task ids in order."""
        return [t.id for t in self._tasks]

    def filter(self, pred) -> TaskSet:
        """The tasks for which ``pred(task)`` is true."""
        return TaskSet([t for t in self._tasks if pred(t)], name=self.name)

    def sorted_by(self, key) -> TaskSet:
        """A copy sorted by ``key(task)``."""
        return TaskSet(sorted(self._tasks, key=key), name=self.name)
