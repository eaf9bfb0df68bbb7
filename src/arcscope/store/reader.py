"""Store: read a committed store (index, tensors, queries, batches, a shuffled dataset, HF export).

This module is the only code that reads shards, and every read is checked against the manifest by one
check (:meth:`Store._check_shard`): on its first read through a :class:`Store` (or a :class:`ShardStream`) a
shard's size and safetensors header (rows, shapes, dtypes) must match the manifest, and with the default
``verify="sha256"`` its whole-file hash too; index files likewise. Trainers take rows from
:meth:`Store.stream` (shards in a seeded order, read ahead on threads) through :func:`shuffle_blocks` (the
one shuffle buffer), seeded with :func:`mix_seed` (the one seed mixer).
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import tempfile
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch
from safetensors import safe_open

from arcscope.errors import StoreError
from arcscope.store.format import (
    DTYPES,
    FORMAT,
    FORMAT_VERSION,
    INDEX_SCHEMA,
    RESERVED,
    ST_CODES,
    ST_NAMES,
    ShardInfo,
    read_st_header,
)
from arcscope.store.fs import MANIFEST, Location, io_errors

Conditions = dict[str, Any]
VERIFY_MODES = ("sha256", "size")
"""How a shard is checked on its first read: whole-file sha256 (and size and header), or size and header
only (one small read per shard: for speed, when the store was just verified or is trusted)."""
ON_DAMAGED = ("error", "skip")
"""What a damaged shard does to a stream: stop it, or be skipped and named in ``ShardStream.skipped``."""


def open_store(
    url: str | os.PathLike, storage_options: dict | None = None, *, verify: str = "sha256"
) -> Store:
    """Open the store at a local path or fsspec URL for reading; ``verify`` is how each shard is checked on
    its first read (:data:`VERIFY_MODES`)."""
    mode = _verify_mode(verify)
    loc = Location(url, storage_options)
    manifest = loc.read_json(MANIFEST)
    if manifest is None:
        raise StoreError(f"{loc.url}: no arcscope store here ({MANIFEST} not found); check the path or URL")
    return Store(loc, manifest, verify=mode)


def _verify_mode(verify: str) -> str:
    if verify not in VERIFY_MODES:
        raise StoreError(f"verify {verify!r} is not one of {', '.join(VERIFY_MODES)}")
    return verify


class Store:
    """A committed store: only shards listed in its manifest are ever read."""

    def __init__(self, loc: Location, manifest: dict[str, Any], *, verify: str = "sha256"):
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise StoreError(f"{loc.url}: {MANIFEST} is not an arcscope store manifest")
        if int(manifest.get("format_version", 0)) > FORMAT_VERSION:
            raise StoreError(
                f"{loc.url}: store format v{manifest['format_version']} is newer than this arcscope reads "
                f"(v{FORMAT_VERSION}); upgrade arcscope"
            )
        self._loc = loc
        self.url = loc.url
        self.manifest = manifest
        self.shards = [ShardInfo.from_json(s, loc.url) for s in manifest.get("shards", [])]
        self.hooks: dict[str, tuple[int, str]] = {
            k: (int(v["d"]), str(v["dtype"])) for k, v in manifest.get("hooks", {}).items()
        }
        # offsets[i] is the global row number of the first row of shard position i.
        self._offsets = np.concatenate([[0], np.cumsum([s.rows for s in self.shards], dtype=np.int64)])
        self._headers: dict[int, tuple[dict[str, Any], int]] = {}
        self._index: pa.Table | None = None
        self.verify_mode = _verify_mode(verify)
        """How :meth:`read`, :meth:`query`, :meth:`dataset` and :meth:`stream` check a shard on first read."""
        # file -> the strongest check it passed in this Store object, so each file is checked once.
        self._verified: dict[str, str] = {}

    # ---- metadata --------------------------------------------------------------------------------------

    @property
    def n_rows(self) -> int:
        """Rows in all committed shards."""
        return int(self._offsets[-1])

    @property
    def complete(self) -> bool:
        """Whether the job that wrote the store finished."""
        return bool(self.manifest.get("complete"))

    @property
    def progress(self) -> dict[str, Any]:
        """The job's resume state as last committed."""
        return dict(self.manifest.get("progress") or {})

    @property
    def meta(self) -> dict[str, Any]:
        """Caller metadata: model, capture, tokenizer, task_source, job and any extra keys."""
        return {k: v for k, v in self.manifest.items() if k not in RESERVED}

    @property
    def nbytes(self) -> int:
        """Bytes of all shard and index files."""
        return sum(s.bytes + s.index_bytes for s in self.shards)

    def __len__(self) -> int:
        return self.n_rows

    def __repr__(self) -> str:
        return f"Store({self.url!r}, rows={self.n_rows}, shards={len(self.shards)}, hooks={list(self.hooks)})"

    # ---- index -----------------------------------------------------------------------------------------

    def shard_index(self, pos: int) -> pa.Table:
        """The index table of the shard at list position ``pos``, checked against the manifest (size, rows,
        and sha256 on first read unless the store was opened with ``verify="size"``)."""
        s = self.shards[pos]
        where = f"{self.url}: index file {s.index}"
        # Index files are small and Parquet reads them whole anyway: one read serves hash and table.
        try:
            with io_errors(self.url, f"read {s.index}"):
                data = self._loc.read_bytes(s.index)
        except StoreError as e:
            raise self._damaged(f"{where} is damaged: cannot be read ({e})") from None
        if len(data) != s.index_bytes:
            raise self._damaged(f"{where} is damaged: {len(data)} bytes, the manifest says {s.index_bytes}")
        if self.verify_mode == "sha256" and self._verified.get(s.index) != "sha256":
            sha = hashlib.sha256(data).hexdigest()
            if sha != s.index_sha256:
                raise self._damaged(f"{where} is damaged: sha256 {sha[:12]}... differs from the manifest's")
            self._verified[s.index] = "sha256"
        try:
            table = pq.read_table(pa.BufferReader(data))
        except (pa.ArrowException, OSError, ValueError) as e:
            raise self._damaged(f"{where} is damaged: not a readable Parquet file ({e})") from None
        if table.num_rows != s.rows:
            raise self._damaged(f"{where} is damaged: {table.num_rows} rows, the manifest says {s.rows}")
        return table

    def index(self, columns: list[str] | None = None, filter: Any = None) -> pa.Table:
        """All index rows with ``shard`` and ``row_in_shard`` added; ``filter`` is a dict or pyarrow Expression."""
        table = self._full_index()
        if filter is not None:
            expr = filter if isinstance(filter, pc.Expression) else self._expression(filter)
            try:
                table = table.filter(expr)
            except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as e:
                raise StoreError(f"{self.url}: index filter {filter!r} failed: {e}") from e
        if columns is not None:
            unknown = [c for c in columns if c not in table.column_names]
            if unknown:
                raise StoreError(f"{self.url}: index has no columns {unknown}; it has {table.column_names}")
            keep = [c for c in columns if c not in ("shard", "row_in_shard")]
            table = table.select([*keep, "shard", "row_in_shard"])
        return table

    def _full_index(self) -> pa.Table:
        if self._index is None:
            tables = []
            for pos, s in enumerate(self.shards):
                t = self.shard_index(pos)
                t = t.append_column("shard", pa.array(np.full(s.rows, s.id, dtype=np.int32)))
                t = t.append_column("row_in_shard", pa.array(np.arange(s.rows, dtype=np.int32)))
                tables.append(t)
            if tables:
                self._index = pa.concat_tables(tables, promote_options="permissive")
            else:
                schema = INDEX_SCHEMA.append(pa.field("shard", pa.int32())).append(
                    pa.field("row_in_shard", pa.int32())
                )
                self._index = schema.empty_table()
        return self._index

    def _expression(self, conditions: Conditions) -> pc.Expression:
        cols = self._full_index().column_names
        expr = None
        for name, value in conditions.items():
            if name not in cols:
                raise StoreError(f"{self.url}: cannot filter on {name!r}; index columns are {cols}")
            if isinstance(value, list | tuple | set | frozenset | np.ndarray):
                e = pc.field(name).isin(list(value))
            else:
                e = pc.field(name) == value
            expr = e if expr is None else expr & e
        return expr if expr is not None else pc.scalar(True)

    def _global_rows(self, table: pa.Table) -> np.ndarray:
        pos_of = {s.id: i for i, s in enumerate(self.shards)}
        shard = table.column("shard").to_numpy()
        pos = (
            np.array([pos_of[int(x)] for x in shard], dtype=np.int64) if len(shard) else np.zeros(0, np.int64)
        )
        return self._offsets[pos] + table.column("row_in_shard").to_numpy().astype(np.int64)

    # ---- tensors ---------------------------------------------------------------------------------------

    def read(self, hook: str, shard: int | None = None, rows: Any = None) -> torch.Tensor:
        """Rows of ``hook``: one shard (by id) or the whole store; ``rows`` indexes within that scope."""
        d, dt = self._hook(hook)
        if shard is not None:
            pos = self._pos(shard)
            if rows is None:
                return self._rows(hook, pos, 0, self.shards[pos].rows)
            rows = np.asarray(rows, dtype=np.int64).reshape(-1)
            if len(rows) and (rows.min() < 0 or rows.max() >= self.shards[pos].rows):
                raise StoreError(
                    f"{self.url}: shard {shard} has {self.shards[pos].rows} rows; asked for {rows}"
                )
            return self._gather(hook, np.full(len(rows), pos), rows)
        if rows is None:
            parts = [self._rows(hook, pos, 0, s.rows) for pos, s in enumerate(self.shards)]
            return torch.cat(parts) if parts else torch.empty((0, d), dtype=DTYPES[dt])
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        if len(rows) and (rows.min() < 0 or rows.max() >= self.n_rows):
            raise StoreError(
                f"{self.url}: the store has {self.n_rows} rows; asked for rows up to {rows.max()}"
            )
        pos = np.searchsorted(self._offsets[1:], rows, side="right")
        return self._gather(hook, pos, rows - self._offsets[pos])

    def query(self, hook: str, **conditions: Any) -> tuple[torch.Tensor, pa.Table]:
        """Rows of ``hook`` whose index matches every condition (value, or list of values), with their index."""
        table = self.index(filter=conditions)
        return self.read(hook, rows=self._global_rows(table)), table

    def iter_batches(
        self, hook: str, batch_size: int, *, with_index: bool = False
    ) -> Iterator[torch.Tensor | tuple[torch.Tensor, pa.Table]]:
        """Rows of ``hook`` in store order, ``batch_size`` at a time (the last batch may be short)."""
        if batch_size < 1:
            raise StoreError("batch_size must be at least 1")
        carry: torch.Tensor | None = None
        carry_idx: pa.Table | None = None
        for pos, s in enumerate(self.shards):
            t = self._rows(hook, pos, 0, s.rows)
            idx = self.shard_index(pos) if with_index else None
            if carry is not None and len(carry):
                # Only the short tail of the previous shard is copied, never a whole shard per batch.
                t = torch.cat([carry, t])
                idx = pa.concat_tables([carry_idx, idx], promote_options="permissive") if with_index else None
            n = len(t) - len(t) % batch_size
            for a in range(0, n, batch_size):
                yield (
                    (t[a : a + batch_size], idx.slice(a, batch_size)) if with_index else t[a : a + batch_size]
                )
            carry, carry_idx = t[n:], idx.slice(n) if with_index else None
        if carry is not None and len(carry):
            yield (carry, carry_idx) if with_index else carry

    def dataset(
        self,
        hook: str,
        shuffle_buffer: int = 65536,
        seed: int = 0,
        batch_size: int | None = None,
        *,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = False,
    ) -> ActivationDataset:
        """A torch IterableDataset over ``hook`` rows: seeded shuffle, shards split over ranks and workers; each
        shard is checked as :attr:`verify_mode` says on its first read."""
        self._hook(hook)
        return ActivationDataset(self, hook, shuffle_buffer, seed, batch_size, rank, world_size, drop_last)

    def stream(
        self, hook: str, *, verify: str | None = None, on_damaged: str = "error", prefetch: int = 4
    ) -> ShardStream:
        """Rows of ``hook`` shard by shard for trainers: seeded shard order, read-ahead, integrity checks
        (``verify`` None: the store's :attr:`verify_mode`)."""
        return ShardStream(
            self, hook, verify=verify or self.verify_mode, on_damaged=on_damaged, prefetch=prefetch
        )

    def check_shards(self, verify: str = "size") -> dict[str, str]:
        """Check every shard and index file against the manifest now; return file -> what is wrong (empty
        when all match). ``verify="size"`` reads only headers and sizes; "sha256" hashes every file."""
        mode = _verify_mode(verify)
        problems: dict[str, str] = {}
        for pos, s in enumerate(self.shards):
            try:
                self._check_shard(pos, mode)
            except StoreError as e:
                problems[s.file] = str(e).removeprefix(f"{self.url}: shard {s.file} is damaged: ")
            try:
                self.shard_index(pos) if mode == "sha256" else self._check_index_size(pos)
            except StoreError as e:
                text = str(e).split("; run `arcscope store verify")[0]
                problems[s.index] = text.removeprefix(f"{self.url}: index file {s.index} is damaged: ")
        return problems

    # ---- export ----------------------------------------------------------------------------------------

    def export_hf(self, folder: str | os.PathLike, hooks: list[str] | None = None) -> str:
        """Write a Hugging Face ``datasets`` folder (save_to_disk): index columns plus one column per hook."""
        import datasets

        hooks = list(self.hooks) if hooks is None else list(hooks)
        for h in hooks:
            self._hook(h)
        schema = self._full_index().schema.remove(self._full_index().schema.get_field_index("shard"))
        schema = schema.remove(schema.get_field_index("row_in_shard"))
        for h in hooks:
            d, dt = self.hooks[h]
            # Arrow has no bfloat16; float32 holds every bfloat16 value exactly.
            vt = (
                pa.float32()
                if dt == "bfloat16"
                else pa.from_numpy_dtype(torch.empty(0, dtype=DTYPES[dt]).numpy().dtype)
            )
            schema = schema.append(pa.field(h, pa.list_(vt, d)))
        folder = os.fspath(folder)
        with tempfile.TemporaryDirectory(prefix="arcscope-export-") as tmp:
            # Each shard goes to an Arrow stream file that datasets memory-maps, so export needs about one
            # shard of memory whatever the store's size.
            parts = []
            for pos, s in enumerate(self.shards):
                table = _conform(self.shard_index(pos), schema, exclude=hooks)
                for h in hooks:
                    t = self._rows(h, pos, 0, s.rows)
                    if t.dtype == torch.bfloat16:
                        t = t.float()
                    flat = pa.array(t.reshape(-1).numpy())
                    table = table.append_column(
                        schema.field(h), pa.FixedSizeListArray.from_arrays(flat, t.shape[1])
                    )
                parts.append(_arrow_file(os.path.join(tmp, f"{pos:05d}.arrow"), table))
            if not parts:
                parts.append(_arrow_file(os.path.join(tmp, "empty.arrow"), schema.empty_table()))
            ds = datasets.concatenate_datasets([datasets.Dataset.from_file(p) for p in parts])
            # The save bar would interleave with the caller's own progress output.
            quiet = datasets.utils.are_progress_bars_disabled()
            datasets.disable_progress_bars()
            try:
                ds.save_to_disk(folder)
            finally:
                if not quiet:
                    datasets.enable_progress_bars()
            del ds
        return folder

    # ---- internals -------------------------------------------------------------------------------------

    def _hook(self, hook: str) -> tuple[int, str]:
        try:
            return self.hooks[hook]
        except KeyError:
            raise StoreError(f"{self.url}: no hook {hook!r}; the store has {sorted(self.hooks)}") from None

    def _pos(self, shard_id: int) -> int:
        for i, s in enumerate(self.shards):
            if s.id == shard_id:
                return i
        raise StoreError(f"{self.url}: no shard {shard_id}; shards are {[s.id for s in self.shards]}")

    def _rows(self, hook: str, pos: int, start: int, stop: int, *, check: bool = True) -> torch.Tensor:
        """Rows [start, stop) of ``hook`` in the shard at list position ``pos``, the shard checked on its first
        read (``check`` False: the caller, a :class:`ShardStream`, has checked it itself)."""
        d, dt = self._hook(hook)
        s = self.shards[pos]
        if check and _RANK.get(self._verified.get(s.file, ""), 0) < _RANK[self.verify_mode]:
            # Remote shards are fetched whole to be hashed, and the rows are cut from those bytes: the
            # shard crosses the network once. Local ones are hashed streaming, then memory-mapped.
            fetch = self.verify_mode == "sha256" and not self._loc.local
            data = self._fetch(pos) if fetch else None
            try:
                header, base = self._check_shard(pos, self.verify_mode, data)
            except StoreError as e:
                raise self._damaged(str(e)) from None
            self._verified[s.file] = self.verify_mode
            if data is not None:
                return _tensor_from_bytes(data, header, base, hook, start, stop, (d, dt))
        with io_errors(self.url, f"read {hook} from {s.file}"):
            if self._loc.local:
                # safe_open memory-maps the file: only the requested rows are paged in.
                with safe_open(self._loc.path(s.file), framework="pt") as f:
                    if start == 0 and stop == s.rows:
                        return f.get_tensor(hook)
                    return f.get_slice(hook)[start:stop]
            header, base = self._header(pos)
            meta = header.get(hook)
            if meta is None or ST_NAMES.get(meta["dtype"]) != dt:
                raise StoreError(
                    f"{self.url}: {s.file} lacks tensor {hook} as {dt}; run `arcscope store verify`"
                )
            width = d * DTYPES[dt].itemsize
            lo = base + meta["data_offsets"][0] + start * width
            data = self._loc.read_bytes(s.file, lo, lo + (stop - start) * width)
        if len(data) != (stop - start) * width:
            raise StoreError(
                f"{self.url}: {s.file} is shorter than its header says; run `arcscope store verify`"
            )
        if stop == start:
            return torch.empty((0, d), dtype=DTYPES[dt])
        return torch.frombuffer(bytearray(data), dtype=DTYPES[dt]).reshape(stop - start, d)

    def _header(self, pos: int) -> tuple[dict[str, Any], int]:
        if pos not in self._headers:
            self._headers[pos] = read_st_header(self._loc, self.shards[pos].file)
        return self._headers[pos]

    def _damaged(self, message: str) -> StoreError:
        """A read-path StoreError: what is wrong, then what to do."""
        return StoreError(f"{message}; run `arcscope store verify {self.url}` to list every damaged file")

    def _fetch(self, pos: int) -> bytearray:
        """The whole shard file's bytes (a failure to read is damage to the shard)."""
        s = self.shards[pos]
        try:
            with io_errors(self.url, f"read {s.file}"):
                return bytearray(self._loc.read_bytes(s.file))
        except StoreError as e:
            raise self._damaged(f"{self.url}: shard {s.file} is damaged: cannot be read ({e})") from None

    def _check_index_size(self, pos: int) -> None:
        s = self.shards[pos]
        where = f"{self.url}: index file {s.index}"
        try:
            with io_errors(self.url, f"read {s.index}"):
                size = self._loc.fs.size(self._loc.path(s.index))
        except StoreError as e:
            raise StoreError(f"{where} is damaged: cannot be read ({e})") from None
        if size != s.index_bytes:
            raise StoreError(f"{where} is damaged: {size} bytes, the manifest says {s.index_bytes}")

    def _check_shard(
        self, pos: int, mode: str, data: bytes | bytearray | None = None
    ) -> tuple[dict[str, Any], int]:
        """The one shard check: safetensors header (every hook's shape, dtype and byte range), size and, with
        ``mode`` "sha256", the file's hash, all against the manifest. ``data``: the file's bytes when the
        caller has them (hashed in place, never fetched twice). Returns the header and where data starts;
        raises StoreError "<url>: shard <file> is damaged: <rule>"."""
        s = self.shards[pos]
        where = f"{self.url}: shard {s.file}"
        try:
            with io_errors(self.url, f"read {s.file}"):
                size = len(data) if data is not None else self._loc.fs.size(self._loc.path(s.file))
                header, base = _parse_header(data) if data is not None else read_st_header(self._loc, s.file)
        except (struct.error, ValueError) as e:
            raise StoreError(f"{where} is damaged: unreadable safetensors header ({e})") from None
        except StoreError as e:
            raise StoreError(f"{where} is damaged: cannot be read ({e})") from None
        # The header first: a shard swapped with another says which rows it holds, not only its size.
        for hook, (d, dt) in self.hooks.items():
            meta = header.get(hook)
            if not isinstance(meta, dict):
                raise StoreError(f"{where} is damaged: it has no tensor {hook!r}")
            if meta.get("shape") != [s.rows, d] or meta.get("dtype") != ST_CODES[dt]:
                raise StoreError(
                    f"{where} is damaged: {hook} is {meta.get('dtype')} {meta.get('shape')}, the manifest "
                    f"says {ST_CODES[dt]} {[s.rows, d]}"
                )
        if size != s.bytes:
            raise StoreError(f"{where} is damaged: {size} bytes, the manifest says {s.bytes}")
        for hook, (d, dt) in self.hooks.items():
            offs = header[hook].get("data_offsets")
            if (
                not isinstance(offs, list)
                or len(offs) != 2
                or not all(isinstance(o, int) for o in offs)
                or offs[1] - offs[0] != s.rows * d * DTYPES[dt].itemsize
                or offs[0] < 0
                or base + offs[1] > size
            ):
                raise StoreError(f"{where} is damaged: {hook}'s byte range {offs} does not fit the file")
        if mode == "sha256":
            try:
                with io_errors(self.url, f"read {s.file}"):
                    # Streamed when the bytes are not in hand: a big shard never sits in memory.
                    size, sha = (
                        (len(data), hashlib.sha256(data).hexdigest())
                        if data is not None
                        else self._loc.hash_file(s.file)
                    )
            except StoreError as e:
                raise StoreError(f"{where} is damaged: cannot be read ({e})") from None
            if size != s.bytes or sha != s.sha256:
                raise StoreError(f"{where} is damaged: sha256 {sha[:12]}... differs from the manifest's")
        self._headers[pos] = (header, base)
        return header, base

    def _gather(self, hook: str, pos: np.ndarray, local: np.ndarray) -> torch.Tensor:
        d, dt = self._hook(hook)
        out = torch.empty((len(local), d), dtype=DTYPES[dt])
        for p in np.unique(pos):
            mask = pos == p
            want = local[mask]
            lo, hi = int(want.min()), int(want.max()) + 1
            # One contiguous read per shard; rows then picked in memory (fewer requests on object stores).
            block = self._rows(hook, int(p), lo, hi)
            out[torch.from_numpy(mask)] = block[torch.from_numpy(want - lo)]
        return out


class ShardStream:
    """Rows of one hook, shard by shard; each shard is checked against the manifest on its first read, and a
    damaged one stops the stream or (``on_damaged="skip"``) is skipped and named in :attr:`skipped`."""

    def __init__(
        self, store: Store, hook: str, *, verify: str = "sha256", on_damaged: str = "error", prefetch: int = 4
    ):
        self.d, self.dtype = store._hook(hook)
        _verify_mode(verify)
        if on_damaged not in ON_DAMAGED:
            raise StoreError(f"on_damaged {on_damaged!r} is not one of {', '.join(ON_DAMAGED)}")
        self.store, self.hook = store, hook
        self.verify, self.on_damaged, self.prefetch = verify, on_damaged, max(0, int(prefetch))
        self.skipped: dict[str, str] = {}
        """Shard file -> why it was skipped (only with on_damaged='skip')."""
        self._checked: set[int] = set()

    def order(
        self, epoch: int, seed: int, rank: int = 0, world: int = 1, *, shuffle: bool = True
    ) -> list[int]:
        """List positions of this rank's shards for one epoch: every rank draws one seeded order and takes
        its stride of it (``shuffle`` False: store order)."""
        if not 0 <= rank < world:
            raise StoreError(f"rank {rank} is not in [0, {world})")
        n = len(self.store.shards)
        if shuffle:
            g = torch.Generator().manual_seed(mix_seed(seed, epoch))
            return torch.randperm(n, generator=g).tolist()[rank::world]
        return list(range(n))[rank::world]

    def blocks(
        self, epoch: int, seed: int, rank: int = 0, world: int = 1, *, shuffle: bool = True
    ) -> Iterator[torch.Tensor]:
        """The rows of this rank's shards (:meth:`order`), one tensor per shard, ``prefetch`` shards in flight."""
        order = self.order(epoch, seed, rank, world, shuffle=shuffle)
        if self.prefetch <= 0:
            for pos in order:
                t = self.read_shard(pos)
                if t is not None:
                    yield t
        else:
            with ThreadPoolExecutor(self.prefetch, thread_name_prefix="arcscope-store-read") as pool:
                pending: deque[Future] = deque()
                todo = iter(order)
                for pos in todo:
                    pending.append(pool.submit(self.read_shard, pos))
                    if len(pending) >= self.prefetch:
                        break
                try:
                    while pending:
                        t = pending.popleft().result()
                        nxt = next(todo, None)
                        if nxt is not None:
                            pending.append(pool.submit(self.read_shard, nxt))
                        if t is not None:
                            yield t
                finally:
                    for f in pending:
                        f.cancel()
        if order and all(self.store.shards[p].file in self.skipped for p in order):
            raise StoreError(
                f"{self.store.url}: every shard was skipped as damaged; no rows are left to read"
            )

    def read_shard(self, pos: int) -> torch.Tensor | None:
        """The hook's rows in the shard at list position ``pos``; None when it is damaged and skipped."""
        s = self.store.shards[pos]
        try:
            t = self._read_checked(pos) if pos not in self._checked else self._read_plain(pos)
            self._checked.add(pos)
            return t
        except StoreError as e:
            if self.on_damaged == "skip":
                self.skipped[s.file] = str(e)
                return None
            raise StoreError(
                f"{e}; run `arcscope store verify {self.store.url}`, or pass --on-damaged skip "
                "to go on with the other shards"
            ) from None

    def _read_plain(self, pos: int) -> torch.Tensor:
        s = self.store.shards[pos]
        return self.store._rows(self.hook, pos, 0, s.rows, check=False)

    def _read_checked(self, pos: int) -> torch.Tensor:
        s = self.store.shards[pos]
        if self.verify == "sha256":
            # One read serves both the hash and the tensor: the bytes are not fetched twice.
            try:
                with io_errors(self.store.url, f"read {s.file}"):
                    data = bytearray(self.store._loc.read_bytes(s.file))
            except StoreError as e:
                raise StoreError(
                    f"{self.store.url}: shard {s.file} is damaged: cannot be read ({e})"
                ) from None
            header, base = self.store._check_shard(pos, "sha256", data)
            t = _tensor_from_bytes(data, header, base, self.hook, 0, s.rows, (self.d, self.dtype))
        else:
            self.store._check_shard(pos, "size")
            t = self._read_plain(pos)
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise StoreError(
                f"{self.store.url}: shard {s.file} is damaged: {self.hook} holds NaN or infinite values"
            )
        return t


class ActivationDataset(torch.utils.data.IterableDataset):
    """Rows of one hook for training (e.g. an SAE): every row once per epoch, order fixed by seed and epoch."""

    def __init__(
        self,
        store: Store,
        hook: str,
        shuffle_buffer: int,
        seed: int,
        batch_size: int | None,
        rank: int,
        world_size: int,
        drop_last: bool,
    ):
        super().__init__()
        if not 0 <= rank < world_size:
            raise StoreError(f"rank {rank} is not in [0, {world_size})")
        self.store, self.hook = store, hook
        self.shuffle_buffer, self.seed, self.batch_size = shuffle_buffer, seed, batch_size
        self.rank, self.world_size, self.drop_last = rank, world_size, drop_last
        self.epoch = 0
        # Prefetch threads are the DataLoader's job. The stream checks each shard on its first read as the
        # store's verify mode says (sha256 by default: the bytes are read anyway, hashing costs CPU only).
        self._stream = store.stream(hook, prefetch=0)

    def set_epoch(self, epoch: int) -> None:
        """Use another shuffle for the next pass (call once per epoch, as with DistributedSampler)."""
        self.epoch = epoch

    def _rows(self) -> Iterator[torch.Tensor]:
        """Blocks of rows in their final order."""
        info = torch.utils.data.get_worker_info()
        wid, nw = (info.id, info.num_workers) if info is not None else (0, 1)
        # Every rank and worker draws the same shard order and takes its own stride of it.
        slot = self.rank * nw + wid
        blocks = self._stream.blocks(
            self.epoch, self.seed, slot, self.world_size * nw, shuffle=bool(self.shuffle_buffer)
        )
        yield from shuffle_blocks(blocks, self.shuffle_buffer, mix_seed(self.seed, self.epoch, slot + 1))

    def __iter__(self) -> Iterator[torch.Tensor]:
        if self.batch_size is None:
            for block in self._rows():
                yield from block
            return
        carry: torch.Tensor | None = None
        for block in self._rows():
            if carry is not None and len(carry):
                block = torch.cat([carry, block])
            n = len(block) - len(block) % self.batch_size
            for i in range(0, n, self.batch_size):
                yield block[i : i + self.batch_size]
            carry = block[n:]
        if carry is not None and len(carry) and not self.drop_last:
            yield carry


def _parse_header(data: bytes | bytearray) -> tuple[dict[str, Any], int]:
    """The safetensors header of a whole file's bytes, and where its data starts."""
    (n,) = struct.unpack("<Q", bytes(data[:8]))
    header = json.loads(bytes(data[8 : 8 + n]))
    if not isinstance(header, dict):
        raise ValueError("header is not a JSON object")
    header.pop("__metadata__", None)
    return header, 8 + n


_RANK = {"": 0, "size": 1, "sha256": 2}  # a sha256 check covers everything a size check does


def _tensor_from_bytes(
    data: bytearray, header: dict[str, Any], base: int, hook: str, start: int, stop: int, hook_type: tuple
) -> torch.Tensor:
    """Rows [start, stop) of ``hook`` out of a checked shard's bytes (a view, not a copy)."""
    d, dt = hook_type
    width = d * DTYPES[dt].itemsize
    lo = base + header[hook]["data_offsets"][0] + start * width
    if stop == start:
        return torch.empty((0, d), dtype=DTYPES[dt])
    return torch.frombuffer(memoryview(data)[lo : lo + (stop - start) * width], dtype=DTYPES[dt]).reshape(
        stop - start, d
    )


def mix_seed(*xs: int) -> int:
    """A 63-bit seed from small integers (seed, epoch, rank): neighbouring tuples give unrelated streams."""
    # SeedSequence spreads nearby seeds into unrelated streams; plain sums or xors would collide.
    return int(np.random.SeedSequence([int(x) & 0xFFFFFFFF for x in xs]).generate_state(1, np.uint64)[0] >> 1)


def shuffle_blocks(blocks: Iterable[torch.Tensor], buffer: int, seed: int) -> Iterator[torch.Tensor]:
    """Rows of ``blocks`` in shuffled order: a buffer of at least ``buffer`` rows is permuted, all but half a
    buffer emitted and the rest carried into the next blocks (``buffer`` 0: blocks as they come)."""
    if not buffer:
        yield from blocks
        return
    g = torch.Generator().manual_seed(seed)
    keep = max(1, buffer // 2)
    parts: list[torch.Tensor] = []
    held = 0
    for t in blocks:
        # Blocks are joined once per emission, not once per block: no quadratic copying of a big buffer.
        parts.append(t)
        held += len(t)
        if held >= buffer:
            buf = torch.cat(parts) if len(parts) > 1 else parts[0]
            buf = buf[torch.randperm(len(buf), generator=g)]
            yield buf[: len(buf) - keep]
            parts, held = [buf[len(buf) - keep :]], keep
    if held:
        buf = torch.cat(parts) if len(parts) > 1 else parts[0]
        yield buf[torch.randperm(len(buf), generator=g)]


def _conform(table: pa.Table, schema: pa.Schema, exclude: list[str]) -> pa.Table:
    """Give a shard's index table every column of ``schema`` (nulls where absent), in schema order."""
    cols = []
    for field in schema:
        if field.name in exclude:
            continue
        if field.name in table.column_names:
            cols.append(table.column(field.name).cast(field.type))
        else:
            cols.append(pa.nulls(table.num_rows, field.type))
    return pa.table(cols, schema=pa.schema([f for f in schema if f.name not in exclude]))


def _arrow_file(path: str, table: pa.Table) -> str:
    with pa.OSFile(path, "wb") as sink, pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    return path
