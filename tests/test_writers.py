"""Task writers: round trips through every format, atomic writes, overwrite rules."""

from __future__ import annotations

import json

import numpy as np
import pytest

from arcscope.errors import SourceError, TaskFormatError
from arcscope.tasks import Pair, Task, TaskSet, iter_tasks, load, save
from arcscope.tasks.writers import resolve_target

TARGETS = [
    ("dir:{}/out", "dir"),
    ("kaggle:{}/x_challenges.json", "kaggle"),
    ("jsonl:{}/t.jsonl", "jsonl"),
    ("{}/t.jsonl.gz", "jsonl"),
    ("parquet:{}/t.parquet", "parquet"),
]


@pytest.mark.parametrize("target, fmt", TARGETS)
def test_roundtrip_every_format(tmp_path, small_taskset, target, fmt):
    spec = target.format(tmp_path)
    path = save(small_taskset, spec)
    assert path.exists() and resolve_target(spec)[0] == fmt
    back = load(spec)
    assert back == small_taskset
    # The task with unknown test outputs keeps them unknown.
    assert back["task4"].test[1].output is None and back["task0"].has_test_outputs
    assert [t.content_hash() for t in back] == [t.content_hash() for t in small_taskset]
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no temp files left


@pytest.mark.parametrize("target", ["jsonl:{}/m.jsonl", "parquet:{}/m.parquet"])
def test_meta_survives_records(tmp_path, make_task, target):
    t = make_task("m")
    t = Task(t.id, t.train, t.test, {"source": "x", "n": np.int64(3), "tags": {"a"}})
    spec = target.format(tmp_path)
    save([t], spec)
    assert load(spec)["m"].meta == {"source": "x", "n": 3, "tags": ["a"]}


def test_bundled_tasks_roundtrip_through_parquet_and_kaggle(tmp_path):
    ts = load("arc2:evaluation", limit=15)
    assert load(str(save(ts, tmp_path / "a.parquet"))) == ts
    assert load(str(save(ts, tmp_path / "e_challenges.json"))) == ts


def test_kaggle_partial_and_missing_solutions(tmp_path, make_task):
    t = make_task("p", n_test=2)
    partial = Task("p", t.train, (t.test[0], Pair(t.test[1].input, None)))
    none = make_task("n", seed=1, test_outputs=False)
    path = save([partial, none], f"kaggle:{tmp_path}/a_challenges.json")
    sol = json.loads((tmp_path / "a_solutions.json").read_text())
    assert set(sol) == {"p"} and sol["p"][1] is None
    assert load(f"kaggle:{path}") == TaskSet([partial, none])
    # Nothing known: no solutions file, and a stale one is removed so it cannot be merged back in.
    save([none], f"kaggle:{path}", overwrite=True)
    assert not (tmp_path / "a_solutions.json").exists()
    assert load(str(path))["n"] == none


def test_kaggle_name_rule(tmp_path, small_taskset):
    with pytest.raises(SourceError, match="must end in '_challenges.json'"):
        save(small_taskset, f"kaggle:{tmp_path}/tasks.json")


def test_overwrite_rules(tmp_path, small_taskset):
    save(small_taskset, tmp_path / "t.jsonl")
    with pytest.raises(SourceError, match="already exists; pass overwrite=True"):
        save(small_taskset, tmp_path / "t.jsonl")
    save(small_taskset[:2], tmp_path / "t.jsonl", overwrite=True)
    assert len(load(str(tmp_path / "t.jsonl"))) == 2
    # A folder re-written with fewer tasks holds exactly the new ones.
    save(small_taskset, f"dir:{tmp_path}/d")
    save(small_taskset[:1], f"dir:{tmp_path}/d", overwrite=True)
    assert load(f"dir:{tmp_path}/d").ids == ["task0"]
    (tmp_path / "d" / "README.md").write_text("mine")
    with pytest.raises(SourceError, match="holds more than task files"):
        save(small_taskset, f"dir:{tmp_path}/d", overwrite=True)
    (tmp_path / "empty").mkdir()
    save(small_taskset, f"dir:{tmp_path}/empty")  # an empty folder is not "existing output"


@pytest.mark.parametrize(
    "target", ["jsonl:{}/f.jsonl", "parquet:{}/f.parquet", "dir:{}/f", "kaggle:{}/f_challenges.json"]
)
def test_failed_write_leaves_nothing(tmp_path, small_taskset, target):
    def broken():
        yield small_taskset[0]
        yield small_taskset[1]
        raise RuntimeError("source died")

    spec = target.format(tmp_path)
    with pytest.raises(RuntimeError, match="source died"):
        save(broken(), spec, row_group_size=1)
    assert list(tmp_path.iterdir()) == []


def test_failed_overwrite_keeps_old_file(tmp_path, small_taskset):
    save(small_taskset, tmp_path / "keep.jsonl")

    def broken():
        yield small_taskset[0]
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        save(broken(), tmp_path / "keep.jsonl", overwrite=True)
    assert load(str(tmp_path / "keep.jsonl")) == small_taskset


def test_duplicate_and_unsafe_ids(tmp_path, make_task):
    t = make_task("a")
    with pytest.raises(TaskFormatError, match="task a: duplicate task id"):
        save([t, t], tmp_path / "d.jsonl")
    with pytest.raises(TaskFormatError, match="cannot be a file name"):
        save([t.with_id("../evil")], f"dir:{tmp_path}/x")
    assert not (tmp_path / "x").exists()


def test_dir_ids_too_long_for_a_file_name(tmp_path, make_task):
    t = make_task("ok")
    for bad, n in (("a" * 300, 300), ("\u20ac" * 70, 210)):  # 70 euro signs are 210 bytes in UTF-8
        with pytest.raises(TaskFormatError) as e:
            save([t, t.with_id(bad)], f"dir:{tmp_path}/x")
        msg = str(e.value)
        assert f"{tmp_path / 'x'}, task " in msg and f"({len(bad)} characters)" in msg
        assert f"at most 200 bytes in UTF-8; this one is {n}" in msg and "\n" not in msg
        assert not (tmp_path / "x").exists()
    with pytest.raises(TaskFormatError, match="control characters"):
        save([t.with_id("a\nb")], f"dir:{tmp_path}/x")
    # 200 bytes is still a file name; with on_error="skip" the rest is written and the bad id reported.
    skipped: list = []
    ids = [t, t.with_id("b" * 200), t.with_id("c" * 201)]
    save(ids, f"dir:{tmp_path}/x", on_error="skip", skipped=skipped)
    assert sorted(p.stem for p in (tmp_path / "x").iterdir()) == ["b" * 200, "ok"]
    assert len(skipped) == 1 and "this one is 201" in skipped[0][1]


def test_resolve_target(tmp_path):
    assert resolve_target(tmp_path / "a.parquet") == ("parquet", tmp_path / "a.parquet")
    assert resolve_target(tmp_path / "folder")[0] == "dir"
    assert resolve_target(tmp_path / "x_challenges.json")[0] == "kaggle"
    assert resolve_target("whatever.bin", fmt="jsonl")[0] == "jsonl"
    with pytest.raises(SourceError, match="read-only source"):
        resolve_target("arc1:training")
    with pytest.raises(SourceError, match="cannot tell the output format"):
        resolve_target(tmp_path / "a.json")
    with pytest.raises(SourceError, match="unknown task output format"):
        resolve_target(tmp_path / "a", fmt="csv")


def test_streaming_convert(tmp_path, small_taskset):
    save(small_taskset, tmp_path / "in.jsonl")
    save(
        iter_tasks(f"jsonl:{tmp_path / 'in.jsonl'}"), f"parquet:{tmp_path / 'out.parquet'}", row_group_size=2
    )
    assert load(f"parquet:{tmp_path / 'out.parquet'}") == small_taskset


def test_empty_outputs_read_back_empty(tmp_path):
    for spec in (f"jsonl:{tmp_path}/e.jsonl", f"parquet:{tmp_path}/e.parquet"):
        save([], spec)
        assert len(load(spec)) == 0


def test_dir_overwrite_only_replaces_task_files(tmp_path, small_taskset, capsys):
    from arcscope.cli import main

    out = tmp_path / "d"
    save(small_taskset, f"dir:{out}")
    settings = json.dumps({"theme": "dark", "tasks": 5})
    (out / "settings.json").write_text(settings)  # a .json file, but no task
    before = sorted(p.name for p in out.iterdir())
    with pytest.raises(
        SourceError, match=r"holds more than task files \(settings.json\).*move those files out"
    ):
        save(small_taskset[:1], f"dir:{out}", overwrite=True)
    src = save(small_taskset[:2], tmp_path / "two.jsonl")
    with pytest.raises(SystemExit) as e:
        main(["tasks", "convert", "-t", str(src), "-o", f"dir:{out}", "--overwrite", "-q"])
    err = " ".join(capsys.readouterr().err.split())
    assert e.value.code == 2 and "settings.json" in err and "Traceback" not in err
    assert sorted(p.name for p in out.iterdir()) == before and (out / "settings.json").read_text() == settings
    (out / "settings.json").unlink()
    save(small_taskset[:1], f"dir:{out}", overwrite=True)  # task files only: replaced
    assert sorted(p.name for p in out.iterdir()) == ["task0.json"]
