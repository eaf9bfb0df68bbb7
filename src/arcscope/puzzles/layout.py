"""The HRM on-disk puzzle dataset layout: write it, read it back, check it.

A dataset is a folder with one sub-folder per split (``train``, ``test``) and ``identifiers.json`` beside
them, exactly as sapientinc/HRM's ``dataset/build_*_dataset.py`` write it, so data built here also trains
with the original code::

    DIR/identifiers.json            ["<blank>", name of identifier 1, ...]
    DIR/arcscope.json               what built it (kind, sources, seed, ...); ignored by the original code
    DIR/SPLIT/dataset.json          pad_id, ignore_label_id, blank_identifier_id, vocab_size, seq_len,
                                    num_puzzle_identifiers, total_groups, mean_puzzle_examples, sets
    DIR/SPLIT/SET__inputs.npy       [examples, seq_len] token ids
    DIR/SPLIT/SET__labels.npy       [examples, seq_len] token ids (ignore_label_id where nothing is asked)
    DIR/SPLIT/SET__puzzle_identifiers.npy   int32 [puzzles]: the identifier of each puzzle
    DIR/SPLIT/SET__puzzle_indices.npy       int32 [puzzles + 1]: puzzle p owns examples [i[p], i[p+1])
    DIR/SPLIT/SET__group_indices.npy        int32 [groups + 1]: group g owns puzzles [i[g], i[g+1])

A *group* is one original puzzle with its augmentations; a *puzzle* is one identifier's examples. Training
samples a group, then a puzzle in it, then examples of that puzzle.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from arcscope.errors import ArcscopeError
from arcscope.files import replace_dir

FIELDS = ("inputs", "labels", "puzzle_identifiers", "puzzle_indices", "group_indices")
"""The five arrays of every set, in HRM's file-name order ``SET__FIELD.npy``."""

BLANK = "<blank>"
"""The name HRM gives identifier 0 (no puzzle embedding)."""

INFO_FILE = "arcscope.json"
IDENTIFIERS_FILE = "identifiers.json"
METADATA_FILE = "dataset.json"

__all__ = [
    "FIELDS",
    "BLANK",
    "PuzzleDataError",
    "Metadata",
    "SetArrays",
    "PuzzleSplit",
    "PuzzleDataset",
    "SplitBuilder",
    "DatasetWriter",
    "open_dataset",
]


class PuzzleDataError(ArcscopeError):
    """A puzzle dataset folder is missing files or holds arrays that break the layout."""


@dataclass
class Metadata:
    """The fields of ``dataset.json`` that HRM's ``PuzzleDatasetMetadata`` reads."""

    pad_id: int
    ignore_label_id: int | None
    blank_identifier_id: int
    vocab_size: int
    seq_len: int
    num_puzzle_identifiers: int
    total_groups: int
    mean_puzzle_examples: float
    sets: list[str] = field(default_factory=lambda: ["all"])

    def to_json(self) -> dict[str, Any]:
        """The JSON object HRM expects (same keys, same order as its pydantic model)."""
        return asdict(self)

    @classmethod
    def from_json(cls, obj: Any, source: str) -> Metadata:
        """Validate a parsed ``dataset.json``; a missing or mistyped field names the file and the field."""
        if not isinstance(obj, dict):
            raise PuzzleDataError(f"{source}: dataset.json must be a JSON object, got {type(obj).__name__}")
        kw: dict[str, Any] = {}
        for f in fields(cls):
            if f.name not in obj:
                raise PuzzleDataError(f"{source}: missing field '{f.name}' (HRM's dataset.json needs it)")
            v = obj[f.name]
            if f.name == "sets":
                if not isinstance(v, list) or not v or not all(isinstance(s, str) and s for s in v):
                    raise PuzzleDataError(f"{source}: 'sets' must be a non-empty list of names, got {v!r}")
            elif f.name == "mean_puzzle_examples":
                if isinstance(v, bool) or not isinstance(v, (int, float)):
                    raise PuzzleDataError(f"{source}: 'mean_puzzle_examples' must be a number, got {v!r}")
                v = float(v)
            elif f.name == "ignore_label_id" and v is None:
                pass
            elif isinstance(v, bool) or not isinstance(v, int):
                raise PuzzleDataError(f"{source}: '{f.name}' must be an integer, got {v!r}")
            kw[f.name] = v
        meta = cls(**kw)
        for name in ("vocab_size", "seq_len", "num_puzzle_identifiers"):
            if getattr(meta, name) < 1:
                raise PuzzleDataError(f"{source}: '{name}' must be >= 1, got {getattr(meta, name)}")
        if not 0 <= meta.pad_id < meta.vocab_size:
            raise PuzzleDataError(
                f"{source}: pad_id {meta.pad_id} is outside the vocabulary 0..{meta.vocab_size - 1}"
            )
        if not 0 <= meta.blank_identifier_id < meta.num_puzzle_identifiers:
            raise PuzzleDataError(
                f"{source}: blank_identifier_id {meta.blank_identifier_id} is outside "
                f"0..{meta.num_puzzle_identifiers - 1}"
            )
        return meta


@dataclass
class SetArrays:
    """The five arrays of one set of one split."""

    inputs: np.ndarray
    labels: np.ndarray
    puzzle_identifiers: np.ndarray
    puzzle_indices: np.ndarray
    group_indices: np.ndarray

    @property
    def n_examples(self) -> int:
        """Number of examples (rows of inputs)."""
        return int(self.inputs.shape[0])

    @property
    def n_puzzles(self) -> int:
        """Number of puzzles (identifier slots)."""
        return int(len(self.puzzle_identifiers))

    @property
    def n_groups(self) -> int:
        """Number of groups (original puzzles with their augmentations)."""
        return int(len(self.group_indices)) - 1

    def puzzle_of_examples(self) -> np.ndarray:
        """For every example, the index of the puzzle that owns it."""
        counts = np.diff(np.asarray(self.puzzle_indices, dtype=np.int64))
        return np.repeat(np.arange(len(counts)), counts)

    def check(self, meta: Metadata, where: str, full: bool = True) -> None:
        """Raise :class:`PuzzleDataError` naming ``where`` when the arrays break the layout rules."""
        inp, lab = self.inputs, self.labels
        for name, arr in (("inputs", inp), ("labels", lab)):
            if arr.ndim != 2:
                raise PuzzleDataError(
                    f"{where}__{name}.npy: expected a 2-d array [examples, seq_len], got shape {arr.shape}"
                )
            if arr.shape[1] != meta.seq_len:
                raise PuzzleDataError(
                    f"{where}__{name}.npy: rows have {arr.shape[1]} tokens but dataset.json says seq_len={meta.seq_len}"
                )
            if arr.dtype.kind not in "iu":
                raise PuzzleDataError(
                    f"{where}__{name}.npy: token ids must be integers, got dtype {arr.dtype}"
                )
        if inp.shape != lab.shape:
            raise PuzzleDataError(
                f"{where}: inputs {inp.shape} and labels {lab.shape} must have the same shape"
            )
        for name in ("puzzle_identifiers", "puzzle_indices", "group_indices"):
            arr = getattr(self, name)
            if arr.ndim != 1 or arr.dtype.kind not in "iu":
                raise PuzzleDataError(
                    f"{where}__{name}.npy: expected a 1-d integer array, got {arr.dtype} {arr.shape}"
                )
        pi, gi, ids = self.puzzle_indices, self.group_indices, self.puzzle_identifiers
        _check_offsets(pi, len(inp), f"{where}__puzzle_indices.npy", "examples")
        if len(ids) != len(pi) - 1:
            raise PuzzleDataError(
                f"{where}__puzzle_identifiers.npy: has {len(ids)} entries but puzzle_indices describes {len(pi) - 1} puzzles"
            )
        _check_offsets(gi, len(ids), f"{where}__group_indices.npy", "puzzles")
        if len(ids) and (ids.min() < 0 or ids.max() >= meta.num_puzzle_identifiers):
            raise PuzzleDataError(
                f"{where}__puzzle_identifiers.npy: identifiers must be 0..{meta.num_puzzle_identifiers - 1} "
                f"(num_puzzle_identifiers), found {int(ids.min())}..{int(ids.max())}"
            )
        if full and len(inp):
            # A pass over the token arrays; memory-mapped, so it streams from disk.
            for name, arr in (("inputs", inp), ("labels", lab)):
                lo, hi = int(arr.min()), int(arr.max())
                if lo < 0 or hi >= meta.vocab_size:
                    raise PuzzleDataError(
                        f"{where}__{name}.npy: token ids must be 0..{meta.vocab_size - 1} (vocab_size), found {lo}..{hi}"
                    )


def _check_offsets(arr: np.ndarray, total: int, where: str, what: str) -> None:
    if len(arr) == 0 or arr[0] != 0:
        raise PuzzleDataError(f"{where}: must start with 0 (offsets into the {what})")
    if len(arr) > 1 and np.any(np.diff(arr) < 0):
        bad = int(np.flatnonzero(np.diff(arr) < 0)[0])
        raise PuzzleDataError(
            f"{where}: offsets must not decrease, entry {bad + 1} is smaller than entry {bad}"
        )
    if int(arr[-1]) != total:
        raise PuzzleDataError(f"{where}: last offset is {int(arr[-1])} but there are {total} {what}")


@dataclass
class PuzzleSplit:
    """One split (``train`` or ``test``) of a dataset: its metadata and its sets of arrays."""

    name: str
    path: Path
    metadata: Metadata
    sets: dict[str, SetArrays]

    @property
    def n_examples(self) -> int:
        """Examples over all sets."""
        return sum(s.n_examples for s in self.sets.values())

    @property
    def n_puzzles(self) -> int:
        """Puzzles over all sets."""
        return sum(s.n_puzzles for s in self.sets.values())

    @property
    def n_groups(self) -> int:
        """Groups over all sets."""
        return sum(s.n_groups for s in self.sets.values())


@dataclass
class PuzzleDataset:
    """A dataset folder in the HRM layout, opened (token arrays memory-mapped)."""

    path: Path
    splits: dict[str, PuzzleSplit]
    identifiers: list[str] | None
    """Names of the puzzle identifiers (``identifiers.json``), None when the file is absent."""
    info: dict[str, Any]
    """What arcscope recorded when it built the dataset (``arcscope.json``), empty otherwise."""

    def __getitem__(self, split: str) -> PuzzleSplit:
        try:
            return self.splits[split]
        except KeyError:
            raise PuzzleDataError(
                f"{self.path}: no split '{split}' (has {sorted(self.splits)}); a split is a sub-folder with dataset.json"
            ) from None

    @property
    def kind(self) -> str | None:
        """``arc``, ``sudoku``, ``maze`` or None for a dataset arcscope did not build."""
        return self.info.get("kind")

    def identifier_name(self, ident: int) -> str:
        """The name of identifier ``ident`` (``#ident`` when there is no identifiers.json)."""
        if self.identifiers is not None and 0 <= ident < len(self.identifiers):
            return self.identifiers[ident]
        return f"#{ident}"


def _load_json(path: Path, what: str) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise PuzzleDataError(f"{path}: missing {what}") from None
    except json.JSONDecodeError as e:
        raise PuzzleDataError(f"{path}: not valid JSON ({e.msg}, line {e.lineno})") from None
    except OSError as e:
        raise PuzzleDataError(f"{path}: cannot read {what} ({e.strerror or e})") from None


def _load_npy(path: Path, mmap: bool) -> np.ndarray:
    if not path.exists():
        raise PuzzleDataError(
            f"{path}: missing file (every set needs {', '.join(f + '.npy' for f in FIELDS)})"
        )
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (ValueError, OSError) as e:
        raise PuzzleDataError(f"{path}: not a readable .npy array ({e})") from None


def open_split(path: str | os.PathLike[str], name: str | None = None, *, check: bool = True) -> PuzzleSplit:
    """Open one split folder (``DIR/train``), checking every layout rule unless ``check`` is False."""
    p = Path(path)
    meta = Metadata.from_json(_load_json(p / METADATA_FILE, "dataset.json"), str(p / METADATA_FILE))
    sets: dict[str, SetArrays] = {}
    for set_name in meta.sets:
        arrays = {f: _load_npy(p / f"{set_name}__{f}.npy", mmap=f in ("inputs", "labels")) for f in FIELDS}
        sa = SetArrays(**arrays)
        sa.check(meta, str(p / set_name), full=check)
        sets[set_name] = sa
    split = PuzzleSplit(name or p.name, p, meta, sets)
    if check and split.n_groups != meta.total_groups:
        raise PuzzleDataError(
            f"{p / METADATA_FILE}: total_groups is {meta.total_groups} but the group_indices files hold {split.n_groups} groups"
        )
    return split


def open_dataset(path: str | os.PathLike[str], *, check: bool = True) -> PuzzleDataset:
    """Open a dataset folder in the HRM layout; a missing file or a broken rule raises :class:`PuzzleDataError`."""
    root = Path(path)
    if not root.is_dir():
        raise PuzzleDataError(f"{root}: no such dataset folder (build one with `arcscope puzzles build`)")
    splits: dict[str, PuzzleSplit] = {}
    for sub in sorted(root.iterdir()):
        if sub.is_dir() and (sub / METADATA_FILE).exists():
            splits[sub.name] = open_split(sub, sub.name, check=check)
    if not splits:
        raise PuzzleDataError(
            f"{root}: holds no split (a sub-folder such as train/ or test/ with dataset.json); is this a puzzle dataset?"
        )
    identifiers = None
    id_path = root / IDENTIFIERS_FILE
    if id_path.exists():
        ids = _load_json(id_path, "identifiers.json")
        if not isinstance(ids, list) or not all(isinstance(x, str) for x in ids):
            raise PuzzleDataError(f"{id_path}: must be a JSON list of identifier names")
        identifiers = ids
        for split in splits.values():
            if check and len(ids) < split.metadata.num_puzzle_identifiers:
                raise PuzzleDataError(
                    f"{id_path}: names {len(ids)} identifiers but {split.path / METADATA_FILE} says "
                    f"num_puzzle_identifiers={split.metadata.num_puzzle_identifiers}"
                )
    info: dict[str, Any] = {}
    if (root / INFO_FILE).exists():
        obj = _load_json(root / INFO_FILE, INFO_FILE)
        info = obj if isinstance(obj, dict) else {}
    return PuzzleDataset(root, splits, identifiers, info)


# ------------------------------------------------------------------------------------------------ writing


class _NpyStream:
    """Append rows to a raw temporary file; ``finish`` writes a .npy header and streams the rows after it.

    Large builds (ARC with 1000 augmentations is gigabytes) never hold the whole array in memory.
    """

    def __init__(self, folder: Path, name: str, width: int, dtype: np.dtype):
        self.width = width
        self.dtype = np.dtype(dtype)
        self.rows = 0
        self.path = folder / f".{name}.raw"
        self._f = open(self.path, "wb")

    def append(self, rows: np.ndarray) -> None:
        rows = np.ascontiguousarray(rows, dtype=self.dtype)
        if rows.ndim != 2 or rows.shape[1] != self.width:
            raise ValueError(f"expected rows of width {self.width}, got shape {rows.shape}")
        self._f.write(rows.tobytes())
        self.rows += rows.shape[0]

    def finish(self, dest: Path) -> None:
        self._f.close()
        header = {
            "descr": np.lib.format.dtype_to_descr(self.dtype),
            "fortran_order": False,
            "shape": (self.rows, self.width),
        }
        with open(dest, "wb") as out:
            np.lib.format.write_array_header_1_0(out, header)
            with open(self.path, "rb") as src:
                shutil.copyfileobj(src, out, 16 << 20)
        self.path.unlink()

    def abort(self) -> None:
        self._f.close()
        self.path.unlink(missing_ok=True)


class SplitBuilder:
    """Accumulate groups of puzzles for one set of one split, streaming tokens to disk."""

    def __init__(self, folder: Path, tag: str, seq_len: int, dtype: np.dtype = np.dtype(np.uint8)):
        self.seq_len = seq_len
        self._inputs = _NpyStream(folder, f"{tag}.inputs", seq_len, dtype)
        self._labels = _NpyStream(folder, f"{tag}.labels", seq_len, dtype)
        self.puzzle_identifiers: list[int] = []
        self.puzzle_indices: list[int] = [0]
        self.group_indices: list[int] = [0]

    @property
    def n_examples(self) -> int:
        """Examples added so far."""
        return self._inputs.rows

    @property
    def n_puzzles(self) -> int:
        """Puzzles added so far."""
        return len(self.puzzle_identifiers)

    @property
    def n_groups(self) -> int:
        """Groups added so far."""
        return len(self.group_indices) - 1

    def add_group(self, puzzles: Iterable[tuple[int, np.ndarray, np.ndarray]]) -> None:
        """Add one group: ``(identifier, inputs [n, seq_len], labels [n, seq_len])`` per puzzle."""
        added = 0
        for ident, inputs, labels in puzzles:
            inputs, labels = np.atleast_2d(inputs), np.atleast_2d(labels)
            if inputs.shape != labels.shape or inputs.shape[0] == 0:
                raise ValueError(
                    f"a puzzle needs >= 1 example and equal shapes, got {inputs.shape} {labels.shape}"
                )
            self._inputs.append(inputs)
            self._labels.append(labels)
            self.puzzle_identifiers.append(int(ident))
            self.puzzle_indices.append(self.n_examples)
            added += 1
        if added:
            self.group_indices.append(self.n_puzzles)

    def finish(self, folder: Path, set_name: str) -> None:
        """Write the five ``SET__FIELD.npy`` files into ``folder``."""
        self._inputs.finish(folder / f"{set_name}__inputs.npy")
        self._labels.finish(folder / f"{set_name}__labels.npy")
        for name in ("puzzle_identifiers", "puzzle_indices", "group_indices"):
            np.save(folder / f"{set_name}__{name}.npy", np.asarray(getattr(self, name), dtype=np.int32))

    def abort(self) -> None:
        """Remove the temporary files."""
        self._inputs.abort()
        self._labels.abort()


class DatasetWriter:
    """Build a dataset folder atomically: everything goes to a temporary sibling, renamed into place at the end.

    Use as a context manager; ``split(name)`` gives the :class:`SplitBuilder` of the ``all`` set of a split.
    """

    def __init__(
        self,
        out: str | os.PathLike[str],
        *,
        seq_len: int,
        vocab_size: int,
        pad_id: int = 0,
        ignore_label_id: int | None = 0,
        blank_identifier_id: int = 0,
        overwrite: bool = False,
        dtype: np.dtype | None = None,
    ):
        self.out = Path(out)
        if self.out.exists() and not self.out.is_dir():
            raise PuzzleDataError(f"{self.out}: exists and is a file; a dataset is a folder")
        if self.out.exists() and any(self.out.iterdir()) and not overwrite:
            raise PuzzleDataError(
                f"{self.out}: folder exists and is not empty; pass --overwrite to replace it"
            )
        self.seq_len = seq_len
        self.vocab_size = vocab_size
        self.pad_id = pad_id
        self.ignore_label_id = ignore_label_id
        self.blank_identifier_id = blank_identifier_id
        self.dtype = np.dtype(dtype if dtype is not None else (np.uint8 if vocab_size <= 256 else np.int32))
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self._swap = replace_dir(self.out)
        self._tmp = self._swap.tmp
        self._splits: dict[str, SplitBuilder] = {}

    def split(self, name: str) -> SplitBuilder:
        """The builder of split ``name`` (created on first use)."""
        if name not in self._splits:
            (self._tmp / name).mkdir(exist_ok=True)
            self._splits[name] = SplitBuilder(self._tmp / name, "all", self.seq_len, self.dtype)
        return self._splits[name]

    def finish(
        self,
        identifiers: list[str],
        info: Mapping[str, Any],
        mean_puzzle_examples: Mapping[str, float] | None = None,
    ) -> Path:
        """Write arrays, ``dataset.json`` per split, ``identifiers.json`` and ``arcscope.json``; rename into place."""
        for name, b in self._splits.items():
            folder = self._tmp / name
            b.finish(folder, "all")
            mean = (mean_puzzle_examples or {}).get(name)
            if mean is None:
                mean = b.n_examples / b.n_puzzles if b.n_puzzles else 0.0
            meta = Metadata(
                pad_id=self.pad_id,
                ignore_label_id=self.ignore_label_id,
                blank_identifier_id=self.blank_identifier_id,
                vocab_size=self.vocab_size,
                seq_len=self.seq_len,
                num_puzzle_identifiers=len(identifiers),
                total_groups=b.n_groups,
                mean_puzzle_examples=float(mean),
                sets=["all"],
            )
            (folder / METADATA_FILE).write_text(json.dumps(meta.to_json()))
        (self._tmp / IDENTIFIERS_FILE).write_text(json.dumps(list(identifiers)))
        (self._tmp / INFO_FILE).write_text(json.dumps(dict(info), indent=1, default=str))
        return self._swap.commit()

    def abort(self) -> None:
        """Drop everything written so far."""
        for b in self._splits.values():
            b.abort()
        self._swap.abort()

    def __enter__(self) -> DatasetWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None or self._tmp.exists():
            self.abort()


def iter_puzzles(split: PuzzleSplit) -> Iterator[tuple[str, int, int, int, slice]]:
    """``(set, group, puzzle, identifier, example slice)`` for every puzzle of a split, in file order."""
    for set_name, s in split.sets.items():
        gi, pi, ids = s.group_indices, s.puzzle_indices, s.puzzle_identifiers
        for g in range(len(gi) - 1):
            for p in range(int(gi[g]), int(gi[g + 1])):
                yield set_name, g, p, int(ids[p]), slice(int(pi[p]), int(pi[p + 1]))
