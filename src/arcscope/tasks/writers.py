"""Task writers: save tasks as an ARC JSON folder, a Kaggle challenges/solutions pair, JSONL or Parquet.

Targets use the same spec forms as the readers (see :mod:`arcscope.tasks.sources`)::

    dir:PATH                      one ARC JSON file per task, named <id>.json
    kaggle:PATH_challenges.json   challenges (test inputs only) + sibling PATH_solutions.json (test outputs)
    jsonl:PATH                    arcscope records, one per line ('.jsonl.gz' is gzip-compressed)
    parquet:PATH                  arcscope records, row groups of ``row_group_size`` tasks

A bare path works when its name says the format (``.jsonl``, ``.parquet``, ``_challenges.json``, or no
suffix for a folder). Writes are atomic: everything goes to a temporary name beside the target and is
renamed into place at the end, so a reader never sees half a file. ``dir:`` and ``kaggle:`` drop
``Task.meta``; JSONL and Parquet keep it (as JSON; values JSON cannot hold are written as strings).
Unknown test outputs survive every format: Kaggle solutions hold ``null`` for them, and a task with no
known output has no solutions entry.
"""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from arcscope.errors import SourceError, TaskFormatError
from arcscope.files import atomic_path, atomic_write_json, replace_dir
from arcscope.tasks.core import Task, grid_to_list
from arcscope.tasks.sources import split_kind

FORMATS = ("dir", "kaggle", "jsonl", "parquet")

WRITE_HELP = """\
Task output specs:
  dir:PATH                      folder of ARC JSON files, one per task
  kaggle:PATH_challenges.json   Kaggle challenges + sibling _solutions.json
  jsonl:PATH | parquet:PATH     arcscope records: id, train, test, meta"""


def _json_default(o: Any) -> Any:
    # Meta may carry numpy scalars/arrays, paths or sets; anything else falls back to its text.
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (set, frozenset, tuple)):
        return list(o)
    return str(o)


def resolve_target(spec_or_path: str | os.PathLike[str], fmt: str | None = None) -> tuple[str, Path]:
    """The (format, path) a save target names; raises SourceError for one it cannot tell."""
    text = os.fspath(spec_or_path)
    kind, rest = split_kind(text)
    if kind is not None and kind not in FORMATS:
        raise SourceError(f"cannot write to {text!r}: {kind}: is a read-only source\n{WRITE_HELP}")
    path = Path(rest).expanduser()
    if fmt is not None:
        if fmt not in FORMATS:
            raise SourceError(f"unknown task output format {fmt!r}; choose one of {', '.join(FORMATS)}")
        kind = fmt
    if kind is None:
        name = path.name.lower()
        if name.endswith((".jsonl", ".jsonl.gz", ".ndjson")):
            kind = "jsonl"
        elif name.endswith((".parquet", ".pq")):
            kind = "parquet"
        elif name.endswith("_challenges.json"):
            kind = "kaggle"
        elif path.is_dir() or not path.suffix:
            kind = "dir"
        else:
            raise SourceError(
                f"cannot tell the output format of {text!r} from its name; add a prefix\n{WRITE_HELP}"
            )
    if not rest:
        raise SourceError(f"'{kind}:' needs a path\n{WRITE_HELP}")
    return kind, path


def _check_free(path: Path, overwrite: bool) -> None:
    if path.exists() and not overwrite:
        if path.is_dir() and not any(path.iterdir()):
            return
        raise SourceError(f"{path} already exists; pass overwrite=True (CLI: --overwrite) to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)


def _unique(tasks: Iterable[Task], label: str) -> Iterator[Task]:
    seen: set[str] = set()
    for t in tasks:
        if not isinstance(t, Task):
            raise TypeError(f"save() takes Task objects, got {type(t).__name__}")
        if t.id in seen:
            raise TaskFormatError(
                "duplicate task id: each task must have its own id to be saved", source=label, task_id=t.id
            )
        seen.add(t.id)
        yield t


def task_record(task: Task) -> dict[str, Any]:
    """The arcscope record of a task (``id``, ``train``, ``test``, and ``meta`` when non-empty)."""
    rec: dict[str, Any] = {"id": task.id, **task.to_json()}
    if task.meta:
        rec["meta"] = task.meta
    return rec


def _write_jsonl(tasks: Iterable[Task], path: Path) -> int:
    n = 0
    with atomic_path(path) as tmp:
        opener = gzip.open if path.name.lower().endswith(".gz") else open
        with opener(tmp, "wt", encoding="utf-8") as f:
            for t in tasks:
                f.write(json.dumps(task_record(t), separators=(",", ":"), default=_json_default))
                f.write("\n")
                n += 1
    return n


def _parquet_schema():
    import pyarrow as pa

    grid = pa.list_(pa.list_(pa.uint8()))
    pairs = pa.list_(pa.struct([("input", grid), ("output", grid)]))
    return pa.schema([("id", pa.string()), ("train", pairs), ("test", pairs), ("meta", pa.string())])


def _parquet_row(t: Task) -> dict[str, Any]:
    def pairs(ps):
        return [
            {"input": grid_to_list(p.input), "output": None if p.output is None else grid_to_list(p.output)}
            for p in ps
        ]

    meta = json.dumps(t.meta, default=_json_default) if t.meta else None
    return {"id": t.id, "train": pairs(t.train), "test": pairs(t.test), "meta": meta}


def _write_parquet(tasks: Iterable[Task], path: Path, row_group_size: int) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = _parquet_schema()
    n = 0
    with atomic_path(path) as tmp:
        with pq.ParquetWriter(tmp, schema, compression="zstd") as writer:
            rows: list[dict[str, Any]] = []
            # Buffer one row group at a time: memory follows row_group_size, not the number of tasks.
            for t in tasks:
                rows.append(_parquet_row(t))
                if len(rows) >= row_group_size:
                    writer.write_table(pa.Table.from_pylist(rows, schema=schema))
                    n += len(rows)
                    rows = []
            if rows or n == 0:
                writer.write_table(pa.Table.from_pylist(rows, schema=schema))
                n += len(rows)
    return n


def _write_kaggle(tasks: Iterable[Task], path: Path, overwrite: bool) -> int:
    if not path.name.endswith("_challenges.json"):
        raise SourceError(
            f"{path}: a Kaggle challenges file name must end in '_challenges.json' so its "
            f"'_solutions.json' can sit beside it"
        )
    sol_path = path.with_name(path.name[: -len("_challenges.json")] + "_solutions.json")
    if sol_path.exists() and not overwrite:
        raise SourceError(f"{sol_path} already exists; pass overwrite=True (CLI: --overwrite) to replace it")
    challenges: dict[str, Any] = {}
    solutions: dict[str, Any] = {}
    for t in tasks:
        challenges[t.id] = {
            "train": [p.to_json() for p in t.train],
            "test": [{"input": grid_to_list(p.input)} for p in t.test],
        }
        if any(p.output is not None for p in t.test):
            solutions[t.id] = [None if p.output is None else grid_to_list(p.output) for p in t.test]
    # Solutions first: the challenges file appears last, so a reader never pairs it with stale solutions.
    if solutions:
        atomic_write_json(sol_path, solutions)
    elif sol_path.exists():
        # A stale solutions file would be merged into these challenges when they are read back.
        sol_path.unlink()
    atomic_write_json(path, challenges)
    return len(challenges)


def _shown_id(task_id: str) -> str:
    # The message stays one readable line: control characters escaped, a very long id cut.
    text = task_id.encode("unicode_escape").decode("ascii") if not task_id.isprintable() else task_id
    return text if len(text) <= 60 else f"{text[:40]}... ({len(task_id)} characters)"


MAX_FILE_ID_BYTES = 200
"""The longest task id (UTF-8 bytes) a ``dir:`` output takes: ``<id>.json`` must fit a 255-byte file name."""


def _safe_file_name(task_id: str, label: str) -> str:
    def refuse(why: str) -> TaskFormatError:
        return TaskFormatError(
            f"this task id cannot be a file name ({why}); write jsonl: or parquet: instead, or rename the task",
            source=label,
            task_id=_shown_id(task_id),
        )

    if not task_id or task_id.startswith("."):
        raise refuse("a dir: task id must not be empty or start with '.'")
    if any(c in task_id for c in '/\\:*?"<>|') or any(ord(c) < 32 for c in task_id):
        raise refuse('a dir: task id must not hold / \\ : * ? " < > | or control characters')
    n = len(task_id.encode("utf-8", "surrogatepass"))
    if n > MAX_FILE_ID_BYTES:
        raise refuse(f"a dir: task id may be at most {MAX_FILE_ID_BYTES} bytes in UTF-8; this one is {n}")
    return f"{task_id}.json"


def _is_task_file(p: Path) -> bool:
    """Whether ``p`` is a file this writer could have written: ``<id>.json`` holding a task's train/test."""
    if p.suffix.lower() != ".json" or p.is_symlink() or not p.is_file():
        return False
    try:
        with open(p, "rb") as f:
            data = json.load(f)
    except (OSError, ValueError, RecursionError):
        return False
    return (
        isinstance(data, dict) and isinstance(data.get("train"), list) and isinstance(data.get("test"), list)
    )


def _write_dir(
    tasks: Iterable[Task], path: Path, overwrite: bool, skipped: list[tuple[str, str]] | None = None
) -> int:
    if path.exists() and not path.is_dir():
        raise SourceError(f"{path} is a file; dir: needs a folder path")
    if path.is_dir() and overwrite:
        # The swap below replaces the whole folder, so it may only ever hold what this writer writes: task
        # JSON files. Anything else (a settings.json, a README, a subfolder) makes it refuse, naming them.
        other = sorted(p.name for p in path.iterdir() if not _is_task_file(p))
        if other:
            raise SourceError(
                f"refusing to replace {path}: it holds more than task files ({', '.join(other[:3])}"
                f"{', ...' if len(other) > 3 else ''}), and --overwrite replaces the whole folder; "
                "move those files out or write to a new folder"
            )
    n = 0
    # Build the whole folder beside the target, then swap it in, so readers see old or new, not a mix.
    with replace_dir(path) as tmp:
        for t in tasks:
            try:
                name = _safe_file_name(t.id, str(path))
            except TaskFormatError as e:
                if skipped is None:
                    raise
                skipped.append((f"{e.source}, task {e.task_id}", e.rule))
                continue
            (tmp / name).write_text(json.dumps(t.to_json()), encoding="utf-8")
            n += 1
    return n


def save(
    tasks: Iterable[Task],
    spec_or_path: str | os.PathLike[str],
    fmt: str | None = None,
    *,
    overwrite: bool = False,
    row_group_size: int = 1000,
    on_error: str = "raise",
    skipped: list[tuple[str, str]] | None = None,
) -> Path:
    """Write tasks to ``dir:``, ``kaggle:``, ``jsonl:`` or ``parquet:`` atomically; return the path written.

    ``tasks`` may be any iterable (a TaskSet, or :func:`iter_tasks` to stream a large source through).
    A task the format cannot hold (a ``dir:`` id that is no file name) raises a TaskFormatError, or with
    ``on_error="skip"`` is left out and recorded in ``skipped`` as ``(where, reason)``.
    """
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    kind, path = resolve_target(spec_or_path, fmt)
    _check_free(path, overwrite)
    stream = _unique(tasks, str(path))
    if kind == "jsonl":
        _write_jsonl(stream, path)
    elif kind == "parquet":
        _write_parquet(stream, path, max(1, int(row_group_size)))
    elif kind == "kaggle":
        _write_kaggle(stream, path, overwrite)
    else:
        sink = None if on_error == "raise" else (skipped if skipped is not None else [])
        _write_dir(stream, path, overwrite, sink)
    return path


__all__ = ["FORMATS", "WRITE_HELP", "resolve_target", "save", "task_record"]
