"""Atomic files and folders (arcscope.files): the helpers, and real writers killed with SIGKILL mid-write."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import fsspec
import pytest
from fsspec.implementations.dirfs import DirFileSystem
from fsspec.implementations.local import LocalFileSystem

from arcscope.errors import ArcscopeError
from arcscope.files import (
    TMP_MARK,
    atomic_open,
    atomic_path,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    replace_dir,
)


def _names(folder: Path) -> list[str]:
    return sorted(os.listdir(folder))


# ---- the helpers on local paths ---------------------------------------------------------------------------


def test_write_bytes_text_json_replace_whole_files(tmp_path):
    p = tmp_path / "f.bin"
    atomic_write_bytes(p, b"old content, longer than the new one")
    atomic_write_bytes(str(p), memoryview(b"new"))
    assert p.read_bytes() == b"new"
    t = tmp_path / "t.txt"
    atomic_write_text(t, "h\u00e9\n\ud800", errors="replace")
    assert t.read_bytes() == "h\u00e9\n?".encode()
    j = tmp_path / "j.json"
    atomic_write_json(j, {"b": [1, 2], "a": None}, indent=2, newline=True)
    assert j.read_text() == json.dumps({"b": [1, 2], "a": None}, indent=2) + "\n"
    atomic_write_json(j, {"x": 1}, separators=(",", ":"))
    assert j.read_bytes() == b'{"x":1}'
    assert _names(tmp_path) == ["f.bin", "j.json", "t.txt"]


def test_atomic_open_commits_on_success_only(tmp_path):
    p = tmp_path / "out.jsonl"
    p.write_text("old\n")
    with atomic_open(p, "w") as f:
        f.write("line 1\n")
        assert p.read_text() == "old\n"  # not visible before the block ends
        assert Path(f.name).parent == tmp_path and TMP_MARK in Path(f.name).name
    assert p.read_text() == "line 1\n"
    with pytest.raises(RuntimeError), atomic_open(p, "wb") as f:
        f.write(b"half")
        raise RuntimeError("writer failed")
    assert p.read_text() == "line 1\n"
    assert _names(tmp_path) == ["out.jsonl"]
    with pytest.raises(ValueError, match="mode"), atomic_open(p, "a"):
        pass


def test_atomic_path_gives_umask_mode_to_files_a_library_made_private(tmp_path):
    p = tmp_path / "w.safetensors"
    with atomic_path(p) as tmp:
        # safetensors and mkstemp create 0600 files; the output should look like any other file
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT, 0o600)
        os.write(fd, b"weights")
        os.close(fd)
    mask = os.umask(0o022)
    os.umask(mask)
    assert stat.S_IMODE(p.stat().st_mode) == 0o666 & ~mask
    with pytest.raises(KeyError), atomic_path(p) as tmp:
        tmp.write_bytes(b"partial")
        raise KeyError("x")
    assert p.read_bytes() == b"weights"
    assert _names(tmp_path) == ["w.safetensors"]


def test_missing_folder_is_an_error_and_leaves_nothing(tmp_path):
    with pytest.raises(FileNotFoundError):
        atomic_write_text(tmp_path / "nope" / "f.txt", "x")
    assert _names(tmp_path) == []


# ---- fsspec targets ---------------------------------------------------------------------------------------


def test_memory_urls():
    fs = fsspec.filesystem("memory")
    atomic_write_json("memory://arcscope-files/a/p.json", {"v": 1})
    assert json.loads(fs.cat_file("/arcscope-files/a/p.json")) == {"v": 1}
    with atomic_open("memory://arcscope-files/a/s.jsonl", "w") as f:
        f.write("one\n")
        assert not fs.exists("/arcscope-files/a/s.jsonl")
        staging = Path(f.name)  # a local file, uploaded in one piece on success
    assert not staging.exists()
    assert fs.cat_file("/arcscope-files/a/s.jsonl") == b"one\n"
    with pytest.raises(OSError), atomic_open("memory://arcscope-files/a/s.jsonl", "w") as f:
        f.write("two\n")
        raise OSError("disk gone")
    assert fs.cat_file("/arcscope-files/a/s.jsonl") == b"one\n"
    atomic_write_text("s.txt", "via fs", fs=fs)
    assert fs.cat_file("/s.txt") == b"via fs"
    assert sorted(fs.ls("/arcscope-files/a", detail=False)) == [
        "/arcscope-files/a/p.json",
        "/arcscope-files/a/s.jsonl",
    ]
    fs.rm("/arcscope-files", recursive=True)
    fs.rm_file("/s.txt")


def test_file_systems_without_whole_object_uploads_go_through_a_temp_name(tmp_path):
    # DirFileSystem ("dir") is not an object store: the helper uploads to a hidden name and renames it.
    fs = DirFileSystem(path=str(tmp_path), fs=LocalFileSystem())
    (tmp_path / "sub").mkdir()
    atomic_write_text("sub/r.txt", "first", fs=fs)
    with atomic_open("sub/r.txt", "w", fs=fs) as f:
        f.write("second")
    assert (tmp_path / "sub" / "r.txt").read_text() == "second"
    assert _names(tmp_path / "sub") == ["r.txt"]


def test_file_urls_are_local(tmp_path):
    atomic_write_text(f"file://{tmp_path}/u.txt", "local")
    assert (tmp_path / "u.txt").read_text() == "local"


# ---- folders ----------------------------------------------------------------------------------------------


def test_replace_dir_creates_replaces_and_keeps_the_old_on_error(tmp_path):
    out = tmp_path / "ds"
    with replace_dir(out) as tmp:
        assert tmp.parent == tmp_path and tmp.is_dir() and not out.exists()
        (tmp / "a.txt").write_text("1")
    assert _names(out) == ["a.txt"]
    with replace_dir(out) as tmp:
        (tmp / "b.txt").write_text("2")
        assert _names(out) == ["a.txt"]
    assert _names(out) == ["b.txt"]
    with pytest.raises(ZeroDivisionError), replace_dir(out) as tmp:
        (tmp / "c.txt").write_text("3")
        raise ZeroDivisionError
    assert _names(out) == ["b.txt"]
    assert _names(tmp_path) == ["ds"]  # no temporary or old sibling left


def test_replace_dir_without_an_atomic_swap_falls_back_to_two_renames(tmp_path, monkeypatch):
    import arcscope.files as files

    monkeypatch.setattr(files, "_exchange", lambda a, b: False)
    out = tmp_path / "ds"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with replace_dir(out) as tmp:
        (tmp / "new.txt").write_text("new")
    assert _names(out) == ["new.txt"]
    assert _names(tmp_path) == ["ds"]


def test_replace_dir_needs_a_local_folder():
    with pytest.raises(ArcscopeError, match="local disk"):
        replace_dir("memory://arcscope-files/folder")


# ---- real writers killed mid-write ------------------------------------------------------------------------

# The child writes version 0 of a target, prints "wrote 0", then writes version 1 through an open() slowed
# to 512-byte chunks; after 20 chunks (flushed, so a torn file would be on disk) it prints "mid" and waits,
# and the test kills it there with SIGKILL. The target must still be the whole of version 0, and anything
# the killed writer left behind must sit under a hidden temporary name.
PRELUDE = """
import builtins, io, itertools, sys, time
from pathlib import Path
import numpy as np
out = Path(sys.argv[1])
_open = builtins.open
armed = {"on": False, "chunks": 0}

class Slow:
    def __init__(self, f):
        self._f = f
    def write(self, data):
        n = 0
        for i in range(0, len(data), 512):
            n += self._f.write(data[i : i + 512])
            if armed["on"]:
                armed["chunks"] += 1
                if armed["chunks"] == 20:
                    self._f.flush()
                    print("mid", flush=True)
                    time.sleep(120)
        return n
    def __getattr__(self, name):
        return getattr(self._f, name)
    def __enter__(self):
        return self
    def __exit__(self, *exc):
        return self._f.__exit__(*exc)

def slow_open(file, mode="r", *args, **kwargs):
    f = _open(file, mode, *args, **kwargs)
    writing = any(c in mode for c in "wax") and not isinstance(file, int)
    return Slow(f) if writing and str(Path(file).resolve()).startswith(str(out.resolve())) else f

builtins.open = io.open = slow_open

def tasks(version, n):
    from arcscope.tasks import Pair, Task
    rng = np.random.default_rng(version)
    grid = lambda: rng.integers(0, 10, size=(30, 30)).astype(np.uint8)
    return [Task(f"v{version}-{i}", (Pair(grid(), grid()),), (Pair(grid(), grid()),)) for i in range(n)]

def old_then_new(write):
    write(0)
    print("wrote 0", flush=True)
    armed["on"] = True
    write(1)
    print("wrote 1", flush=True)
"""


def _kill_at(tmp_path: Path, body: str, signal_line: str = "mid") -> Path:
    """Run the child until it prints ``signal_line``, SIGKILL it there, and return its output folder."""
    out = tmp_path / "out"
    out.mkdir()
    script = PRELUDE + textwrap.dedent(body)
    proc = subprocess.Popen(
        [sys.executable, "-c", script, str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        while (line := proc.stdout.readline()) and line.strip() != signal_line:
            pass
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    if not line:
        pytest.fail(f"the writer never printed {signal_line!r}:\n{proc.stderr.read()}")
    assert proc.returncode == -signal.SIGKILL
    return out


def _visible(folder: Path) -> list[str]:
    """The names a reader sees; any leftover must be a hidden temporary name."""
    names = _names(folder)
    assert all(TMP_MARK in n for n in names if n.startswith(".")), names
    return [n for n in names if not n.startswith(".")]


def _ids(version: int, n: int) -> list[str]:
    return sorted(f"v{version}-{i}" for i in range(n))


def test_tasks_jsonl_writer_killed_mid_write_leaves_the_old_file(tmp_path):
    out = _kill_at(
        tmp_path,
        """
        from arcscope.tasks import save
        old_then_new(lambda v: save(tasks(v, 40), f"jsonl:{out}/t.jsonl", overwrite=True))
        """,
    )
    from arcscope.tasks import load

    assert _visible(out) == ["t.jsonl"]
    assert sorted(t.id for t in load(f"jsonl:{out}/t.jsonl")) == _ids(0, 40)
    assert [n for n in _names(out) if n.startswith(".t.jsonl")], "the kill should have hit the temporary file"


def test_tasks_dir_writer_killed_mid_write_leaves_the_old_folder(tmp_path):
    out = _kill_at(
        tmp_path,
        """
        from arcscope.tasks import save
        old_then_new(lambda v: save(tasks(v, 30 + 10 * v), f"dir:{out}/ds", overwrite=True))
        """,
    )
    from arcscope.tasks import load

    assert _visible(out) == ["ds"]
    assert sorted(t.id for t in load(f"dir:{out}/ds")) == _ids(0, 30)


def test_submission_writer_killed_mid_write_leaves_the_old_file(tmp_path):
    out = _kill_at(
        tmp_path,
        """
        from arcscope.tasks import write_submission
        def write(v):
            preds = {t.id: [[t.train[0].input, t.train[0].output]] for t in tasks(v, 50)}
            write_submission(out / "submission.json", preds)
        old_then_new(write)
        """,
    )
    from arcscope.tasks import read_submission

    assert _visible(out) == ["submission.json"]
    assert sorted(read_submission(out / "submission.json")) == _ids(0, 50)


def test_sae_save_killed_mid_write_leaves_whole_files(tmp_path):
    out = _kill_at(
        tmp_path,
        """
        import torch
        from safetensors.torch import save
        import arcscope.sae.io as sae_io
        from arcscope.sae.model import SAEConfig, SparseAutoencoder

        def slow_save_file(tensors, filename, metadata=None):
            with open(filename, "wb") as f:  # the same bytes, through the slowed open()
                f.write(save(tensors, metadata=metadata))

        sae_io.save_file = slow_save_file
        def write(v):
            sae = SparseAutoencoder(SAEConfig(d_in=16, d_sae=64 * (v + 1), arch="topk", k=4))
            with torch.no_grad():
                sae.W_dec.fill_(float(v))
            sae_io.save_sae(sae, out / "sae")
        old_then_new(write)
        """,
    )
    from safetensors.torch import load_file

    from arcscope.sae.io import CFG_FILE, WEIGHTS_FILE

    folder = out / "sae"
    assert _visible(folder) == sorted([CFG_FILE, WEIGHTS_FILE])
    w = load_file(str(folder / WEIGHTS_FILE))["W_dec"]  # a torn file would not load
    assert w.shape == (64, 16) and float(w.abs().max()) == 0.0
    assert json.loads((folder / CFG_FILE).read_text())["d_sae"] == 64


def test_tasks_jsonl_writer_killed_at_an_arbitrary_moment_in_a_loop(tmp_path):
    # No slowing here: the kill lands wherever the loop is (encoding, writing, fsync, rename).
    out = _kill_at(
        tmp_path,
        """
        from arcscope.tasks import save
        versions = [tasks(0, 150), tasks(1, 120)]
        for i in itertools.count():
            save(versions[i % 2], f"jsonl:{out}/t.jsonl", overwrite=True)
            print(i, flush=True)
        """,
        signal_line="3",
    )
    from arcscope.tasks import load

    assert _visible(out) == ["t.jsonl"]
    assert sorted(t.id for t in load(f"jsonl:{out}/t.jsonl")) in (_ids(0, 150), _ids(1, 120))
