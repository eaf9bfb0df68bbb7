"""Atomic files and folders: fill a hidden sibling, then rename it over the target.

A reader (or a run killed halfway) finds the old file or the new one, never a part. Local paths get
``os.replace`` plus fsync of the file and its folder; fsspec URLs get one whole-object upload on object
stores and a temporary name plus ``mv`` elsewhere. This is the one copy of the mechanism: every arcscope
writer uses it.

    atomic_write_bytes(path, data)        atomic_write_text(path, text)      atomic_write_json(path, obj)
    with atomic_open(path, "w") as f:     a file on a temporary name, renamed into place on success
    with atomic_path(path) as tmp:        a temporary path for libraries that write by file name
    with replace_dir(path) as tmp:        a temporary folder that takes the place of the folder ``path``
    save_tensor_file / load_tensor_file   one safetensors file with a JSON header (format-versioned)
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import json
import os
import re
import shutil
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

from arcscope.errors import ArcscopeError

TMP_MARK = ".tmp-"
"""Part of every temporary name (``.NAME.tmp-XXXXXXXXXXXX``), so leftovers of a killed writer can be found."""
OLD_MARK = ".old-"

# One upload replaces an object whole on these (multipart uploads appear only when completed), so a
# temporary object plus a server-side copy would add requests without adding atomicity.
_WHOLE_OBJECT = frozenset({"s3", "s3a", "gs", "gcs", "gcsfs", "az", "abfs", "abfss", "memory"})

PathArg = str | os.PathLike[str]


def temp_name(name: str, mark: str = TMP_MARK) -> str:
    """A fresh hidden sibling name for ``name`` (unique per call, so concurrent writers never collide)."""
    return f".{name}{mark}{uuid.uuid4().hex[:12]}"


def is_leftover(name: str, of: str | None = None) -> bool:
    """Whether ``name`` is a temporary or replaced name a writer makes (of the file named ``of``, if given)."""
    if of is None:
        return name.startswith(".") and (TMP_MARK in name or OLD_MARK in name)
    marks = "|".join(re.escape(m) for m in (TMP_MARK, OLD_MARK))
    return re.fullmatch(re.escape(f".{of}") + f"(?:{marks})[0-9a-f]+", name) is not None


def hold(path: PathArg) -> int | None:
    """Create ``path`` and lock it while this process lives (the lock dies with it); the fd, or None.

    :func:`remove_leftovers` leaves a held file alone, so a live writer's temporary file survives another
    run's clean-up while a killed writer's does not.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o666)
    try:
        import fcntl

        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except (ImportError, OSError):
        pass  # no flock here: the file is still written and renamed, only unprotected from a concurrent start
    return fd


def _held(path: str) -> bool:
    try:
        import fcntl
    except ImportError:  # no flock: a leftover cannot be told from a live file, treat it as stale
        return False
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False  # a file system without flock
    finally:
        os.close(fd)
    return False


def remove_leftovers(folder: PathArg, *, of: str | None = None) -> list[Path]:
    """Remove what killed writers left in ``folder``: temporary and replaced names (only ``of``'s, if given).

    Nothing else is touched: a user's file never matches the ``.NAME.tmp-<hex>`` pattern, and a file a live
    writer holds (:func:`hold`) is kept. Returns what was removed.
    """
    try:
        entries = [e for e in os.scandir(folder) if is_leftover(e.name, of)]
    except (FileNotFoundError, NotADirectoryError):
        return []
    removed = []
    for e in entries:
        if not e.is_dir(follow_symlinks=False) and _held(e.path):
            continue  # another run writing the same output right now
        _remove(Path(e.path))
        removed.append(Path(e.path))
    return removed


def _target(
    path: PathArg, storage_options: dict[str, Any] | None, fs: fsspec.AbstractFileSystem | None
) -> tuple[fsspec.AbstractFileSystem | None, str]:
    """(None, OS path) for a local file, else (filesystem, path inside it)."""
    text = os.fspath(path)
    if fs is None:
        if fsspec.core.split_protocol(text)[0] is None:
            return None, text
        try:
            fs, text = fsspec.core.url_to_fs(text, **(storage_options or {}))
        except (ImportError, ValueError, TypeError) as e:
            raise ArcscopeError(f"{path}: cannot open this URL: {e}") from e
    return (None, text) if isinstance(fs, LocalFileSystem) else (fs, text)


def _file_mode() -> int:
    # What a plain open() gives. Libraries that write through their own temp file (safetensors) leave 0600.
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o077)  # briefly the strict mask, never a looser one, for other threads
    os.umask(mask)
    return 0o666 & ~mask


def _fsync(path: str | Path, *, folder: bool = False) -> None:
    # Any descriptor of a file flushes all of its data; folders need this for renames to reach the disk.
    try:
        fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if folder and hasattr(os, "O_DIRECTORY") else 0))
    except OSError:
        if not folder:
            raise
        return  # some systems cannot open folders; the rename is still atomic there
    try:
        os.fsync(fd)
    except OSError:
        if not folder:
            raise
    finally:
        os.close(fd)


def _upload(
    fs: fsspec.AbstractFileSystem, path: str, *, data: bytes | None = None, local: Path | None = None
) -> None:
    protocols = {fs.protocol} if isinstance(fs.protocol, str) else set(fs.protocol)
    dest = path
    if not protocols & _WHOLE_OBJECT:
        folder, _, name = path.rpartition("/")
        dest = f"{folder}/{temp_name(name)}" if folder else temp_name(name)
    try:
        if data is not None:
            fs.pipe_file(dest, data)
        else:
            fs.put_file(os.fspath(local), dest)
        if dest != path:
            fs.mv(dest, path)
    except BaseException:
        if dest != path:
            with contextlib.suppress(Exception):
                fs.rm_file(dest)
        raise


class _Staged:
    """A result built under a temporary name: ``with`` commits it on success and aborts it on error."""

    tmp: Path

    def commit(self) -> object:  # pragma: no cover - every subclass defines it
        raise NotImplementedError

    def abort(self) -> None:  # pragma: no cover - every subclass defines it
        raise NotImplementedError

    def __enter__(self) -> Path:
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()


class AtomicFile(_Staged):
    """A temporary path ``tmp`` that becomes ``path`` on :meth:`commit`; a ``with`` block commits on success.

    Local targets get a hidden sibling in the same folder (a rename across file systems is not atomic);
    fsspec targets get a local temporary file that is uploaded on commit.
    """

    def __init__(
        self,
        path: PathArg,
        *,
        storage_options: dict[str, Any] | None = None,
        fs: fsspec.AbstractFileSystem | None = None,
        fsync: bool = True,
    ):
        self._fs, self.path = _target(path, storage_options, fs)
        self.fsync = fsync
        if self._fs is None:
            folder, name = os.path.split(self.path)
            self.tmp = Path(folder, temp_name(name))
        else:
            fd, tmp = tempfile.mkstemp(prefix="arcscope-", suffix=TMP_MARK.rstrip("-"))
            os.close(fd)
            self.tmp = Path(tmp)

    def commit(self) -> None:
        """Put the filled temporary file in place of the target (fsynced where the file system has it)."""
        try:
            if self._fs is not None:
                _upload(self._fs, self.path, local=self.tmp)
                return
            mode = _file_mode()
            if os.stat(self.tmp).st_mode & 0o777 != mode:
                os.chmod(self.tmp, mode)
            if self.fsync:
                _fsync(self.tmp)
            os.replace(self.tmp, self.path)
            if self.fsync:
                _fsync(os.path.dirname(self.path) or ".", folder=True)
        finally:
            self.abort()

    def abort(self) -> None:
        """Remove the temporary file; the target is left as it was."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.tmp)


def atomic_path(
    path: PathArg,
    *,
    storage_options: dict[str, Any] | None = None,
    fs: fsspec.AbstractFileSystem | None = None,
    fsync: bool = True,
) -> AtomicFile:
    """A context manager yielding a temporary path to write; it replaces ``path`` when the block succeeds."""
    return AtomicFile(path, storage_options=storage_options, fs=fs, fsync=fsync)


@contextlib.contextmanager
def atomic_open(
    path: PathArg,
    mode: str = "wb",
    *,
    encoding: str | None = None,
    errors: str | None = None,
    storage_options: dict[str, Any] | None = None,
    fs: fsspec.AbstractFileSystem | None = None,
    fsync: bool = True,
) -> Iterator[IO[Any]]:
    """Open a temporary file for writing (``"wb"`` or ``"w"``); it replaces ``path`` when the block succeeds."""
    if mode not in ("w", "wt", "wb"):
        raise ValueError(f"atomic_open writes whole files: mode must be 'w' or 'wb', not {mode!r}")
    text = "b" not in mode
    with AtomicFile(path, storage_options=storage_options, fs=fs, fsync=fsync) as tmp:
        # "w", not "x": a remote target's local temporary file already exists (mkstemp made it).
        opened = open(
            tmp, "w" if text else "wb", encoding=(encoding or "utf-8") if text else None, errors=errors
        )
        with opened as f:
            yield f


def atomic_write_bytes(
    path: PathArg,
    data: bytes | bytearray | memoryview,
    *,
    storage_options: dict[str, Any] | None = None,
    fs: fsspec.AbstractFileSystem | None = None,
    fsync: bool = True,
) -> None:
    """Write ``data`` as the whole of ``path``, atomically."""
    fs, target = _target(path, storage_options, fs)
    if fs is not None:
        _upload(fs, target, data=bytes(data))
        return
    with atomic_open(target, "wb", fsync=fsync) as f:
        f.write(data)


def atomic_write_text(
    path: PathArg,
    text: str,
    *,
    encoding: str = "utf-8",
    errors: str = "strict",
    storage_options: dict[str, Any] | None = None,
    fs: fsspec.AbstractFileSystem | None = None,
    fsync: bool = True,
) -> None:
    """Write ``text`` as the whole of ``path``, atomically (encoded as given; no newline translation)."""
    data = text.encode(encoding, errors)
    atomic_write_bytes(path, data, storage_options=storage_options, fs=fs, fsync=fsync)


def atomic_write_json(
    path: PathArg,
    obj: Any,
    *,
    indent: int | None = None,
    newline: bool = False,
    storage_options: dict[str, Any] | None = None,
    fs: fsspec.AbstractFileSystem | None = None,
    fsync: bool = True,
    **dumps: Any,
) -> None:
    """Write ``json.dumps(obj, indent=indent, **dumps)`` (plus a final newline when asked) atomically."""
    text = json.dumps(obj, indent=indent, **dumps) + ("\n" if newline else "")
    atomic_write_text(path, text, storage_options=storage_options, fs=fs, fsync=fsync)


def save_tensor_file(
    path: PathArg,
    tensors: dict[str, Any],
    key: str,
    info: dict[str, Any],
    *,
    what: str,
    error: type[Exception] = ArcscopeError,
) -> str:
    """Write ``tensors`` as one safetensors file with ``info`` as JSON under the header metadata ``key``,
    atomically; return the path. ``what`` names the object in messages, ``error`` is what they raise."""
    from safetensors.torch import save_file

    try:
        text = json.dumps(info, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise error(f"{os.fspath(path)}: the {what}'s settings are not plain JSON ({e})") from e
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt", key: text})
    return os.fspath(path)


def load_tensor_file(
    path: PathArg,
    key: str,
    version: int,
    *,
    what: str,
    error: type[Exception] = ArcscopeError,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Read a file written by :func:`save_tensor_file`: (its JSON ``info``, its tensors). Raises ``error``
    naming the file for a missing or unreadable file, no ``key`` metadata, bad JSON, or a ``format_version``
    newer than ``version``."""
    from safetensors import SafetensorError, safe_open

    where = os.fspath(path)
    if not os.path.isfile(where):
        raise error(f"{where}: no {what} file here")
    try:
        with safe_open(where, framework="pt") as f:
            meta = f.metadata() or {}
            if key not in meta:
                raise error(f"{where}: not an arcscope {what} (no {key} metadata)")
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open has no __iter__
    except SafetensorError as e:
        raise error(f"{where}: not a readable safetensors file ({e})") from e
    try:
        info = json.loads(meta[key])
        if not isinstance(info, dict):
            raise ValueError("not a JSON object")
        found = int(info.get("format_version", 0))
    except (TypeError, ValueError) as e:
        raise error(f"{where}: the {what}'s metadata is malformed ({e})") from e
    if found > version:
        raise error(
            f"{where}: {what} format v{found} is newer than this arcscope reads (v{version}); upgrade arcscope"
        )
    return info, tensors


def _exchange(a: Path, b: Path) -> bool:
    """Swap two existing paths atomically; False where the system or file system cannot."""
    fn = getattr(_libc(), "renameat2", None)
    if fn is None:
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    at_fdcwd, rename_exchange = -100, 2
    if fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EPERM):
        return False  # an old kernel, or a file system without the flag: fall back to two renames
    raise OSError(err, os.strerror(err), os.fspath(b))


@functools.cache
def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


class DirSwap(_Staged):
    """A temporary sibling folder ``tmp`` that takes the place of the local folder ``path`` on :meth:`commit`.

    A ``with`` block commits on success and drops the temporary folder on error (the old folder stays).
    On Linux the two folders swap names in one step (``renameat2(RENAME_EXCHANGE)``). Elsewhere the old
    folder is moved aside first and removed once the new one is in place; a crash between those two renames
    leaves both as hidden siblings and no ``path``, but never a mix of the two.
    """

    def __init__(self, path: PathArg, *, fsync: bool = True):
        fs, target = _target(path, None, None)
        if fs is not None:
            raise ArcscopeError(f"{path}: a folder can be replaced atomically only on a local disk")
        self.path = Path(target)
        self.fsync = fsync
        self.tmp = self.path.with_name(temp_name(self.path.name))
        # mkdir, not mkdtemp: the folder gets the user's umask like any other output, not mode 0700.
        self.tmp.mkdir()

    def commit(self) -> Path:
        """Swap the filled temporary folder in place of ``path``; return ``path``."""
        old = None
        try:
            if self.fsync:
                for root, _, names in os.walk(self.tmp):
                    for name in names:
                        if not os.path.islink(p := os.path.join(root, name)):
                            _fsync(p)
                    _fsync(root, folder=True)
            if not (self.path.exists() or self.path.is_symlink()):
                os.replace(self.tmp, self.path)
            elif not _exchange(self.tmp, self.path):
                old = self.path.with_name(temp_name(self.path.name, OLD_MARK))
                os.replace(self.path, old)
                try:
                    os.replace(self.tmp, self.path)
                except BaseException:
                    os.replace(old, self.path)  # put the old folder back
                    old = None
                    raise
            if self.fsync:
                _fsync(self.path.parent, folder=True)
        finally:
            self.abort()  # after an exchange the temporary name holds the old folder
        if old is not None:
            _remove(old)
        return self.path

    def abort(self) -> None:
        """Remove the temporary folder; ``path`` is left as it was."""
        _remove(self.tmp)


def replace_dir(path: PathArg, *, fsync: bool = True) -> DirSwap:
    """A context manager yielding an empty temporary folder to fill; it replaces the folder ``path`` on success."""
    return DirSwap(path, fsync=fsync)


__all__ = [
    "OLD_MARK",
    "TMP_MARK",
    "AtomicFile",
    "DirSwap",
    "atomic_open",
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "hold",
    "is_leftover",
    "load_tensor_file",
    "remove_leftovers",
    "replace_dir",
    "save_tensor_file",
    "temp_name",
]
