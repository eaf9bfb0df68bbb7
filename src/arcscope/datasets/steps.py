"""The record steps that need no network: filter, dedupe, split.

Each takes an input spec and an output spec, streams the records (memory follows the number of records only
through a few bytes each, never their size), writes the output atomically, and returns a
:class:`~arcscope.datasets.step_report.StepReport` that is also saved as ``OUTPUT.report.json``.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from arcscope.config import make_config as core_make_config
from arcscope.datasets.canonical import SYMMETRIES, canonical_hash
from arcscope.datasets.expr import compile_where
from arcscope.datasets.records import (
    DatasetError,
    OnError,
    Rec,
    RecordWriter,
    Skipped,
    dumps,
    get_field,
    read_records,
    record_hash,
)
from arcscope.datasets.step_report import StepReport, config_dict, report_path
from arcscope.datasets.tokens import PromptSpec, load_tokenizer_spec, prompt_token_counts
from arcscope.progress import ProgressFn, Ticker

C = TypeVar("C")


def make_config(cls: type[C], config: C | dict[str, Any] | None, options: dict[str, Any]) -> C:
    """A step config from a config object or dict plus keyword overrides; unknown keys are a DatasetError."""
    return core_make_config(cls, config, options, error=DatasetError)


def _finish(report: StepReport, skipped: Skipped, ticker: Ticker, out: str | None) -> StepReport:
    report.skipped = skipped
    report.n_skipped = len(skipped)
    report.seconds = round(ticker.done(), 3)
    if out is not None:
        report.save(report_path(out))
    return report


def _fail_or_skip(e: DatasetError, on_error: str, skipped: Skipped) -> None:
    if on_error == "raise":
        raise e
    where, _, reason = str(e).partition(": ")
    skipped.append((where, reason))


# ------------------------------------------------------------------------------------------------ filter


@dataclass
class FilterConfig:
    """Settings of the filter step."""

    where: list[str] | str = field(default_factory=list)
    """Expressions over fields and task properties; a record is kept when all are true."""
    tokenizer: Any = None
    """Tokenizer for `prompt_tokens`: 'bundled', a model / tokenizer folder, a GGUF file (or the object)."""
    prompt: PromptSpec = field(default_factory=PromptSpec)
    """How a record becomes the text whose tokens `prompt_tokens` counts."""
    batch_size: int = 256
    """Records tokenized per call when `prompt_tokens` is used."""

    def __post_init__(self) -> None:
        if isinstance(self.prompt, dict):
            self.prompt = PromptSpec(**self.prompt)
        if isinstance(self.where, str):
            self.where = [self.where]
        if not self.where:
            raise DatasetError("filter needs at least one --where expression")
        compile_where(self.where)  # fail on a bad expression before any record is read


def _chunks(recs: Iterator[Rec], n: int) -> Iterator[list[Rec]]:
    buf: list[Rec] = []
    try:
        for r in recs:
            buf.append(r)
            if len(buf) >= n:
                yield buf
                buf = []
    except DatasetError:
        # Hand over the records read before a bad one first, so errors surface in input order.
        if buf:
            yield buf
        raise
    if buf:
        yield buf


def filter_records(
    source: str | os.PathLike[str],
    out: str | os.PathLike[str],
    config: FilterConfig | dict[str, Any] | None = None,
    *,
    on_error: OnError = "raise",
    limit: int | None = None,
    progress: ProgressFn | None = None,
    **options: Any,
) -> StepReport:
    """Keep the records for which every ``where`` expression is true."""
    cfg = make_config(FilterConfig, config, options)
    exprs = compile_where(cfg.where)
    needs_tokens = any(e.needs_tokens for e in exprs)
    tok = None
    if needs_tokens:
        tok = cfg.tokenizer if not isinstance(cfg.tokenizer, (str, os.PathLike, type(None))) else None
        tok = tok or load_tokenizer_spec(cfg.tokenizer)
    src, dst = os.fspath(source), os.fspath(out)
    report = StepReport("filter", src, dst, config_dict(cfg))
    skipped: Skipped = []
    ticker = Ticker(progress, "filter")
    recs = read_records(src, on_error, skipped, limit=limit)
    with RecordWriter(dst) as w:
        for chunk in _chunks(recs, cfg.batch_size if needs_tokens else 1024):
            counts = prompt_token_counts(chunk, tok, cfg.prompt) if needs_tokens else None
            for i, rec in enumerate(chunk):
                report.records_in += 1
                try:
                    extra = {}
                    if counts is not None:
                        c = counts[i]
                        if isinstance(c, Exception):
                            raise c
                        extra["prompt_tokens"] = max(c) if c else 0
                    keep = all(e(rec, extra) for e in exprs)
                except DatasetError as e:
                    _fail_or_skip(e, on_error, skipped)
                    continue
                if keep:
                    w.write(rec)
                    report.records_out += 1
            ticker.tick(len(chunk))
    report.figures = {
        "kept": report.records_out,
        "dropped": report.records_in - report.records_out - len(skipped),
    }
    return _finish(report, skipped, ticker, dst)


# ------------------------------------------------------------------------------------------------ dedupe


@dataclass
class DedupeConfig:
    """Settings of the dedupe step."""

    key: str | list[str] | None = None
    """Field path(s) that make two records duplicates; None: the task's grids (tasks), the whole record (others)."""
    symmetry: str = "none"
    """For tasks: 'none' (exact content hash), 'dihedral', 'colours' or 'all' (dihedral and colours)."""
    keep_background: bool = False
    """Under colour symmetry, colour 0 stays 0 (only the other colours may be permuted)."""
    pair_order: bool = False
    """Tasks whose train pairs differ only in order are duplicates too."""
    best: str | None = None
    """Keep the record with the highest value of this field in each group (None: the first)."""
    lowest: bool = False
    """With `best`: keep the lowest value instead."""
    top_groups: int = 10
    """Largest groups listed in the report."""

    def __post_init__(self) -> None:
        if self.symmetry == "exact":
            self.symmetry = "none"
        if self.symmetry not in SYMMETRIES:
            raise DatasetError(
                f"dedupe: unknown symmetry {self.symmetry!r}; choose one of {', '.join(SYMMETRIES)}"
            )
        if isinstance(self.key, str):
            self.key = [k.strip() for k in self.key.split(",") if k.strip()] or None
        if self.key and (self.symmetry != "none" or self.pair_order):
            raise DatasetError(
                "dedupe: --key groups by fields; symmetry and pair order apply to task content only"
            )


def _key_bytes(
    rec: Rec, key: list[str] | None, symmetry: str, keep_background: bool, pair_order: bool
) -> str:
    if key:
        return dumps([get_field(rec.data, k, rec.where) for k in key])
    if rec.is_task:
        return canonical_hash(rec.task(), symmetry, keep_background=keep_background, pair_order=pair_order)  # type: ignore[arg-type]
    if symmetry != "none" or pair_order:
        raise DatasetError(f"{rec.where}: dedupe up to symmetry needs ARC task records (train/test grids)")
    return record_hash(rec.data)


def group_key(
    rec: Rec,
    key: list[str] | None = None,
    symmetry: str = "none",
    *,
    keep_background: bool = False,
    pair_order: bool = False,
) -> int:
    """A 64-bit group id of a record: equal for duplicates under the given key or symmetry."""
    text = _key_bytes(rec, key, symmetry, keep_background, pair_order)
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")


def _score(rec: Rec, fieldname: str) -> float:
    v = get_field(rec.data, fieldname, rec.where)
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise DatasetError(f"{rec.where}: field '{fieldname}' must be a number to pick the best, got {v!r}")
    return float(v)


def dedupe(
    source: str | os.PathLike[str],
    out: str | os.PathLike[str],
    config: DedupeConfig | dict[str, Any] | None = None,
    *,
    on_error: OnError = "raise",
    limit: int | None = None,
    progress: ProgressFn | None = None,
    **options: Any,
) -> StepReport:
    """Keep one record per group of duplicates (the first, or the best by a field); report group sizes.

    Two passes over the input: the first computes a 64-bit group id (and score) per record into numpy arrays
    (9 to 17 bytes a record, a few times that while sorting), the second writes the chosen records in input order.
    """
    cfg = make_config(DedupeConfig, config, options)
    src, dst = os.fspath(source), os.fspath(out)
    report = StepReport("dedupe", src, dst, config_dict(cfg))
    skipped: Skipped = []
    ticker = Ticker(progress, "dedupe")
    keys = _Growing(np.uint64)
    scores = _Growing(np.float64)
    valid = _Growing(np.bool_)
    for rec in read_records(src, on_error, skipped, limit=limit):
        try:
            k = group_key(
                rec, cfg.key, cfg.symmetry, keep_background=cfg.keep_background, pair_order=cfg.pair_order
            )  # type: ignore[arg-type]
            s = _score(rec, cfg.best) if cfg.best else 0.0
            ok = True
        except DatasetError as e:
            _fail_or_skip(e, on_error, skipped)
            k, s, ok = 0, 0.0, False
        keys.append(k)
        if cfg.best:
            scores.append(-s if not cfg.lowest else s)
        valid.append(ok)
        ticker.tick()
    key_arr, score_arr, ok_arr = keys.array(), scores.array(), valid.array()
    n = len(key_arr)
    idx = np.flatnonzero(ok_arr)
    # Sort by (key, score, position): the first row of each key run is the record to keep.
    sub = key_arr if len(idx) == n else key_arr[idx]
    if cfg.best:
        order = idx[np.lexsort((idx, score_arr[idx], sub))]
    else:
        # A stable sort keeps input order within a key, so the first record of each run is the first seen.
        order = idx[np.argsort(sub, kind="stable")]
    del sub
    sorted_keys = key_arr[order]
    starts = (
        np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]]) if len(order) else np.array([], int)
    )
    sizes = np.diff(np.r_[starts, len(order)])
    chosen = order[starts]
    keep = np.zeros(n, dtype=bool)
    keep[chosen] = True
    top = np.argsort(-sizes, kind="stable")[: cfg.top_groups]
    top_rows = {int(chosen[t]): int(sizes[t]) for t in top if sizes[t] > 1}
    top_where: dict[int, str] = {}
    # The second pass reads the same records in the same order; its skips were counted in the first.
    with RecordWriter(dst) as w:
        for i, rec in enumerate(read_records(src, "skip", [], limit=limit)):
            if i >= n:
                break
            if keep[i]:
                w.write(rec)
                if i in top_rows:
                    top_where[i] = rec.where
    size_hist: dict[str, int] = {}
    for s_, c_ in zip(*np.unique(sizes, return_counts=True), strict=True):
        size_hist[str(int(s_))] = int(c_)
    report.records_in = n
    report.records_out = int(keep.sum())
    report.figures = {
        "groups": int(len(sizes)),
        "duplicates_dropped": int(len(order) - len(sizes)),
        "group_sizes": size_hist,
        "largest_groups": [{"kept": top_where.get(r, str(r)), "size": s} for r, s in top_rows.items()],
    }
    return _finish(report, skipped, ticker, dst)


class _Growing:
    """A numpy array that grows by doubling (append is O(1) amortised, 1 copy per doubling)."""

    def __init__(self, dtype: Any):
        self.buf = np.empty(1024, dtype=dtype)
        self.n = 0

    def append(self, v: Any) -> None:
        if self.n == len(self.buf):
            self.buf = np.resize(self.buf, 2 * len(self.buf))
        self.buf[self.n] = v
        self.n += 1

    def array(self) -> np.ndarray:
        return self.buf[: self.n]


# ------------------------------------------------------------------------------------------------- split


def _parse_fractions(value: Any) -> dict[str, float]:
    if isinstance(value, str):
        out: dict[str, float] = {}
        for part in value.split(","):
            name, sep, frac = part.partition("=")
            if not sep or not name.strip():
                raise DatasetError(
                    f"split fractions {value!r}: write name=fraction pairs, e.g. train=0.9,validation=0.1"
                )
            try:
                out[name.strip()] = float(frac)
            except ValueError:
                raise DatasetError(f"split fractions {value!r}: {frac!r} is not a number") from None
        value = out
    if not isinstance(value, dict) or not value:
        raise DatasetError(f"split fractions must map split names to fractions, got {value!r}")
    fr = {str(k): float(v) for k, v in value.items()}
    if any(v <= 0 for v in fr.values()):
        raise DatasetError(f"split fractions must be positive, got {fr}")
    total = sum(fr.values())
    if abs(total - 1.0) > 1e-6:
        raise DatasetError(f"split fractions must add up to 1, got {total:g} ({fr})")
    return fr


@dataclass
class SplitConfig:
    """Settings of the split step."""

    fractions: dict[str, float] | str = field(default_factory=lambda: {"train": 0.9, "validation": 0.1})
    """Split names and fractions (adding up to 1), e.g. 'train=0.8,validation=0.1,test=0.1'."""
    key: str | list[str] | None = None
    """Field path(s) of the group a record belongs to; None: the task up to `symmetry` (tasks), the record."""
    symmetry: str = "all"
    """For tasks without `key`: group augmentations under this symmetry (train pair order always ignored)."""
    keep_background: bool = False
    """Under colour symmetry, colour 0 stays 0."""
    seed: int = 0
    """Changes which groups land where; the same seed gives the same split."""
    field: str = "split"
    """Field the split name is written to."""

    def __post_init__(self) -> None:
        self.fractions = _parse_fractions(self.fractions)
        if isinstance(self.key, str):
            self.key = [k.strip() for k in self.key.split(",") if k.strip()] or None
        if self.symmetry not in SYMMETRIES:
            raise DatasetError(
                f"split: unknown symmetry {self.symmetry!r}; choose one of {', '.join(SYMMETRIES)}"
            )


def assign_split(group: str, fractions: dict[str, float], seed: int = 0) -> str:
    """The split of a group: a uniform number from sha256(seed, group) placed on the cumulative fractions."""
    h = hashlib.sha256(f"{seed}\0{group}".encode()).digest()
    u = int.from_bytes(h[:8], "big") / 2.0**64
    acc = 0.0
    names = list(fractions)
    for name in names:
        acc += fractions[name]
        if u < acc:
            return name
    return names[-1]


def split(
    source: str | os.PathLike[str],
    out: str | os.PathLike[str],
    config: SplitConfig | dict[str, Any] | None = None,
    *,
    on_error: OnError = "raise",
    limit: int | None = None,
    progress: ProgressFn | None = None,
    **options: Any,
) -> StepReport:
    """Assign each record a split by hash of its group, so duplicates and augmentations share a side.

    The output holds every record with its split in ``field``; an ``out`` path with ``{split}`` in it writes
    one file per split instead. Fractions are met in expectation (each group lands by its hash).
    """
    cfg = make_config(SplitConfig, config, options)
    fr: dict[str, float] = cfg.fractions  # type: ignore[assignment]
    src, dst = os.fspath(source), os.fspath(out)
    report = StepReport("split", src, dst, config_dict(cfg))
    skipped: Skipped = []
    ticker = Ticker(progress, "split")
    counts = dict.fromkeys(fr, 0)
    per_file = "{split}" in dst
    writers = (
        {name: RecordWriter(dst.replace("{split}", name)) for name in fr}
        if per_file
        else {"": RecordWriter(dst)}
    )
    for w in writers.values():
        w.__enter__()
    ok = False
    try:
        for rec in read_records(src, on_error, skipped, limit=limit):
            report.records_in += 1
            ticker.tick()
            try:
                task_group = rec.is_task and not cfg.key
                sym = cfg.symmetry if task_group else "none"
                group = _key_bytes(rec, cfg.key, sym, cfg.keep_background, pair_order=task_group)  # type: ignore[arg-type]
            except DatasetError as e:
                _fail_or_skip(e, on_error, skipped)
                continue
            name = assign_split(group, fr, cfg.seed)
            rec.set(cfg.field, name)
            writers[name if per_file else ""].write(rec)
            counts[name] += 1
            report.records_out += 1
        ok = True
    finally:
        for w in writers.values():
            if ok:
                w.__exit__(None, None, None)
            else:
                w.__exit__(RuntimeError, RuntimeError("step failed"), None)
    total = max(report.records_out, 1)
    report.figures = {
        "counts": counts,
        "fractions_requested": fr,
        "fractions_actual": {k: round(v / total, 4) for k, v in counts.items()},
    }
    return _finish(report, skipped, ticker, dst)


__all__ = [
    "DedupeConfig",
    "FilterConfig",
    "SplitConfig",
    "assign_split",
    "dedupe",
    "filter_records",
    "group_key",
    "make_config",
    "split",
]
