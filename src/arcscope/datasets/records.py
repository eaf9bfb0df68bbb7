"""Records: read any task spec or a JSONL / Parquet / HF ``datasets`` folder of records, write them back.

A record is a JSON object (a Python ``dict``). Task sources (``arc1:``, ``dir:``, ``kaggle:``, ``barc:`` ...)
become arcscope task records (``id``, ``train``, ``test``, ``meta``, as :func:`arcscope.tasks.writers.save`
writes them); ``jsonl:``, ``parquet:`` and ``hf:`` are read as they are, whatever fields they hold, so the
steps work on generic records too. A record that has ``train``/``test`` (or BARC's ``examples``) can be viewed
as a :class:`~arcscope.tasks.Task` for task properties; others cannot, and a step that needs a task says so.

Every record read carries ``where`` (``FILE line N``, ``FILE row N`` or ``SOURCE task ID``), so an error names
it. Writers are atomic: the output appears under its name only when the whole step succeeded.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from arcscope.errors import ArcscopeError, SourceError, TaskFormatError
from arcscope.files import AtomicFile, hold, remove_leftovers, temp_name
from arcscope.tasks.core import Task
from arcscope.tasks.sources import parse_spec, split_kind

OnError = Literal["raise", "skip"]

RECORD_KINDS = ("jsonl", "parquet", "hf")
"""Spec kinds read as generic records (every other task spec kind is read as tasks)."""

JSON_COLUMNS_KEY = b"arcscope.json_columns"
"""Parquet schema metadata: columns written as JSON text because their values vary in shape."""


class DatasetError(ArcscopeError, ValueError):
    """A record, field, expression or step setting breaks a rule of the dataset pipeline."""


@dataclass
class Rec:
    """One record and where it came from (for error messages)."""

    data: dict[str, Any]
    where: str
    _task: Task | None = field(default=None, repr=False)
    raw: bytes | None = field(default=None, repr=False)
    """The record's JSONL line as read, written back as is while the record is unchanged."""

    def set(self, name: str, value: Any) -> None:
        """Set a top-level field (the record is then written from ``data``, not its original line)."""
        self.data[name] = value
        self.raw = None

    def task(self) -> Task:
        """This record viewed as an ARC task (arcscope or BARC layout); DatasetError when it is not one."""
        if self._task is None:
            from arcscope.tasks.sources import _record_to_task  # the task layer's own record reader

            try:
                self._task = _record_to_task(
                    self.data, source=self.where, line=None, default_id=self.where, n_test=1
                )
            except TaskFormatError as e:
                raise DatasetError(
                    f"{self.where}: not an ARC task record ({e.rule}); task properties need 'train' and "
                    f"'test' (or BARC 'examples') fields"
                ) from None
        return self._task

    @property
    def is_task(self) -> bool:
        """True when the record has the fields of an ARC task (not validated here)."""
        d = self.data
        return ("train" in d and "test" in d) or "examples" in d


Skipped = list[tuple[str, str]]


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (set, frozenset, tuple)):
        return list(o)
    if isinstance(o, bytes):
        return o.decode("utf-8", "replace")
    return str(o)


def dumps(obj: Any) -> str:
    """Compact JSON of a record (numpy values become plain numbers and lists)."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, default=_json_default)


def record_hash(data: Any) -> str:
    """A stable sha256 of a record's content (keys sorted), for caches and exact dedupe."""
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=_json_default)
    return hashlib.sha256(text.encode()).hexdigest()


_MISSING = object()


def get_field(data: Any, path: str, where: str = "record") -> Any:
    """The value at a dotted field path (``meta.source``); DatasetError naming the record when it is missing."""
    cur = data
    parts = path.split(".")
    for i, part in enumerate(parts):
        nxt = _MISSING
        if isinstance(cur, dict):
            nxt = cur.get(part, _MISSING)
        elif isinstance(cur, (list, tuple)) and part.lstrip("-").isdigit():
            idx = int(part)
            nxt = cur[idx] if -len(cur) <= idx < len(cur) else _MISSING
        if nxt is _MISSING:
            have = sorted(cur) if isinstance(cur, dict) else type(cur).__name__
            at = ".".join(parts[:i]) or "the record"
            raise DatasetError(f"{where}: missing field '{path}' ({at} has {have})")
        cur = nxt
    return cur


# ----------------------------------------------------------------------------------------------- reading


def _kind_and_path(spec: str) -> tuple[str, str]:
    kind, rest = split_kind(spec)
    if kind is None:
        src = parse_spec(spec)  # sniffs a bare path, or raises a SourceError with the spec help
        return src.kind, src.target
    return kind, rest


def _loads(raw: bytes | str, where: str, what: str = "") -> Any:
    """One JSON value of a record; every way it can fail (bad text, deep nesting, a huge number) is one
    DatasetError naming ``where`` (the task readers' :func:`~arcscope.tasks.sources.parse_json` wording)."""
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        pass
    from arcscope.errors import TaskFormatError
    from arcscope.tasks.sources import parse_json

    try:
        parse_json(raw, source=None, what=what)
    except TaskFormatError as e:
        raise DatasetError(f"{where}: {e.rule}") from None
    # It parsed only with an integer too long for Python to convert: a record cannot hold that value.
    raise DatasetError(f"{where}: holds an integer longer than {sys.get_int_max_str_digits()} digits")


def _read_jsonl(path: Path, label: str) -> Iterator[Rec | DatasetError]:
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    with opener(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            where = f"{label} line {lineno}"
            try:
                obj = _loads(raw, where)
            except DatasetError as e:
                yield e
                continue
            if not isinstance(obj, dict):
                yield DatasetError(f"{where}: a record must be a JSON object, got {type(obj).__name__}")
                continue
            yield Rec(obj, where, raw=raw.rstrip(b"\r\n"))


def _decode_json(row: dict[str, Any], cols: list[str], where: str) -> Rec | DatasetError:
    """The record of a Parquet/HF row, with its JSON-text columns decoded."""
    for c in cols:
        v = row.get(c)
        if isinstance(v, str):
            try:
                row[c] = _loads(v, where, what=f"column {c!r}")
            except DatasetError as e:
                return e
    return Rec(row, where)


def _read_parquet(path: Path, label: str) -> Iterator[Rec | DatasetError]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises several types for a file that is not Parquet
        raise SourceError(f"{label}: cannot open as Parquet ({e})") from None
    meta = pf.schema_arrow.metadata or {}
    json_cols = json.loads(meta[JSON_COLUMNS_KEY]) if JSON_COLUMNS_KEY in meta else []
    row = 0
    for batch in pf.iter_batches(batch_size=1024):
        for r in batch.to_pylist():
            yield _decode_json(r, json_cols, f"{label} row {row}")
            row += 1


def _hf_splits(target: str, split: str | None, label: str):
    import datasets

    path = Path(target).expanduser()
    if path.is_dir():
        try:
            ds = datasets.load_from_disk(str(path))
        except Exception as e:  # a folder that is not a save_to_disk folder: several exception types
            raise SourceError(f"{label}: not a Hugging Face save_to_disk folder ({e})") from None
    else:
        from arcscope.tasks.sources import _hf_dataset

        return [(split or "", _hf_dataset(parse_spec(label), download=False))]
    if isinstance(ds, datasets.DatasetDict):
        if split is not None:
            if split not in ds:
                raise SourceError(f"{label}: no split {split!r}; the dataset has {list(ds)}")
            return [(split, ds[split])]
        return list(ds.items())
    return [(split or "", ds)]


def _read_hf(target: str, split: str | None, label: str) -> Iterator[Rec | DatasetError]:
    side = Path(target).expanduser() / "arcscope.json"
    json_cols: list[str] = []
    if side.is_file():
        # Written by `arcscope data export`: which columns hold JSON text for objects of varying shape.
        json_cols = json.loads(side.read_text(encoding="utf-8")).get("json_columns", [])
    for name, ds in _hf_splits(target, split, label):
        row = 0
        tag = f"{label}" + (f" split {name}" if name and split is None else "")
        for batch in ds.iter(batch_size=512):
            keys = list(batch)
            for values in zip(*(batch[k] for k in keys), strict=True):
                yield _decode_json(dict(zip(keys, values, strict=True)), json_cols, f"{tag} row {row}")
                row += 1


def _read_tasks(spec: str) -> Iterator[Rec | DatasetError]:
    from arcscope.tasks.sources import iter_tasks
    from arcscope.tasks.writers import task_record

    skipped: Skipped = []
    label = str(spec)
    for t in iter_tasks(spec, "skip", skipped):
        # Task-level errors surface through `skipped`; turn them into items in the order they happened.
        while skipped:
            where, reason = skipped.pop(0)
            yield DatasetError(f"{where}: {reason}")
        yield Rec(task_record(t), f"{label} task {t.id}", t)
    for where, reason in skipped:
        yield DatasetError(f"{where}: {reason}")


def read_records(
    spec: str | os.PathLike[str],
    on_error: OnError = "raise",
    skipped: Skipped | None = None,
    *,
    limit: int | None = None,
) -> Iterator[Rec]:
    """Stream the records of a task spec or a JSONL / Parquet / HF folder; bad ones raise or go to ``skipped``."""
    if on_error not in ("raise", "skip"):
        raise DatasetError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    text = os.fspath(spec)
    kind, target = _kind_and_path(text)
    if kind in ("jsonl", "parquet"):
        path = Path(target).expanduser()
        if not path.is_file():
            raise SourceError(f"{text}: no such file: {path}")
        items = _read_jsonl(path, str(path)) if kind == "jsonl" else _read_parquet(path, str(path))
    elif kind == "hf":
        src = parse_spec(text)
        items = _read_hf(src.target, src.split, text)
    else:
        items = _read_tasks(text)
    return _checked(items, on_error, skipped, limit)


def _checked(items, on_error: str, skipped: Skipped | None, limit: int | None) -> Iterator[Rec]:
    n = 0
    if limit is not None and limit <= 0:
        return
    for item in items:
        if isinstance(item, DatasetError):
            if on_error == "raise":
                raise item
            if skipped is not None:
                where, _, reason = str(item).partition(": ")
                skipped.append((where, reason))
            continue
        yield item
        n += 1
        if limit is not None and n >= limit:
            return


# ----------------------------------------------------------------------------------------------- writing

WRITE_KINDS = ("jsonl", "parquet", "dir", "kaggle")


def _out_kind(spec: str) -> tuple[str, Path]:
    kind, rest = split_kind(spec)
    path = Path(rest).expanduser()
    if kind is None:
        name = path.name.lower()
        if name.endswith((".jsonl", ".jsonl.gz", ".ndjson")):
            kind = "jsonl"
        elif name.endswith((".parquet", ".pq")):
            kind = "parquet"
        elif name.endswith("_challenges.json"):
            kind = "kaggle"
        else:
            raise SourceError(
                f"cannot tell the output format of {spec!r} from its name: use jsonl:PATH, parquet:PATH, "
                f"dir:PATH or kaggle:PATH_challenges.json (export writes hf: folders)"
            )
    if kind not in WRITE_KINDS:
        raise SourceError(f"cannot write records to {spec!r}: choose one of {', '.join(WRITE_KINDS)}")
    return kind, path


def infer_schema(rows: list[dict[str, Any]]):
    """Parquet column types for records, taken from ``rows``; returns (schema, columns stored as JSON text)."""
    import pyarrow as pa

    names: list[str] = []
    for r in rows:
        for k in r:
            if k not in names:
                names.append(k)
    fields = []
    json_cols: list[str] = []
    for name in names:
        values = [r.get(name) for r in rows]
        try:
            typ = pa.array(values).type
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
            typ = None
        grids = name in GRID_COLUMNS and typ is not None and _pairs_only(typ)
        if typ is None or (not grids and (pa.types.is_struct(typ) or _has_struct(typ))):
            # Objects vary in keys from record to record; JSON text keeps every one intact.
            json_cols.append(name)
            typ = pa.string()
        elif pa.types.is_null(typ):
            typ = pa.string()
        elif pa.types.is_integer(typ) and any(isinstance(v, float) for v in values):
            typ = pa.float64()
        fields.append(pa.field(name, typ))
    meta = {JSON_COLUMNS_KEY: json.dumps(json_cols).encode()}
    return pa.schema(fields, metadata=meta), json_cols


class _ParquetSink:
    """Row groups of records with the column types taken from the first group (or given)."""

    def __init__(self, path: Path, row_group_size: int, schema=None, json_cols: list[str] | None = None):
        self.path = path
        self.rows: list[dict[str, Any]] = []
        self.size = row_group_size
        self.writer = None
        self.schema = schema
        self.json_cols: list[str] = list(json_cols or [])
        self.n = 0

    def _infer(self) -> None:
        self.schema, self.json_cols = infer_schema(self.rows)

    def write(self, data: dict[str, Any], where: str) -> None:
        self.rows.append(data)
        if len(self.rows) >= self.size:
            self.flush()

    def flush(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if not self.rows:
            return
        if self.schema is None:
            self._infer()
        if self.writer is None:
            self.writer = pq.ParquetWriter(self.path, self.schema, compression="zstd")
        names = set(self.schema.names)
        rows = []
        for i, r in enumerate(self.rows):
            extra = set(r) - names
            if extra:
                raise DatasetError(
                    f"{self.path} record {self.n + i}: field(s) {sorted(extra)} are not among the Parquet "
                    f"columns taken from the first {self.size} records; write jsonl: instead"
                )
            rows.append({k: (dumps(v) if k in self.json_cols and v is not None else v) for k, v in r.items()})
        try:
            table = pa.Table.from_pylist(rows, schema=self.schema)
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as e:
            raise DatasetError(
                f"{self.path} records {self.n}..{self.n + len(rows) - 1}: a value does not fit the Parquet "
                f"column types taken from the first records ({e}); write jsonl: instead"
            ) from None
        self.writer.write_table(table)
        self.n += len(rows)
        self.rows = []

    def close(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        self.flush()
        if self.writer is None:
            pq.write_table(self.schema.empty_table() if self.schema is not None else pa.table({}), self.path)
        else:
            self.writer.close()


GRID_COLUMNS = ("train", "test", "examples")
"""Columns kept as native nested Parquet types when they hold only input/output pairs (ARC grids)."""


def _pairs_only(typ) -> bool:
    import pyarrow as pa

    if not pa.types.is_list(typ):
        return False
    inner = typ.value_type
    if pa.types.is_struct(inner):
        return {inner.field(i).name for i in range(inner.num_fields)} <= {"input", "output"}
    return pa.types.is_list(inner)  # BARC's [input, output] lists


def _has_struct(typ) -> bool:
    import pyarrow as pa

    while pa.types.is_list(typ) or pa.types.is_large_list(typ):
        typ = typ.value_type
        if pa.types.is_struct(typ):
            return True
    return False


def remove_stale_temps(path: str | os.PathLike[str]) -> list[Path]:
    """Remove what killed writers of ``path`` left (its unheld ``.NAME.tmp-<hex>`` siblings); returns them."""
    p = Path(path)
    return remove_leftovers(p.parent, of=p.name)


def step_outputs(spec: str | os.PathLike[str]) -> list[Path]:
    """The files a step writing ``spec`` may leave temporary names of: the output, its scratch, its report."""
    from arcscope.datasets.step_report import report_path

    kind, path = _out_kind(os.fspath(spec))
    names = [path, path.with_name(path.with_suffix(".jsonl").name), report_path(spec)]
    if kind == "kaggle" and path.name.endswith("_challenges.json"):
        names.append(path.with_name(path.name[: -len("_challenges.json")] + "_solutions.json"))
    return names


class RecordWriter:
    """Write records to ``jsonl:``, ``parquet:``, ``dir:`` or ``kaggle:`` atomically (a context manager).

    Its temporary file is locked while it lives, and a new writer first removes the unlocked temporary
    names that a killed run of the same output left behind.
    """

    def __init__(self, spec: str | os.PathLike[str], *, overwrite: bool = True, row_group_size: int = 1000):
        self.spec = os.fspath(spec)
        self.kind, self.path = _out_kind(self.spec)
        if self.path.exists() and not overwrite:
            raise SourceError(f"{self.path} already exists; pass overwrite=True (CLI: --overwrite)")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for p in step_outputs(self.spec):
            remove_stale_temps(p)
        self.count = 0
        self._lock: int | None = None
        self._row_group_size = row_group_size
        if self.kind in ("jsonl", "parquet"):
            self._file: AtomicFile | None = AtomicFile(self.path)
            self._tmp = self._file.tmp
        else:  # a scratch JSONL file that tasks.save then turns into the folder or the Kaggle pair
            self._file = None
            self._tmp = self.path.with_name(temp_name(self.path.with_suffix(".jsonl").name))

    def __enter__(self) -> RecordWriter:
        # Created and locked before anything is written: remove_stale_temps leaves a locked file alone, and
        # the lock goes with the process, so a killed run's file is unlocked (and removed) on the next start.
        self._lock = hold(self._tmp)
        try:
            if self.kind == "parquet":
                self._sink = _ParquetSink(self._tmp, self._row_group_size)
            else:
                gz = self.kind == "jsonl" and self.path.name.lower().endswith(".gz")
                self._f = (gzip.open if gz else open)(self._tmp, "wb")
        except BaseException:
            self._tmp.unlink(missing_ok=True)
            os.close(self._lock)
            self._lock = None
            raise
        return self

    def write(self, rec: Rec | dict[str, Any]) -> None:
        """Append one record."""
        data, where = (rec.data, rec.where) if isinstance(rec, Rec) else (rec, f"record {self.count}")
        if self.kind == "parquet":
            self._sink.write(data, where)
        else:
            raw = rec.raw if isinstance(rec, Rec) else None
            # An unchanged JSONL record is copied as read: no second encode, and its bytes stay exact.
            self._f.write((raw if raw is not None else dumps(data).encode()) + b"\n")
        self.count += 1

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if self.kind == "parquet":
                if exc_type is None:
                    self._sink.close()
                elif self._sink.writer is not None:
                    self._sink.writer.close()
            else:
                self._f.close()
            if exc_type is None:
                if self._file is not None:
                    self._file.commit()
                else:
                    self._save_tasks()
        finally:
            if self._tmp.exists():
                self._tmp.unlink()
            if self._lock is not None:
                os.close(self._lock)  # after the rename: the file is never unlocked under its temporary name
                self._lock = None

    def _save_tasks(self) -> None:
        from arcscope.tasks.sources import iter_tasks
        from arcscope.tasks.writers import save

        if self.kind == "dir" and self.path.exists() and not any(self.path.iterdir()):
            shutil.rmtree(self.path)
        save(iter_tasks(f"jsonl:{self._tmp}"), f"{self.kind}:{self.path}", overwrite=True)


__all__ = [
    "DatasetError",
    "Rec",
    "RecordWriter",
    "dumps",
    "get_field",
    "read_records",
    "record_hash",
    "remove_stale_temps",
    "step_outputs",
]
