"""The activation store: one suite run against a local folder, a real S3 endpoint (moto) and memory://."""

from __future__ import annotations

import errno
import json
import uuid
from dataclasses import dataclass

import fsspec
import numpy as np
import pyarrow as pa
import pytest
import torch
from typer.testing import CliRunner

from arcscope.errors import StoreError
from arcscope.store import REQUIRED, StoreWriter, open_store, verify
from arcscope.store.fs import Location
from tests.conftest import BUCKET
from tests.conftest import s3_options as _s3_options

HOOKS = ("blocks.0.hook_resid_post", "blocks.1.hook_resid_post", "blocks.1.attn.hook_z")


# ---- where the store lives --------------------------------------------------------------------------------


@dataclass
class Where:
    """A store location for the test: URL plus fsspec storage options."""

    url: str
    opts: dict | None
    kind: str

    @property
    def fs(self):
        fs, _ = fsspec.core.url_to_fs(self.url, **(self.opts or {}))
        return fs

    def path(self, rel: str) -> str:
        return f"{Location(self.url, self.opts).root}/{rel}"

    def ls(self, rel: str) -> list[str]:
        return Location(self.url, self.opts).listdir(rel)

    def writer(self, **kw) -> StoreWriter:
        return StoreWriter(self.url, storage_options=self.opts, **kw)

    def open(self):
        return open_store(self.url, self.opts)


@pytest.fixture(params=["local", "s3", "memory"])
def where(request, tmp_path) -> Where:
    """The same tests for a local folder, s3:// against moto, and memory://."""
    if request.param == "local":
        return Where(str(tmp_path / "store"), None, "local")
    if request.param == "memory":
        return Where(f"memory://arcscope-{uuid.uuid4().hex}/store", None, "memory")
    endpoint = request.getfixturevalue("s3_endpoint")
    return Where(f"s3://{BUCKET}/{uuid.uuid4().hex}/store", _s3_options(endpoint), "s3")


# ---- data -------------------------------------------------------------------------------------------------

ROLES = ["train_input", "train_output", "test_input", "answer", "generated", "none"]


def make_index(n: int, start: int = 0, task: str | None = None) -> dict:
    """Index columns for rows start..start+n; `position` carries the global row number for checks."""
    pos = np.arange(start, start + n)
    return {
        "task_id": [task or f"task{p // 10}" for p in pos],
        "augmentation": ["identity" if p % 2 else "rot90" for p in pos],
        "pair": pos % 3,
        "role": [ROLES[p % len(ROLES)] for p in pos],
        "row": np.where(pos % 4 == 0, -1, pos % 7),
        "col": np.where(pos % 4 == 0, -1, pos % 5),
        "token_id": pos * 7 + 1,
        "position": pos,
        "sample": pos // 10,
        "test_index": (pos % 2).astype(np.int16),
    }


def make_acts(n: int, start: int = 0) -> dict[str, torch.Tensor]:
    """Activations whose first column is the global row number (to track rows through shuffles)."""
    g = torch.Generator().manual_seed(1000 + start)
    a = torch.randn(n, 16, generator=g)
    a[:, 0] = torch.arange(start, start + n, dtype=torch.float32)
    b = torch.randn(n, 8, generator=g).to(torch.bfloat16)
    c = torch.randn(n, 4, generator=g).to(torch.float16)
    return {HOOKS[0]: a, HOOKS[1]: b, HOOKS[2]: c}


def write_batches(w: StoreWriter, sizes: list[int], start: int = 0, first_batch: int = 0) -> int:
    """Add one batch per size and commit after each, as the engine does; returns the next row number."""
    for i, n in enumerate(sizes):
        w.add(make_acts(n, start), make_index(n, start))
        start += n
        w.commit({"done": list(range(first_batch + i + 1))})
    return start


def concat_expected(sizes: list[int]) -> dict[str, torch.Tensor]:
    parts, start = [], 0
    for n in sizes:
        parts.append(make_acts(n, start))
        start += n
    return {h: torch.cat([p[h] for p in parts]) for h in HOOKS}


# ---- writing and reading ----------------------------------------------------------------------------------


def test_round_trip_bit_exact_across_shards(where):
    meta = {"model": {"name": "tiny", "sha256": "ab"}, "capture": {"hooks": list(HOOKS)}, "tokenizer": "tok"}
    sizes = [5, 11, 14]
    with where.writer(shard_rows=7, meta=meta) as w:
        write_batches(w, sizes)
    s = where.open()
    expected = concat_expected(sizes)
    assert s.n_rows == 30 and len(s) == 30
    # Every commit flushes its partial shard: 5 | 7 4 | 7 7
    assert [x.rows for x in s.shards] == [5, 7, 4, 7, 7]
    assert [x.id for x in s.shards] == [0, 1, 2, 3, 4]
    assert s.hooks == {HOOKS[0]: (16, "float32"), HOOKS[1]: (8, "bfloat16"), HOOKS[2]: (4, "float16")}
    assert s.complete and s.progress == {"done": [0, 1, 2]}
    assert s.meta["model"] == meta["model"] and s.meta["tokenizer"] == "tok"
    for h in HOOKS:
        got = s.read(h)
        assert got.dtype == expected[h].dtype
        assert torch.equal(got.view(torch.uint8), expected[h].view(torch.uint8))  # bit-exact
    assert torch.equal(s.read(HOOKS[1], shard=3), expected[HOOKS[1]][16:23])
    assert torch.equal(s.read(HOOKS[0], shard=1, rows=[6, 0]), expected[HOOKS[0]][[11, 5]])
    rows = [29, 0, 12, 5, 6, 12]
    assert torch.equal(s.read(HOOKS[1], rows=rows), expected[HOOKS[1]][rows])
    manifest = s.manifest
    assert manifest["format_version"] == 1 and manifest["n_rows"] == 30
    assert manifest["hooks"][HOOKS[1]] == {"d": 8, "dtype": "bfloat16"}
    assert all(len(x["sha256"]) == 64 and len(x["index_sha256"]) == 64 for x in manifest["shards"])
    assert sorted(where.ls("shards")) == [f"{i:05d}.safetensors" for i in range(5)]
    assert sorted(where.ls("index")) == [f"{i:05d}.parquet" for i in range(5)]


def test_index_and_query(where):
    with where.writer(shard_rows=8) as w:
        write_batches(w, [12, 9])
    s = where.open()
    index = s.index()
    assert index.num_rows == 21
    types = {f.name: f.type for f in index.schema}
    assert types["pair"] == pa.int16() and types["row"] == pa.int8() and types["col"] == pa.int8()
    assert (
        types["token_id"] == pa.int32() and types["position"] == pa.int32() and types["sample"] == pa.int64()
    )
    assert types["test_index"] == pa.int16()  # extra columns are kept as given
    assert index.column("shard").to_pylist()[:9] == [0] * 8 + [1]
    assert index.column("row_in_shard").to_pylist()[8:13] == [0, 1, 2, 3, 0]
    assert s.index(columns=["role"]).column_names == ["role", "shard", "row_in_shard"]

    acts, table = s.query(HOOKS[0], task_id="task1", role=["test_input", "answer"])
    want = [p for p in range(21) if p // 10 == 1 and ROLES[p % 6] in ("test_input", "answer")]
    assert table.column("position").to_pylist() == want
    assert acts[:, 0].tolist() == [float(p) for p in want]
    assert torch.equal(acts, concat_expected([12, 9])[HOOKS[0]][want])
    none, empty = s.query(HOOKS[2], task_id="nope")
    assert none.shape == (0, 4) and empty.num_rows == 0
    with pytest.raises(StoreError, match="cannot filter on 'colour'"):
        s.query(HOOKS[0], colour=3)
    with pytest.raises(StoreError, match="no hook"):
        s.read("blocks.9.hook_resid_post")


def test_iter_batches(where):
    with where.writer(shard_rows=6) as w:
        write_batches(w, [10, 7])
    s = where.open()
    batches = list(s.iter_batches(HOOKS[1], 4))
    assert [len(b) for b in batches] == [4, 4, 4, 4, 1]
    assert torch.equal(torch.cat(batches), s.read(HOOKS[1]))
    with_index = list(s.iter_batches(HOOKS[0], 5, with_index=True))
    for t, table in with_index:
        assert t[:, 0].tolist() == [float(p) for p in table.column("position").to_pylist()]


def test_shuffle_dataset_every_row_once_and_seeded(where):
    with where.writer(shard_rows=9) as w:
        write_batches(w, [20, 23])
    s = where.open()

    def order(ds) -> list[int]:
        return [int(r[0]) for r in ds]

    ds = s.dataset(HOOKS[0], shuffle_buffer=10, seed=3)
    first = order(ds)
    assert sorted(first) == list(range(43))
    assert first != list(range(43))
    assert order(s.dataset(HOOKS[0], shuffle_buffer=10, seed=3)) == first
    assert order(s.dataset(HOOKS[0], shuffle_buffer=10, seed=4)) != first
    ds.set_epoch(1)
    second = order(ds)
    assert sorted(second) == list(range(43)) and second != first
    assert order(s.dataset(HOOKS[0], shuffle_buffer=0)) == list(range(43))

    batches = list(s.dataset(HOOKS[0], shuffle_buffer=10, seed=3, batch_size=8))
    assert [len(b) for b in batches] == [8] * 5 + [3]
    assert [int(r[0]) for b in batches for r in b] == first
    ranks = [order(s.dataset(HOOKS[0], shuffle_buffer=10, seed=3, rank=r, world_size=2)) for r in (0, 1)]
    assert sorted(ranks[0] + ranks[1]) == list(range(43)) and ranks[0] and ranks[1]


def test_dataloader_workers_split_shards(where):
    with where.writer(shard_rows=5) as w:
        write_batches(w, [17, 8])
    s = where.open()
    s.read(HOOKS[0])  # use the filesystem before the fork: workers must not reuse its client
    ds = s.dataset(HOOKS[0], shuffle_buffer=6, seed=0, batch_size=4)
    loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=2)
    rows = [int(x) for b in loader for x in b[:, 0]]
    assert sorted(rows) == list(range(25))
    assert [int(x) for b in loader for x in b[:, 0]] == rows


def test_writer_pool_gives_the_same_bytes(where, tmp_path):
    with StoreWriter(tmp_path / "serial", shard_rows=4) as w:
        write_batches(w, [9, 13, 3])
    with where.writer(shard_rows=4, writers=3) as w:
        write_batches(w, [9, 13, 3])
    serial, pooled = open_store(tmp_path / "serial"), where.open()
    assert [(x.id, x.rows, x.sha256, x.index_sha256) for x in pooled.shards] == [
        (x.id, x.rows, x.sha256, x.index_sha256) for x in serial.shards
    ]
    assert verify(where.url, where.opts).ok


def test_shards_are_plain_safetensors(tmp_path):
    safetensors_torch = pytest.importorskip("safetensors.torch")
    # Odd widths and mixed itemsizes: every tensor must still start aligned for zero-copy reads.
    acts = {
        "h.bf16": torch.randn(7, 3).to(torch.bfloat16),
        "h.f32": torch.randn(7, 5),
        "h.i64": torch.arange(14).reshape(7, 2),
        "h.bool": torch.rand(7, 3) > 0.5,
    }
    with StoreWriter(tmp_path / "s", shard_rows=4) as w:
        w.add({k: v[:2] for k, v in acts.items()}, make_index(2))
        w.add({k: v[2:] for k, v in acts.items()}, make_index(5, 2))
    for sid, rows in ((0, slice(0, 4)), (1, slice(4, 7))):
        loaded = safetensors_torch.load_file(tmp_path / "s" / "shards" / f"{sid:05d}.safetensors")
        assert loaded.keys() == acts.keys()
        for k, v in acts.items():
            assert torch.equal(loaded[k], v[rows])
    s = open_store(tmp_path / "s")
    assert all(torch.equal(s.read(k), v) for k, v in acts.items())


def test_progress_is_committed_with_rows_and_errors_abort(where):
    w = where.writer(shard_rows=100)
    w.add(make_acts(3), make_index(3))
    w.progress["done"] = ["a"]
    w.commit()
    with pytest.raises(RuntimeError), w:
        w.add(make_acts(4, 3), make_index(4, 3))
        w.progress["done"].append("b")
        raise RuntimeError("the engine failed")
    s = where.open()
    assert s.n_rows == 3 and s.progress == {"done": ["a"]} and not s.complete
    with pytest.raises(StoreError, match="closed"):
        w.commit()


def test_max_shard_bytes_bounds_shards(tmp_path):
    # One row is 16*4 + 8*2 + 4*2 = 88 bytes; a 1000-byte cap means 11 rows a shard.
    with StoreWriter(tmp_path / "s", shard_rows=1000, max_shard_bytes=1000) as w:
        w.add(make_acts(30), make_index(30))
        assert w.rows_per_shard == 11
    assert [x.rows for x in open_store(tmp_path / "s").shards] == [11, 11, 8]


def test_empty_store_reads_empty(where):
    w = where.writer(hooks={HOOKS[0]: {"d": 16, "dtype": "float32"}}, meta={"job": {"batch": 4}})
    s = where.open()
    assert s.n_rows == 0 and s.shards == [] and not s.complete
    assert s.read(HOOKS[0]).shape == (0, 16)
    assert s.index().num_rows == 0 and set(REQUIRED) <= set(s.index().column_names)
    assert s.meta["job"] == {"batch": 4}
    w.close()
    assert where.open().complete


# ---- resume -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("writers", [1, 2])
def test_resume_after_crash_equals_uninterrupted(where, tmp_path, writers):
    sizes = [6, 9, 11, 4]
    ref_url = tmp_path / "reference"
    with StoreWriter(ref_url, shard_rows=5, meta={"model": {"name": "m"}}) as w:
        write_batches(w, sizes)

    # A job that committed two batches, then died halfway through the third: shards 0-4 are committed,
    # the third batch already wrote full shards that no manifest lists.
    w = where.writer(shard_rows=5, meta={"model": {"name": "m"}}, writers=writers)
    nxt = write_batches(w, sizes[:2])
    w.add(make_acts(sizes[2], nxt), make_index(sizes[2], nxt))
    if w._pool is not None:  # let the background writes land, as a crash after them would
        for f in list(w._pending):
            f.result()
    committed = where.open()
    assert committed.n_rows == 15 and committed.progress == {"done": [0, 1]}
    assert len(where.ls("shards")) > len(committed.shards)  # orphans on disk
    del w  # crash: no commit, no close

    with pytest.raises(StoreError, match="--resume"):
        where.writer(shard_rows=5)
    w = where.writer(shard_rows=5, resume=True, meta={"model": {"name": "m"}}, writers=writers)
    assert w.progress == {"done": [0, 1]} and not w.complete and w.n_rows == 15
    assert sorted(where.ls("shards")) == [x.file.split("/")[1] for x in committed.shards]
    assert len(where.ls("index")) == len(committed.shards)
    done = len(w.progress["done"])
    write_batches(w, sizes[done:], start=15, first_batch=done)
    w.close()

    ref, got = open_store(ref_url), where.open()
    assert [(x.rows, x.sha256, x.index_sha256) for x in got.shards] == [
        (x.rows, x.sha256, x.index_sha256) for x in ref.shards
    ]
    for h in HOOKS:
        assert torch.equal(got.read(h).view(torch.uint8), ref.read(h).view(torch.uint8))
    assert got.progress == ref.progress == {"done": [0, 1, 2, 3]}
    assert got.index().drop_columns(["shard"]).equals(ref.index().drop_columns(["shard"]))
    assert verify(where.url, where.opts).orphans == []


def test_resume_complete_store_has_nothing_to_do(where):
    with where.writer(shard_rows=5) as w:
        write_batches(w, [7])
    w = where.writer(resume=True)
    assert w.complete and w.n_rows == 7 and w.progress == {"done": [0]}
    with pytest.raises(StoreError, match="complete"):
        w.add(make_acts(2), make_index(2))
    w.close()
    assert where.open().n_rows == 7


def test_resume_refuses_another_model_or_hooks(where):
    w = where.writer(meta={"model": {"name": "a"}})
    write_batches(w, [3])
    w.close(complete=False)
    with pytest.raises(StoreError, match="model"):
        where.writer(resume=True, meta={"model": {"name": "b"}})
    with pytest.raises(StoreError, match="captures"):
        where.writer(resume=True, hooks={HOOKS[0]: {"d": 99, "dtype": "float32"}})
    w = where.writer(resume=True, meta={"job": {"note": "second run"}, "tokenizer": "tok"})
    assert w.n_rows == 3 and w.meta["job"] == {"note": "second run"} and w.meta["tokenizer"] == "tok"
    w.close()
    assert where.open().meta["model"] == {"name": "a"} and where.open().meta["tokenizer"] == "tok"
    w = where.writer(overwrite=True, meta={"job": {"note": "third run"}})
    w.close()
    w = where.writer(resume=True, meta={"job": {"note": "fourth run"}})
    # settings already recorded stay as the store's first run wrote them; the caller compares via .meta
    assert w.meta["job"] == {"note": "third run"} and w.complete


def test_existing_store_needs_resume_or_overwrite(where):
    with where.writer() as w:
        write_batches(w, [4])
    with pytest.raises(StoreError, match="--resume .* --overwrite"):
        where.writer()
    with pytest.raises(StoreError, match="not both"):
        where.writer(resume=True, overwrite=True)
    w = where.writer(overwrite=True)
    assert w.n_rows == 0 and w.progress == {}
    assert where.ls("shards") == [] and where.open().n_rows == 0
    w.close()


def test_refuses_folder_that_is_not_a_store(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(StoreError, match="not empty"):
        StoreWriter(tmp_path, overwrite=True)
    assert (tmp_path / "notes.txt").exists()
    with pytest.raises(StoreError, match="no arcscope store"):
        open_store(tmp_path / "nothing")


def test_overwrite_refuses_a_foreign_manifest(tmp_path):
    # A folder whose manifest.json belongs to something else is never replaced, with or without --overwrite.
    theirs = json.dumps({"name": "my web app", "icons": []})
    (tmp_path / "manifest.json").write_text(theirs)
    (tmp_path / "index.html").write_text("<html></html>")
    for kw in ({"overwrite": True}, {"resume": True}, {}):
        with pytest.raises(
            StoreError, match="manifest.json is not an arcscope store manifest.*another folder"
        ):
            StoreWriter(tmp_path, **kw)
    assert (tmp_path / "manifest.json").read_text() == theirs
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index.html", "manifest.json"]


# ---- input checks -----------------------------------------------------------------------------------------


def test_add_checks_hooks_and_index(where):
    w = where.writer()
    w.add(make_acts(3), make_index(3))
    bad = make_acts(3)
    bad[HOOKS[0]] = torch.zeros(3, 15)
    with pytest.raises(StoreError, match="do not match"):
        w.add(bad, make_index(3))
    with pytest.raises(StoreError, match="do not match"):
        w.add({HOOKS[0]: torch.zeros(3, 16)}, make_index(3))
    wrong_dtype = make_acts(3)
    wrong_dtype[HOOKS[1]] = wrong_dtype[HOOKS[1]].float()
    with pytest.raises(StoreError, match="do not match"):
        w.add(wrong_dtype, make_index(3))
    with pytest.raises(StoreError, match="4 rows but the activations have 3"):
        w.add(make_acts(3), make_index(4))
    idx = make_index(3)
    del idx["role"]
    with pytest.raises(StoreError, match="missing required columns \\['role'\\]"):
        w.add(make_acts(3), idx)
    with pytest.raises(StoreError, match="shape \\[rows, d\\]"):
        w.add({h: t[0] for h, t in make_acts(3).items()}, make_index(3))
    # numpy input and a pyarrow index work as well as tensors and dicts
    np_acts = {h: t.float().numpy() if t.dtype == torch.float32 else t for h, t in make_acts(2, 3).items()}
    w.add(np_acts, pa.table(make_index(2, 3)))
    w.close()
    expected = torch.cat([make_acts(3)[HOOKS[0]], make_acts(2, 3)[HOOKS[0]]])
    assert torch.equal(where.open().read(HOOKS[0]), expected)


def test_meta_and_progress_must_be_json(where):
    with pytest.raises(StoreError, match="JSON"):
        where.writer(meta={"model": {"f": object()}})
    with pytest.raises(StoreError, match="may not set"):
        where.writer(meta={"shards": []})


# ---- failures ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("writers", [1, 2])
def test_full_disk_is_a_store_error_and_keeps_committed_shards(tmp_path, monkeypatch, writers):
    url = str(tmp_path / "store")
    w = StoreWriter(url, shard_rows=4, writers=writers)
    write_batches(w, [6])
    real = Location.write_atomic

    def full(self, rel, data, **kw):
        if rel.startswith("shards/"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, rel, data, **kw)

    monkeypatch.setattr(Location, "write_atomic", full)
    with pytest.raises(StoreError, match="no space left") as err:
        w.add(make_acts(9, 6), make_index(9, 6))
        w.commit({"done": [0, 1]})
    assert url in str(err.value) and "shards/00002.safetensors" in str(err.value)
    with pytest.raises(StoreError, match="no space left"):
        w.commit()
    w.abort()
    monkeypatch.undo()
    report = verify(url)
    assert report.ok and report.n_rows == 6
    assert open_store(url).progress == {"done": [0]}
    w = StoreWriter(url, resume=True, shard_rows=4)
    write_batches(w, [9], start=6, first_batch=1)
    w.close()
    assert torch.equal(open_store(url).read(HOOKS[0]), concat_expected([6, 9])[HOOKS[0]])


def test_unreachable_endpoint_names_the_url():
    opts = {
        "key": "k",
        "secret": "s",
        "client_kwargs": {"endpoint_url": "http://127.0.0.1:9", "region_name": "us-west-2"},
        "config_kwargs": {"retries": {"max_attempts": 1}, "connect_timeout": 1},
    }
    pytest.importorskip("s3fs")
    with pytest.raises(StoreError, match="s3://nowhere/store"):
        StoreWriter("s3://nowhere/store", storage_options=opts)


# ---- verify -----------------------------------------------------------------------------------------------


def test_verify_finds_flipped_byte_missing_index_and_orphans(where):
    with where.writer(shard_rows=5) as w:
        write_batches(w, [12])
    assert verify(where.url, where.opts).ok
    s = where.open()
    shard = s.shards[1]
    fs = where.fs
    data = bytearray(fs.cat_file(where.path(shard.file)))
    data[-3] ^= 0x40
    fs.pipe_file(where.path(shard.file), bytes(data))
    fs.rm_file(where.path(s.shards[2].index))
    fs.pipe_file(where.path("shards/00099.safetensors"), b"junk")

    report = verify(where.url, where.opts)
    assert not report.ok
    assert report.missing == [s.shards[2].index]
    [damage] = report.damaged
    assert damage.file == shard.file and damage.problem == "sha256 differs"
    assert damage.expected == shard.sha256 and damage.actual != shard.sha256
    assert report.orphans == ["shards/00099.safetensors"]
    text = str(report)
    assert "DAMAGED" in text and shard.sha256 in text and s.shards[2].index in text


def test_verify_checks_shapes_and_rows(tmp_path):
    url = tmp_path / "store"
    with StoreWriter(url, shard_rows=5) as w:
        write_batches(w, [7])
    manifest = json.loads((url / "manifest.json").read_text())
    manifest["shards"][0]["rows"] = 6
    manifest["n_rows"] = 8
    (url / "manifest.json").write_text(json.dumps(manifest))
    problems = {(d.file, d.problem) for d in verify(url).damaged}
    assert ("shards/00000.safetensors", f"tensor {HOOKS[0]!r} shape") in problems
    assert ("index/00000.parquet", "row count") in problems


# ---- reads check what they return -------------------------------------------------------------------------


def _flip(where: Where, rel: str, at: int = -3) -> None:
    data = bytearray(where.fs.cat_file(where.path(rel)))
    data[at] ^= 0x40
    where.fs.pipe_file(where.path(rel), bytes(data))


def test_reads_refuse_a_flipped_byte(where):
    with where.writer(shard_rows=5) as w:
        write_batches(w, [12])  # shards of rows 0-4, 5-9, 10-11; task0 is rows 0-9, task1 rows 10-11
    bad = where.open().shards[1]
    _flip(where, bad.file)  # in the last tensor's data: size and header still match the manifest
    s = where.open()
    damaged = f"shard {bad.file} is damaged: sha256 .* differs from the manifest's; run `arcscope store verify {where.url}`"
    with pytest.raises(StoreError, match=damaged):
        s.read(HOOKS[2])
    with pytest.raises(StoreError, match=damaged):  # a failed check is not remembered as passed
        s.read(HOOKS[0], shard=bad.id, rows=[0])
    with pytest.raises(StoreError, match=damaged):
        s.query(HOOKS[0], task_id="task0")
    with pytest.raises(StoreError, match=damaged):
        list(s.dataset(HOOKS[0], shuffle_buffer=0))
    with pytest.raises(StoreError, match=damaged):
        list(s.iter_batches(HOOKS[0], 4))
    # shards the read does not touch are not needed to be intact
    acts, _ = s.query(HOOKS[0], task_id="task1")
    assert acts[:, 0].tolist() == [10.0, 11.0]
    # Opting out of hashing (for speed, on a store just verified) checks sizes and headers only.
    fast = open_store(where.url, where.opts, verify="size")
    assert fast.read(HOOKS[2]).shape == (12, 4)
    with pytest.raises(StoreError, match="verify 'md5' is not one of sha256, size"):
        open_store(where.url, where.opts, verify="md5")


def test_reads_refuse_swapped_shards_and_index_files(tmp_path):
    url = tmp_path / "store"
    with StoreWriter(url, shard_rows=5) as w:
        write_batches(w, [12])  # 5, 5 and 2 rows
    a, b, c = (url / f"shards/0000{i}.safetensors" for i in range(3))
    da, db, dc = a.read_bytes(), b.read_bytes(), c.read_bytes()
    # Two shards of equal rows swapped: only the hash can tell; rows would silently belong to other tasks.
    for f, data in ((a, db), (b, da)):
        f.write_bytes(data)
    with pytest.raises(StoreError, match="shard shards/00000.safetensors is damaged: sha256.*store verify"):
        open_store(url).query(HOOKS[0], task_id="task0")
    # Shards of different rows swapped: caught by the header check too, naming the rows the manifest wants.
    for f, data in ((a, dc), (b, db), (c, da)):
        f.write_bytes(data)
    for mode in ("sha256", "size"):
        s = open_store(url, verify=mode)
        rule = r"is F32 \[2, 16\], the manifest says F32 \[5, 16\]"
        with pytest.raises(StoreError, match=f"shards/00000.safetensors is damaged: .*{rule}"):
            s.read(HOOKS[0], rows=[0, 11])
        with pytest.raises(StoreError, match="shards/0000[02].safetensors is damaged"):
            s.query(HOOKS[0], task_id="task1")
    for f, data in ((a, da), (c, dc)):
        f.write_bytes(data)
    assert torch.equal(open_store(url).read(HOOKS[0]), concat_expected([12])[HOOKS[0]])
    # Index files swapped: the index would name the wrong tasks for the rows.
    i0, i1 = url / "index/00000.parquet", url / "index/00001.parquet"
    d0, d1 = i0.read_bytes(), i1.read_bytes()
    for f, data in ((i0, d1), (i1, d0)):
        f.write_bytes(data)
    with pytest.raises(StoreError, match="index file index/00000.parquet is damaged: .*store verify"):
        open_store(url).query(HOOKS[0], task_id="task0")


def test_reads_refuse_a_truncated_shard(where):
    with where.writer(shard_rows=5) as w:
        write_batches(w, [12])
    bad = where.open().shards[2]
    where.fs.pipe_file(where.path(bad.file), bytes(where.fs.cat_file(where.path(bad.file)))[:-4])
    for mode in ("sha256", "size"):
        s = where.open() if mode == "sha256" else open_store(where.url, where.opts, verify=mode)
        with pytest.raises(
            StoreError, match=f"{bad.file} is damaged: {bad.bytes - 4} bytes, the manifest says"
        ):
            s.read(HOOKS[0], rows=[11])
        assert s.read(HOOKS[0], rows=[0, 9])[:, 0].tolist() == [0.0, 9.0]


def test_cli_info_says_when_files_do_not_match(tmp_path):
    url = tmp_path / "store"
    w = StoreWriter(url, shard_rows=5)
    write_batches(w, [12])
    w.abort()  # an unfinished store
    res = _cli(["store", "info", str(url)])
    assert res.exit_code == 0 and "incomplete" in res.output and "resumes by default" in res.output
    assert "--resume" not in res.output and "DAMAGED" not in res.output
    shard = url / "shards/00001.safetensors"
    shard.write_bytes(shard.read_bytes()[:-4])
    (url / "index/00002.parquet").write_bytes(b"PAR1")
    res = _cli(["store", "info", str(url)])
    out = " ".join(res.output.split())
    assert res.exit_code == 1, res.output
    assert "DAMAGED: 2 file(s) do not match the manifest" in out
    assert "shards/00001.safetensors" in out and "the manifest says" in out and "index/00002.parquet" in out
    assert f"arcscope store verify {url}" in out and "tasks unknown" in out
    info = json.loads(_cli(["store", "info", str(url), "--json"]).output)
    assert sorted(info["damaged"]) == ["index/00002.parquet", "shards/00001.safetensors"]


# ---- export -----------------------------------------------------------------------------------------------


def test_export_hf_round_trip(where, tmp_path):
    datasets = pytest.importorskip("datasets")
    with where.writer(shard_rows=6) as w:
        write_batches(w, [8, 5])
    s = where.open()
    folder = s.export_hf(tmp_path / "hf", hooks=[HOOKS[0], HOOKS[1]])
    ds = datasets.load_from_disk(folder)
    assert ds.num_rows == 13
    assert set(ds.column_names) == {*make_index(1), HOOKS[0], HOOKS[1]}
    ds = ds.with_format("numpy")
    assert np.array_equal(ds[HOOKS[0]], s.read(HOOKS[0]).numpy())
    # bfloat16 is widened to float32, which holds it exactly
    assert np.array_equal(ds[HOOKS[1]], s.read(HOOKS[1]).float().numpy())
    assert [str(x) for x in ds["task_id"]] == s.index().column("task_id").to_pylist()


# ---- CLI --------------------------------------------------------------------------------------------------


def _cli(args: list[str]):
    from arcscope.cli import app

    return CliRunner().invoke(app, args)


def test_cli_info_ls_verify(where):
    with where.writer(shard_rows=5, meta={"model": {"name": "tiny-lm"}}) as w:
        write_batches(w, [12])
    opts = ["--storage-options", json.dumps(where.opts)] if where.opts else []
    res = _cli(["store", "info", where.url, *opts])
    assert res.exit_code == 0, res.output
    assert "tiny-lm" in res.output and HOOKS[1] in res.output and "bfloat16" in res.output
    assert "complete" in res.output and "12" in res.output
    res = _cli(["store", "info", where.url, *opts, "--json"])
    info = json.loads(res.output)
    assert (
        info["rows"] == 12
        and info["shards"] == 3
        and info["tasks"] == 2
        and sum(info["roles"].values()) == 12
    )
    res = _cli(["store", "ls", where.url, *opts, "--full"])
    assert res.exit_code == 0 and open_store(where.url, where.opts).shards[2].sha256 in res.output
    res = _cli(["store", "verify", where.url, *opts])
    assert res.exit_code == 0 and "OK" in res.output

    s = where.open()
    where.fs.pipe_file(where.path(s.shards[0].file), b"\x00" * 10)
    res = _cli(["store", "verify", where.url, *opts])
    assert res.exit_code == 1
    assert "DAMAGED" in res.output and "size differs" in res.output and s.shards[0].sha256 in res.output


def test_cli_missing_store_exits_2(tmp_path, capsys):
    from arcscope.cli import main

    with pytest.raises(SystemExit) as e:
        main(["store", "info", str(tmp_path / "none")])
    assert e.value.code == 2
    assert "no arcscope store here" in " ".join(capsys.readouterr().err.split())


# ---- the trainers' reader: stream, shuffle buffer, seed mixer ------------------------------------------


def test_stream_reads_every_row_in_a_seeded_shard_order(where):
    from arcscope.store import mix_seed

    with where.writer(shard_rows=8) as w:
        write_batches(w, [8, 8, 8, 8])
    s = where.open()
    st = s.stream(HOOKS[0], prefetch=2)
    rows = torch.cat(list(st.blocks(0, seed=1)))
    assert sorted(int(r) for r in rows[:, 0]) == list(range(32))
    # prefetch changes how shards are read, never their order
    assert torch.equal(torch.cat(list(s.stream(HOOKS[0], prefetch=0).blocks(0, seed=1))), rows)
    ranks = [st.order(0, 1, r, 2) for r in (0, 1)]
    assert sorted(ranks[0] + ranks[1]) == [0, 1, 2, 3] and st.order(0, 1, shuffle=False) == [0, 1, 2, 3]
    g = torch.Generator().manual_seed(mix_seed(1, 0))
    assert st.order(0, 1) == torch.randperm(4, generator=g).tolist()
    assert len({mix_seed(0, e, r) for e in range(3) for r in range(3)}) == 9
    with pytest.raises(StoreError, match="verify 'md5' is not one of sha256, size"):
        s.stream(HOOKS[0], verify="md5")
    with pytest.raises(StoreError, match="no hook 'nope'"):
        s.stream("nope")


def test_stream_stops_at_or_skips_a_damaged_shard(where):
    with where.writer(shard_rows=8) as w:
        write_batches(w, [8, 8, 8, 8])
    s = where.open()
    bad, short = s.shards[2], s.shards[1]
    data = bytearray(where.fs.cat_file(where.path(bad.file)))
    data[-3] ^= 0xFF
    where.fs.pipe_file(where.path(bad.file), bytes(data))
    with pytest.raises(StoreError, match=f"{bad.file} is damaged: sha256.*store verify.*--on-damaged skip"):
        list(s.stream(HOOKS[0]).blocks(0, seed=1))
    skip = s.stream(HOOKS[0], on_damaged="skip", prefetch=2)
    got = torch.cat(list(skip.blocks(0, seed=1)))
    assert list(skip.skipped) == [bad.file] and "sha256" in skip.skipped[bad.file]
    assert sorted(int(r) for r in got[:, 0]) == [p for p in range(32) if not 16 <= p < 24]
    # size checks read no whole file but still catch a truncated shard
    where.fs.pipe_file(where.path(short.file), bytes(where.fs.cat_file(where.path(short.file)))[:-4])
    sized = s.stream(HOOKS[0], verify="size", on_damaged="skip", prefetch=0)
    assert len(torch.cat(list(sized.blocks(0, seed=1)))) == 24 and list(sized.skipped) == [short.file]
    assert "the manifest says" in sized.skipped[short.file]


def test_stream_every_shard_damaged_is_an_error(tmp_path):
    with StoreWriter(tmp_path / "s", shard_rows=8) as w:
        write_batches(w, [8, 8])
    s = open_store(tmp_path / "s")
    for sh in s.shards:
        p = tmp_path / "s" / sh.file
        p.write_bytes(p.read_bytes()[:-4])
    with pytest.raises(StoreError, match="every shard was skipped as damaged"):
        list(s.stream(HOOKS[0], on_damaged="skip").blocks(0, seed=0))


def test_shuffle_blocks_keeps_every_row_and_is_seeded():
    from arcscope.store import shuffle_blocks

    blocks = [torch.arange(a, a + 7) for a in range(0, 70, 7)]
    out = list(shuffle_blocks(iter(blocks), 20, seed=5))
    flat = torch.cat(out).tolist()
    assert sorted(flat) == list(range(70)) and flat != list(range(70))
    assert torch.cat(list(shuffle_blocks(iter(blocks), 20, seed=5))).tolist() == flat
    assert torch.cat(list(shuffle_blocks(iter(blocks), 20, seed=6))).tolist() != flat
    assert [b.tolist() for b in shuffle_blocks(iter(blocks), 0, seed=5)] == [b.tolist() for b in blocks]
