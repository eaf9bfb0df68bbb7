"""StoreWriter: buffer captured rows, write shards (optionally on a thread pool), commit manifests."""

from __future__ import annotations

import json
import os
import struct
import threading
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from arcscope.errors import StoreError
from arcscope.store.format import (
    DTYPES,
    FORMAT,
    FORMAT_VERSION,
    IDENTITY_KEYS,
    META_DEFAULTS,
    RESERVED,
    ST_CODES,
    ShardInfo,
    as_index,
    as_tensor,
    dtype_name,
    index_name,
    json_copy,
    now,
    shard_name,
)
from arcscope.store.fs import INDEX, MANIFEST, SHARDS, TMP_MARK, Location, io_errors

Acts = Mapping[str, "torch.Tensor | np.ndarray"]


class StoreWriter:
    """Append captured activations to a store; rows and progress become visible together at ``commit``."""

    def __init__(
        self,
        url: str | os.PathLike,
        *,
        hooks: dict[str, dict] | None = None,
        meta: dict | None = None,
        shard_rows: int = 65536,
        resume: bool = False,
        overwrite: bool = False,
        storage_options: dict | None = None,
        writers: int = 1,
        max_shard_bytes: int = 256 << 20,
    ):
        if shard_rows < 1 or writers < 1 or max_shard_bytes < 1:
            raise StoreError("shard_rows, writers and max_shard_bytes must be at least 1")
        if resume and overwrite:
            raise StoreError(
                "pass either --resume (continue the store) or --overwrite (replace it), not both"
            )
        self._loc = Location(url, storage_options)
        self.url = self._loc.url
        self.shard_rows = shard_rows
        self.max_shard_bytes = max_shard_bytes
        self.writers = writers
        self.complete = False
        self.progress: dict[str, Any] = {}
        self._meta: dict[str, Any] = dict(META_DEFAULTS)
        self._hooks: dict[str, tuple[int, str]] = {}
        self._shards: list[ShardInfo] = []  # written; the first _n_committed are in the manifest
        self._n_committed = 0
        self._created = now()
        self._closed = False
        self._failed: StoreError | None = None
        self._buf: list[tuple[dict[str, torch.Tensor], pa.Table]] = []
        self._buf_rows = 0
        self._pending: list[Future[ShardInfo]] = []
        self._pool: ThreadPoolExecutor | None = None
        # At most `writers` shards are being serialised or uploaded at once; add() waits beyond that, so
        # memory stays near (writers + 1) shards however fast the caller produces rows.
        self._slots = threading.BoundedSemaphore(writers)

        manifest, ours = _inspect(self._loc, resume, overwrite)

        if manifest is not None and resume:
            self._load(manifest, hooks, meta)
        else:
            with io_errors(self.url, "clear the old store"):
                # The manifest goes first, so a reader never meets a manifest whose shards are gone.
                self._loc.remove([MANIFEST])
                self._loc.remove(ours)
            if hooks:
                self._hooks = self._check_hooks(hooks)
            self._meta.update(self._check_meta(meta))
            # Committing an empty manifest now fails fast on a bad URL or permission, before any compute.
            with io_errors(self.url, "create the store"):
                self._loc.makedirs(SHARDS)
                self._loc.makedirs(INDEX)
            self._write_manifest()

    # ---- public ----------------------------------------------------------------------------------------

    @property
    def hooks(self) -> dict[str, tuple[int, str]]:
        """Hook name -> (d, dtype) of the rows this store holds."""
        return dict(self._hooks)

    @property
    def meta(self) -> dict[str, Any]:
        """Caller metadata as the store holds it (after resume: as the first run wrote it)."""
        return json_copy(self._meta, "store meta")

    @property
    def bytes_written(self) -> int:
        """Bytes of the committed shard and index files."""
        return sum(s.bytes + s.index_bytes for s in self.shards)

    @property
    def shards(self) -> list[ShardInfo]:
        """The committed shards."""
        return self._shards[: self._n_committed]

    @property
    def n_rows(self) -> int:
        """Rows committed so far (not counting buffered or in-flight ones)."""
        return sum(s.rows for s in self.shards)

    @property
    def rows_per_shard(self) -> int:
        """Rows in a full shard: ``shard_rows``, lowered so one shard stays under ``max_shard_bytes``."""
        row_bytes = sum(d * _itemsize(dt) for d, dt in self._hooks.values()) or 1
        return max(1, min(self.shard_rows, self.max_shard_bytes // row_bytes))

    def add(self, acts: Acts, index: dict[str, Any] | pa.Table) -> None:
        """Buffer rows: ``acts`` maps hook -> [n, d]; ``index`` has one row per activation row."""
        self._check_writable()
        tensors = {str(k): as_tensor(str(k), v) for k, v in acts.items()}
        if not tensors:
            raise StoreError("add() needs at least one hook")
        sizes = {k: t.shape[0] for k, t in tensors.items()}
        n = next(iter(sizes.values()))
        if any(v != n for v in sizes.values()):
            raise StoreError(f"all hooks in one add() must have the same rows; got {sizes}")
        got = {k: (t.shape[1], dtype_name(t.dtype, k)) for k, t in tensors.items()}
        if self._hooks and got != self._hooks:
            raise StoreError(f"{self.url}: hooks {_fmt(got)} do not match the store's {_fmt(self._hooks)}")
        table = as_index(index, n)
        self._hooks = self._hooks or got
        if n == 0:
            return
        self._buf.append((tensors, table))
        self._buf_rows += n
        while self._buf_rows >= self.rows_per_shard:
            self._flush(self.rows_per_shard)

    def commit(self, progress: dict | None = None) -> None:
        """Write buffered rows as a shard and commit the manifest with ``progress``: both land, or neither."""
        self._check_writable()
        if progress is not None:
            self.progress = progress
        self._write_manifest(json_copy(self.progress, "progress"), flush=True)

    def close(self, complete: bool = True) -> None:
        """Commit what is buffered, mark the store complete (or not) and stop the writer threads."""
        if self._closed:
            return
        try:
            if not self.complete:
                self._check_writable()
                self._write_manifest(json_copy(self.progress, "progress"), flush=True, complete=complete)
        finally:
            self._closed = True
            self._shutdown()

    def abort(self) -> None:
        """Drop buffered rows and stop; the store stays as of the last commit (resume continues from it)."""
        self._closed = True
        self._buf.clear()
        self._buf_rows = 0
        self._shutdown()

    def __enter__(self) -> StoreWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def __repr__(self) -> str:
        return f"StoreWriter({self.url!r}, rows={self.n_rows}, shards={len(self._shards)})"

    # ---- internals -------------------------------------------------------------------------------------

    def _check_writable(self) -> None:
        if self._closed:
            raise StoreError(f"{self.url}: the writer is closed")
        if self.complete:
            raise StoreError(f"{self.url}: the store is complete; pass --overwrite to write it again")
        if self._failed is None:
            for f in self._pending:
                if f.done() and f.exception() is not None:
                    self._fail(f.exception())
        if self._failed is not None:
            raise self._failed

    def _fail(self, e: BaseException) -> None:
        if self._failed is None:
            self._failed = e if isinstance(e, StoreError) else StoreError(f"{self.url}: writing failed: {e}")

    def _load(self, manifest: dict, hooks: dict | None, meta: dict | None) -> None:
        if manifest.get("format") != FORMAT or int(manifest.get("format_version", 0)) > FORMAT_VERSION:
            raise StoreError(
                f"{self.url}: manifest format {manifest.get('format')!r} v{manifest.get('format_version')} "
                f"is not {FORMAT} v<={FORMAT_VERSION}; upgrade arcscope or use another folder"
            )
        self._created = manifest.get("created", self._created)
        self._shards = [ShardInfo.from_json(s, self.url) for s in manifest.get("shards", [])]
        self._n_committed = len(self._shards)
        self._hooks = {k: (int(v["d"]), str(v["dtype"])) for k, v in manifest.get("hooks", {}).items()}
        if hooks and self._hooks and self._check_hooks(hooks) != self._hooks:
            raise StoreError(
                f"{self.url}: this job captures {_fmt(self._check_hooks(hooks))} but the store holds "
                f"{_fmt(self._hooks)}; use --overwrite or another folder"
            )
        if hooks and not self._hooks:
            self._hooks = self._check_hooks(hooks)
        stored = {k: v for k, v in manifest.items() if k not in RESERVED}
        new = self._check_meta(meta)
        for key in IDENTITY_KEYS:
            if (
                new.get(key) not in (None, {})
                and stored.get(key) not in (None, {})
                and new[key] != stored[key]
            ):
                raise StoreError(
                    f"{self.url}: the store was written with {key} {stored[key]!r}, this job has {new[key]!r}; "
                    "resuming would mix the two: use --overwrite or another folder"
                )
        # The store keeps describing how it was made: new values only fill keys it does not have yet.
        self._meta.update(stored)
        self._meta.update({k: v for k, v in new.items() if stored.get(k) in (None, {}, [])})
        self.progress = manifest.get("progress") or {}
        self.complete = bool(manifest.get("complete"))
        if self.complete:
            return  # a finished store is left exactly as it is
        listed = {s.file for s in self._shards} | {s.index for s in self._shards}
        with io_errors(self.url, "remove files left by an interrupted job"):
            ours, _ = _existing_files(self._loc)
            self._loc.remove([rel for rel in ours if rel not in listed])
            self._loc.makedirs(SHARDS)
            self._loc.makedirs(INDEX)

    def _check_hooks(self, hooks: dict[str, dict]) -> dict[str, tuple[int, str]]:
        out = {}
        for name, spec in hooks.items():
            try:
                d, dt = int(spec["d"]), str(spec.get("dtype", "float32"))
            except (KeyError, TypeError, ValueError) as e:
                raise StoreError(f"hook {name!r}: expected {{'d': int, 'dtype': str}}, got {spec!r}") from e
            if dt not in DTYPES or d < 1:
                raise StoreError(
                    f"hook {name!r}: d must be >= 1 and dtype one of {sorted(DTYPES)}; got {spec!r}"
                )
            out[str(name)] = (d, dt)
        return out

    def _check_meta(self, meta: dict | None) -> dict[str, Any]:
        meta = json_copy(meta or {}, "store meta")
        if not isinstance(meta, dict):
            raise StoreError("store meta must be a dict")
        clash = sorted(set(meta) & RESERVED)
        if clash:
            raise StoreError(f"store meta may not set {clash}: the store writes those itself")
        return meta

    def _take(self, n: int) -> list[tuple[dict[str, torch.Tensor], pa.Table]]:
        parts, got = [], 0
        while got < n:
            tensors, table = self._buf[0]
            k = table.num_rows
            if got + k <= n:
                parts.append(self._buf.pop(0))
                got += k
            else:
                cut = n - got
                parts.append(({h: t[:cut] for h, t in tensors.items()}, table.slice(0, cut)))
                self._buf[0] = ({h: t[cut:] for h, t in tensors.items()}, table.slice(cut))
                got = n
        self._buf_rows -= n
        return parts

    def _flush(self, n: int) -> None:
        parts = self._take(n)
        sid = self._shards[-1].id + 1 if self._shards else 0
        sid += len(self._pending)
        if self.writers == 1:
            try:
                self._shards.append(self._write_shard(sid, parts))
            except BaseException as e:
                self._fail(e)
                raise
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.writers, thread_name_prefix="arcscope-store")
        self._slots.acquire()
        try:
            fut = self._pool.submit(self._write_shard, sid, parts)
        except BaseException:
            self._slots.release()
            raise
        fut.add_done_callback(lambda _: self._slots.release())
        self._pending.append(fut)

    def _drain(self) -> None:
        # Shards are listed in id order, and only once every one of them has landed.
        pending, self._pending = self._pending, []
        errors = []
        for fut in pending:
            try:
                info = fut.result()
            except BaseException as e:
                errors.append(e)
                continue
            if not errors:
                self._shards.append(info)
        if errors:
            self._fail(errors[0])
            raise self._failed  # type: ignore[misc]

    def _write_shard(self, sid: int, parts: list[tuple[dict[str, torch.Tensor], pa.Table]]) -> ShardInfo:
        table = (
            parts[0][1]
            if len(parts) == 1
            else pa.concat_tables([p[1] for p in parts], promote_options="permissive")
        )
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink, compression="zstd")
        file, index = shard_name(sid), index_name(sid)
        with io_errors(self.url, f"write {file}"):
            size, sha = self._loc.write_atomic(file, safetensors_pieces(self._hooks, parts))
        with io_errors(self.url, f"write {index}"):
            isize, isha = self._loc.write_atomic(index, [sink.getvalue()])
        return ShardInfo(sid, table.num_rows, file, size, sha, index, isize, isha)

    def _write_manifest(
        self, progress: dict | None = None, *, flush: bool = False, complete: bool = False
    ) -> None:
        if flush:
            if self._buf_rows:
                self._flush(self._buf_rows)
            self._drain()
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            **self._meta,
            "hooks": {k: {"d": d, "dtype": dt} for k, (d, dt) in self._hooks.items()},
            "shard_rows": self.shard_rows,
            "n_rows": sum(s.rows for s in self._shards),
            "shards": [s.to_json() for s in self._shards],
            "progress": progress if progress is not None else json_copy(self.progress, "progress"),
            "complete": complete,
            "created": self._created,
            "updated": now(),
        }
        data = json.dumps(manifest, indent=1).encode()
        with io_errors(self.url, f"commit {MANIFEST}"):
            self._loc.write_atomic(MANIFEST, [data])
        self._n_committed = len(self._shards)
        self.complete = complete

    def _shutdown(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        self._pending.clear()


def check_target(
    url: str | os.PathLike,
    *,
    resume: bool = False,
    overwrite: bool = False,
    storage_options: dict | None = None,
) -> None:
    """Raise the StoreError a :class:`StoreWriter` with these settings would raise for ``url``, writing
    nothing: a job checks its output folder before it spends minutes loading a model."""
    _inspect(Location(url, storage_options), resume, overwrite)


def _inspect(loc: Location, resume: bool, overwrite: bool) -> tuple[dict | None, list[str]]:
    """The folder's manifest (None: no store) and our uncommitted files; refuses what may not be written."""
    with io_errors(loc.url, "open the store"):
        if loc.is_file():
            raise StoreError(f"{loc.url} is a file; a store is a folder (or URL prefix)")
        manifest = loc.read_json(MANIFEST)
        ours, others = _existing_files(loc)
    if manifest is not None and (not isinstance(manifest, dict) or manifest.get("format") != FORMAT):
        # Someone else's manifest.json: replacing it (or writing a store among their files) would destroy
        # data arcscope never wrote, whatever --overwrite says.
        raise StoreError(
            f'{loc.url}: {MANIFEST} is not an arcscope store manifest (it has no "format": '
            f'"{FORMAT}"); arcscope writes a store only into a new or empty folder or over a store of '
            "its own, and never replaces files it did not write: choose another folder"
        )
    # Files beside a committed manifest are allowed (a run keeps predictions and its report next to its
    # store); a folder of foreign files with no manifest is never written into.
    if others and manifest is None:
        raise StoreError(
            f"{loc.url} is not empty and holds no arcscope store ({others[:3]}...); "
            "choose a new or empty folder"
        )
    if manifest is not None and not (resume or overwrite):
        state = "complete" if manifest.get("complete") else "incomplete"
        raise StoreError(
            f"{loc.url} already holds an {state} store ({manifest.get('n_rows', 0)} rows); "
            "pass --resume to continue it or --overwrite to replace it"
        )
    if manifest is None and ours and not (resume or overwrite):
        raise StoreError(
            f"{loc.url} holds files of an unfinished store that never committed; "
            "pass --resume or --overwrite to start it again"
        )
    return manifest, ours


def _existing_files(loc: Location) -> tuple[list[str], list[str]]:
    """Files of ours that no manifest needs to know about yet, and files that are not ours at all."""
    ours, others = [], []
    for name in loc.listdir(""):
        if name in (SHARDS, INDEX):
            ours += [f"{name}/{n}" for n in loc.listdir(name)]
        elif name == MANIFEST:
            continue
        elif name.startswith(f".{MANIFEST}{TMP_MARK}"):
            ours.append(name)
        else:
            others.append(name)
    return ours, others


def safetensors_pieces(
    hooks: dict[str, tuple[int, str]], parts: list[tuple[dict[str, torch.Tensor], pa.Table]]
) -> list[bytes | memoryview]:
    """A safetensors file as a header plus views of the buffered chunks, so rows are never concatenated."""
    # Larger dtypes first, as safetensors itself does, so that every tensor starts aligned to its itemsize.
    names = sorted(hooks, key=lambda h: (-_itemsize(hooks[h][1]), h))
    rows = sum(p[1].num_rows for p in parts)
    header, body, offset = {}, [], 0
    for h in names:
        d, dt = hooks[h]
        nbytes = rows * d * _itemsize(dt)
        header[h] = {"dtype": ST_CODES[dt], "shape": [rows, d], "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
        body += [memoryview(p[0][h].view(torch.uint8).numpy()).cast("B") for p in parts]
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-(8 + len(text)) % 8)  # data starts 8-byte aligned, for zero-copy memory maps
    return [struct.pack("<Q", len(text)) + text, *body]


def _itemsize(dtype: str) -> int:
    return torch.empty((), dtype=DTYPES[dtype]).element_size()


def _fmt(hooks: dict[str, tuple[int, str]]) -> str:
    return ", ".join(f"{k}[{d}]:{dt}" for k, (d, dt) in hooks.items()) or "(none)"
