"""verify: recompute every listed file's size and sha256 and check shapes, dtypes and row counts."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import pyarrow.parquet as pq

from arcscope.errors import StoreError
from arcscope.progress import ProgressFn, emit
from arcscope.store.format import FORMAT, REQUIRED, ST_CODES, ShardInfo, read_st_header
from arcscope.store.fs import INDEX, MANIFEST, SHARDS, TMP_MARK, Location


@dataclass
class Damage:
    """One file that is not what the manifest says."""

    file: str
    problem: str
    expected: str | None = None
    actual: str | None = None

    def __str__(self) -> str:
        extra = f" (expected {self.expected}, found {self.actual})" if self.expected is not None else ""
        return f"{self.file}: {self.problem}{extra}"


@dataclass
class VerifyReport:
    """What verify found; ``ok`` when nothing listed is missing or damaged (orphans are harmless)."""

    url: str
    n_shards: int = 0
    n_rows: int = 0
    files_checked: int = 0
    bytes_checked: int = 0
    complete: bool = False
    missing: list[str] = field(default_factory=list)
    damaged: list[Damage] = field(default_factory=list)
    orphans: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when every listed file is present and intact."""
        return not self.missing and not self.damaged

    def lines(self) -> list[str]:
        """The report as text lines, one finding each."""
        state = "OK" if self.ok else "DAMAGED"
        out = [
            f"{self.url}: {state}: {self.n_shards} shards, {self.n_rows} rows, "
            f"{self.files_checked} files ({self.bytes_checked} bytes) checked"
            + ("" if self.complete else ", store not complete")
        ]
        out += [f"missing: {m}" for m in self.missing]
        out += [f"damaged: {d}" for d in self.damaged]
        out += [f"orphan (not in manifest, ignored by readers): {o}" for o in self.orphans]
        return out

    def __str__(self) -> str:
        return "\n".join(self.lines())


def verify(
    url: str | os.PathLike,
    storage_options: dict | None = None,
    progress: ProgressFn | None = None,
) -> VerifyReport:
    """Check every file the manifest lists (size, sha256, tensor shapes/dtypes, index rows) and find orphans.

    ``progress`` gets a "verify" event (files checked) after each file, with the file's name.
    """
    loc = Location(url, storage_options)
    report = VerifyReport(loc.url)
    try:
        manifest = loc.read_json(MANIFEST)
    except StoreError as e:
        if "not valid JSON" not in str(e):
            raise
        report.damaged.append(Damage(MANIFEST, "not valid JSON"))
        return report
    if manifest is None:
        raise StoreError(f"{loc.url}: no arcscope store here ({MANIFEST} not found); check the path or URL")
    if manifest.get("format") != FORMAT:
        report.damaged.append(
            Damage(MANIFEST, "not an arcscope store manifest", FORMAT, str(manifest.get("format")))
        )
        return report
    report.complete = bool(manifest.get("complete"))
    shards = [ShardInfo.from_json(s, loc.url) for s in manifest.get("shards", [])]
    hooks = {k: (int(v["d"]), str(v["dtype"])) for k, v in manifest.get("hooks", {}).items()}
    report.n_shards = len(shards)
    report.n_rows = sum(s.rows for s in shards)
    if manifest.get("n_rows", report.n_rows) != report.n_rows:
        report.damaged.append(
            Damage(MANIFEST, "n_rows disagrees with its shards", str(report.n_rows), str(manifest["n_rows"]))
        )
    for i, s in enumerate(shards):
        if _check_file(loc, report, s.file, s.bytes, s.sha256):
            _check_tensors(loc, report, s, hooks)
        emit(progress, "verify", 2 * i + 1, 2 * len(shards), file=s.file)
        if _check_file(loc, report, s.index, s.index_bytes, s.index_sha256):
            _check_index(loc, report, s)
        emit(progress, "verify", 2 * i + 2, 2 * len(shards), file=s.index)
    listed = {s.file for s in shards} | {s.index for s in shards}
    for folder in (SHARDS, INDEX):
        report.orphans += [f"{folder}/{n}" for n in loc.listdir(folder) if f"{folder}/{n}" not in listed]
    report.orphans += [n for n in loc.listdir("") if TMP_MARK in n]
    return report


def _check_file(loc: Location, report: VerifyReport, rel: str, size: int, sha: str) -> bool:
    """Size and hash; True when the file exists so its content can be checked further."""
    try:
        got_size, got_sha = loc.hash_file(rel)
    except FileNotFoundError:
        report.missing.append(rel)
        return False
    except Exception as e:  # an unreadable file is damage to report, not a reason to stop checking
        report.damaged.append(Damage(rel, f"unreadable: {e}"))
        return False
    report.files_checked += 1
    report.bytes_checked += got_size
    if got_size != size:
        report.damaged.append(Damage(rel, "size differs", f"{size} bytes", f"{got_size} bytes"))
    if got_sha != sha:
        report.damaged.append(Damage(rel, "sha256 differs", sha, got_sha))
    return True


def _check_tensors(
    loc: Location, report: VerifyReport, s: ShardInfo, hooks: dict[str, tuple[int, str]]
) -> None:
    try:
        header, _ = read_st_header(loc, s.file)
    except Exception as e:
        report.damaged.append(Damage(s.file, f"not a readable safetensors file: {e}"))
        return
    for hook, (d, dt) in hooks.items():
        meta = header.get(hook)
        if not isinstance(meta, dict):
            report.damaged.append(Damage(s.file, f"tensor {hook!r} is missing"))
            continue
        if meta.get("shape") != [s.rows, d]:
            report.damaged.append(
                Damage(s.file, f"tensor {hook!r} shape", str([s.rows, d]), str(meta.get("shape")))
            )
        if meta.get("dtype") != ST_CODES.get(dt):
            report.damaged.append(
                Damage(s.file, f"tensor {hook!r} dtype", ST_CODES.get(dt), str(meta.get("dtype")))
            )
    extra = sorted(set(header) - set(hooks))
    if extra:
        report.damaged.append(Damage(s.file, f"tensors not in the manifest: {extra}"))


def _check_index(loc: Location, report: VerifyReport, s: ShardInfo) -> None:
    try:
        with loc.fs.open(loc.path(s.index), "rb") as f:
            meta = pq.ParquetFile(f).metadata
            names = set(meta.schema.names)
            rows = meta.num_rows
    except Exception as e:
        report.damaged.append(Damage(s.index, f"not a readable Parquet file: {e}"))
        return
    if rows != s.rows:
        report.damaged.append(Damage(s.index, "row count", str(s.rows), str(rows)))
    missing = [c for c in REQUIRED if c not in names]
    if missing:
        report.damaged.append(Damage(s.index, f"required columns missing: {missing}"))
