"""Where a store lives: a local folder or any fsspec URL, with atomic writes and errors that name the URL."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

from arcscope.errors import StoreError
from arcscope.files import TMP_MARK as TMP_MARK  # re-exported: the store names its leftovers with it
from arcscope.files import atomic_open, atomic_write_bytes

MANIFEST = "manifest.json"
SHARDS = "shards"
INDEX = "index"
_CHUNK = 8 << 20
_OVERLAP = 4 << 20  # files at least this big are hashed on a second thread while being written


def describe(e: BaseException) -> str:
    """A short human reason for an I/O failure (ENOSPC, permission, unreachable endpoint...)."""
    if isinstance(e, OSError) and e.errno == errno.ENOSPC:
        return "no space left on device (ENOSPC)"
    if isinstance(e, PermissionError):
        return f"permission denied ({e})"
    if isinstance(e, FileNotFoundError):
        return f"not found ({e})"
    text = str(e) or type(e).__name__
    return f"{type(e).__name__}: {text}"


@contextlib.contextmanager
def io_errors(url: str, action: str) -> Iterator[None]:
    """Turn any failure of the storage layer into a StoreError naming the URL, the action and the cause."""
    try:
        yield
    except StoreError:
        raise
    except Exception as e:  # botocore, aiohttp, gcsfs... raise their own types, not only OSError
        raise StoreError(f"{url}: could not {action}: {describe(e)}") from e


class Location:
    """A store folder: the filesystem, the root path inside it, and the URL as the user wrote it."""

    def __init__(self, url: str | os.PathLike, storage_options: dict[str, Any] | None = None):
        self.url = os.fspath(url)
        self.storage_options = dict(storage_options or {})
        try:
            self._fs, root = fsspec.core.url_to_fs(self.url, **self.storage_options)
        except (ImportError, ValueError, TypeError) as e:
            raise StoreError(f"{self.url}: cannot open this URL: {e}") from e
        self._pid = os.getpid()
        self.root = root.rstrip("/") or root
        # Local folders get os-level atomic renames, fsync and memory-mapped reads.
        self.local = isinstance(self._fs, LocalFileSystem)

    @property
    def fs(self) -> fsspec.AbstractFileSystem:
        """The fsspec filesystem, made anew in a forked child (DataLoader workers): async ones are not fork-safe."""
        if self._pid != os.getpid():
            # fsspec's instance cache is per process, so this builds a fresh client in the child.
            self._fs = fsspec.core.url_to_fs(self.url, **self.storage_options)[0]
            self._pid = os.getpid()
        return self._fs

    def path(self, rel: str) -> str:
        """The full path of a file given relative to the store root."""
        return f"{self.root}/{rel}" if rel else self.root

    # ---- reading -------------------------------------------------------------------------------------

    def read_bytes(self, rel: str, start: int | None = None, end: int | None = None) -> bytes:
        """Bytes of a file (or the range [start, end)); FileNotFoundError passes through."""
        path = self.path(rel)
        if self.local:
            with open(path, "rb") as f:
                if start is None:
                    return f.read()
                f.seek(start)
                return f.read((end - start) if end is not None else -1)
        return self.fs.cat_file(path, start=start, end=end)

    def read_json(self, rel: str) -> Any:
        """A JSON file, or None when it does not exist."""
        try:
            with io_errors(self.url, f"read {rel}"):
                data = self.read_bytes(rel)
        except StoreError as e:
            if isinstance(e.__cause__, FileNotFoundError):
                return None
            raise
        try:
            return json.loads(data)
        except ValueError as e:
            raise StoreError(f"{self.url}: {rel} is not valid JSON ({e}); the store is damaged") from e

    def hash_file(self, rel: str) -> tuple[int, str]:
        """Size in bytes and sha256 of a file, streamed so that big shards never sit in memory."""
        h = hashlib.sha256()
        size = 0
        opener = open(self.path(rel), "rb") if self.local else self.fs.open(self.path(rel), "rb")
        with opener as f:
            while chunk := f.read(_CHUNK):
                h.update(chunk)
                size += len(chunk)
        return size, h.hexdigest()

    def listdir(self, rel: str) -> list[str]:
        """Names (not paths) of the files directly inside a folder of the store; [] when it is absent."""
        path = self.path(rel)
        if self.local:
            try:
                return sorted(os.listdir(path))
            except (FileNotFoundError, NotADirectoryError):
                return []
        # Object store listings are cached by fsspec; another writer may have changed them since.
        self.fs.invalidate_cache(path)
        try:
            entries = self.fs.ls(path, detail=False)
        except FileNotFoundError:
            return []
        return sorted(n for n in (e.rstrip("/").rsplit("/", 1)[-1] for e in entries) if n)

    def is_file(self, rel: str = "") -> bool:
        """Whether the path is an existing file (not a folder)."""
        path = self.path(rel)
        if self.local:
            return os.path.isfile(path)
        try:
            return self.fs.isfile(path)
        except FileNotFoundError:
            return False

    # ---- writing -------------------------------------------------------------------------------------

    def makedirs(self, rel: str) -> None:
        """Create a folder where the filesystem has folders (object stores have only keys)."""
        if self.local:
            os.makedirs(self.path(rel), exist_ok=True)

    def write_atomic(
        self, rel: str, pieces: list[bytes | memoryview], *, fsync: bool = True
    ) -> tuple[int, str]:
        """Write the concatenated pieces as one file, atomically; returns its size and sha256.

        Readers see either the old content or the new, never a part. Hashing piece by piece while writing
        means a shard is never assembled into one big buffer on local disks.
        """
        h = hashlib.sha256()
        size = 0
        path = self.path(rel)
        if self.local:
            with atomic_open(path, "wb", fsync=fsync) as f:
                if sum(memoryview(p).nbytes for p in pieces) >= _OVERLAP:
                    # hashlib and write() both release the GIL: hash on a helper thread while writing.
                    with ThreadPoolExecutor(1, thread_name_prefix="arcscope-sha256") as pool:
                        done = pool.submit(_hash_into, h, pieces)
                        size = sum(f.write(piece) for piece in pieces)
                        done.result()
                else:
                    for piece in pieces:
                        h.update(piece)
                        size += f.write(piece)
        else:
            data = b"".join(pieces)
            h.update(data)
            size = len(data)
            atomic_write_bytes(path, data, fs=self.fs)
        return size, h.hexdigest()

    def remove(self, rels: list[str]) -> None:
        """Delete files; files already gone are fine. Object stores get one bulk request."""
        paths = [self.path(r) for r in rels]
        if not paths:
            return
        if self.local:
            for p in paths:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(p)
            return
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm(paths)
        self.fs.invalidate_cache(self.root)


def _hash_into(h: Any, pieces: list[bytes | memoryview]) -> None:
    for piece in pieces:
        h.update(piece)
