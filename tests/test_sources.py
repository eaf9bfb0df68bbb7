"""Task sources: spec parsing, every source kind, every validation rule, skip mode, streaming."""

from __future__ import annotations

import gzip
import json
import types

import pytest

from arcscope.errors import SourceError, TaskFormatError
from arcscope.tasks import SOURCE_HELP, TaskSet, iter_tasks, load, parse_spec, save
from arcscope.tasks.sources import _bundled, count_hint

GOOD = {
    "train": [{"input": [[1, 2], [3, 4]], "output": [[4, 3], [2, 1]]}],
    "test": [{"input": [[0, 5]], "output": [[5, 0]]}],
}


def write_json(path, obj):
    path.write_text(json.dumps(obj))
    return path


def write_jsonl(path, records):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return path


def rec(task_id, task=GOOD, **extra):
    return {"id": task_id, **task, **extra}


# ------------------------------------------------------------------------------------------- spec parsing


def test_parse_spec_forms(tmp_path):
    assert parse_spec("arc1:eval").target == "evaluation"
    assert parse_spec("arc2:train").target == "training"
    s = parse_spec("barc:/x/y.jsonl?n_test=2")
    assert (s.kind, s.target, s.options) == ("barc", "/x/y.jsonl", {"n_test": "2"})
    h = parse_spec("hf:someone/data:train[:10]")
    assert (h.kind, h.target, h.split) == ("hf", "someone/data", "train[:10]")
    assert parse_spec("hf:someone/data").split is None
    (tmp_path / "d").mkdir()
    assert parse_spec(tmp_path / "d").kind == "dir"
    for name, kind in [
        ("a.jsonl", "jsonl"),
        ("a.parquet", "parquet"),
        ("x_challenges.json", "kaggle"),
        ("one.json", "json"),
    ]:
        (tmp_path / name).write_text("{}")
        assert parse_spec(str(tmp_path / name)).kind == kind


@pytest.mark.parametrize(
    "spec, match",
    [
        ("nope:thing", "unknown task source kind 'nope'"),
        ("arc1:test", "splits 'training' and 'evaluation'"),
        ("/no/such/file.jsonl", "no such file"),
        ("dir:", "needs a path"),
    ],
)
def test_bad_specs_list_the_forms(spec, match):
    with pytest.raises(SourceError, match=match) as e:
        parse_spec(spec)
    assert "arc1:training" in str(e.value) and "hf:PATH_OR_NAME" in str(e.value)


def test_missing_paths_are_source_errors(tmp_path):
    for kind in ("dir", "json", "kaggle", "barc", "jsonl", "parquet"):
        with pytest.raises(SourceError, match="no such") as e:
            load(f"{kind}:{tmp_path}/missing")
        assert "dir:PATH" in str(e.value)


def test_unknown_option(tmp_path):
    p = write_jsonl(tmp_path / "a.jsonl", [rec("a")])
    with pytest.raises(SourceError, match="unknown option"):
        load(f"jsonl:{p}?colour=red")
    with pytest.raises(SourceError, match="n_test=0 must be at least 1"):
        load(f"barc:{p}", n_test=0)


# ------------------------------------------------------------------------------------------- bundled


def test_bundled_arc_sources():
    assert len(load("arc1:training")) == 400
    ev = load("arc1:evaluation")
    assert len(ev) == 400 and ev.ids == sorted(ev.ids)
    assert ev == load("arc1:eval")
    assert len(load("arc2:training")) == 1000
    arc2 = load("arc2:evaluation")
    assert len(arc2) == 120 and all(t.has_test_outputs for t in arc2)
    # Parsed once per process: the cached object is reused.
    assert _bundled("arc1") is _bundled("arc1")
    assert count_hint("arc2:eval") == 120


def test_load_limit_and_taskset_passthrough():
    ts = load("arc1:training", limit=3)
    assert len(ts) == 3 and load(ts) is ts


# ------------------------------------------------------------------------------------------- dir / json / kaggle


def test_dir_source_sorted_by_id(tmp_path):
    for name in ("b", "a", "c"):
        write_json(tmp_path / f"{name}.json", GOOD)
    (tmp_path / "notes.txt").write_text("not a task")
    ts = load(f"dir:{tmp_path}")
    assert ts.ids == ["a", "b", "c"] and ts["a"].test[0].output.tolist() == [[5, 0]]
    assert load(str(tmp_path)) == ts
    assert count_hint(f"dir:{tmp_path}") == 3


def test_dir_points_at_subfolders(tmp_path):
    (tmp_path / "training").mkdir()
    write_json(tmp_path / "training" / "a.json", GOOD)
    with pytest.raises(SourceError, match="subfolders have some: training"):
        load(f"dir:{tmp_path}")
    with pytest.raises(SourceError, match="not a folder"):
        load(f"dir:{tmp_path / 'training' / 'a.json'}")


def test_json_single_task_and_challenges(tmp_path):
    t = load(f"json:{write_json(tmp_path / 'abc.json', GOOD)}")
    assert t.ids == ["abc"]
    ch = write_json(tmp_path / "c.json", {"x": GOOD, "y": GOOD})
    assert load(str(ch)).ids == ["x", "y"]
    bad = write_json(tmp_path / "odd.json", [1, 2])
    with pytest.raises(TaskFormatError, match="not an ARC task"):
        load(str(bad))


def _kaggle(tmp_path, with_solutions=True):
    ch = {tid: {"train": GOOD["train"], "test": [{"input": [[1]]}, {"input": [[2]]}]} for tid in ("k1", "k2")}
    path = write_json(tmp_path / "arc-agi_test_challenges.json", ch)
    if with_solutions:
        write_json(tmp_path / "arc-agi_test_solutions.json", {"k1": [[[7]], [[8]]], "k2": [[[9]], None]})
    return path


def test_kaggle_merges_solutions(tmp_path):
    ts = load(f"kaggle:{_kaggle(tmp_path)}")
    assert ts.ids == ["k1", "k2"]
    assert [p.output.tolist() for p in ts["k1"].test] == [[[7]], [[8]]]
    assert ts["k2"].test[1].output is None and not ts["k2"].has_test_outputs


def test_kaggle_without_solutions(tmp_path):
    ts = load(f"kaggle:{_kaggle(tmp_path, with_solutions=False)}")
    assert all(p.output is None for t in ts for p in t.test)


def test_kaggle_solution_count_mismatch(tmp_path):
    path = _kaggle(tmp_path)
    write_json(tmp_path / "arc-agi_test_solutions.json", {"k1": [[[7]]]})
    with pytest.raises(
        TaskFormatError, match=r"solutions.json, task k1: the solutions file has 1 outputs for 2"
    ):
        load(f"kaggle:{path}")
    ts = load(f"kaggle:{path}", on_error="skip")
    assert ts.ids == ["k2"] and "1 outputs for 2" in ts.skipped[0][1]


def test_kaggle_explicit_solutions_option(tmp_path):
    path = _kaggle(tmp_path, with_solutions=False)
    sol = write_json(tmp_path / "answers.json", {"k1": [[[1]], [[1]]]})
    ts = load(f"kaggle:{path}?solutions={sol}")
    assert ts["k1"].has_test_outputs and not ts["k2"].has_test_outputs


# ------------------------------------------------------------------------------------------- barc / jsonl


def barc_rec(n_examples=3, **extra):
    ex = [[[[i]], [[i + 1]]] for i in range(n_examples)]
    return {"examples": ex, "source": "gen.py", "seeds": ["abc"], **extra}


def test_barc_default_split_and_ids(tmp_path):
    p = write_jsonl(tmp_path / "b.jsonl", [barc_rec(), barc_rec(id="named"), barc_rec(uid="u1")])
    ts = load(f"barc:{p}")
    assert ts.ids == ["barc-1", "named", "u1"]
    t = ts[0]
    assert len(t.train) == 2 and len(t.test) == 1 and t.test[0].input.tolist() == [[2]]
    assert t.meta == {"source": "gen.py", "seeds": ["abc"]}


def test_barc_n_test_option(tmp_path):
    p = write_jsonl(tmp_path / "b.jsonl", [barc_rec(4)])
    assert len(load(f"barc:{p}?n_test=2")[0].test) == 2
    assert len(load(f"barc:{p}", n_test=3)[0].train) == 1
    with pytest.raises(TaskFormatError, match="line 1, task barc-1: 4 examples, but the split rule"):
        load(f"barc:{p}", n_test=4)


def test_barc_accepts_dict_examples(tmp_path):
    r = {"examples": [{"input": [[1]], "output": [[2]]}, {"input": [[3]], "output": [[4]]}]}
    t = load(f"barc:{write_jsonl(tmp_path / 'b.jsonl', [r])}")[0]
    assert t.train[0].output.tolist() == [[2]] and t.test[0].output.tolist() == [[4]]


def test_jsonl_arcscope_layout(tmp_path):
    unknown = {"train": GOOD["train"], "test": [{"input": [[1]]}, {"input": [[2]], "output": None}]}
    p = write_jsonl(
        tmp_path / "a.jsonl",
        [
            rec("a", meta={"difficulty": 3}),
            "",  # blank lines are allowed
            rec("b", meta=json.dumps({"k": "v"})),
            rec("c", unknown),
            barc_rec(),  # an examples-style record is detected
        ],
    )
    ts = load(f"jsonl:{p}")
    assert ts.ids == ["a", "b", "c", "barc-5"]
    assert ts["a"].meta == {"difficulty": 3} and ts["b"].meta == {"k": "v"}
    assert not ts["c"].has_test_outputs and len(ts["c"].test) == 2
    assert load(str(p)) == ts


def test_jsonl_gz(tmp_path):
    p = tmp_path / "a.jsonl.gz"
    with gzip.open(p, "wt") as f:
        f.write(json.dumps(rec("z")) + "\n")
    assert load(str(p)).ids == ["z"]


# ------------------------------------------------------------------------------------------- parquet / hf


def test_parquet_roundtrip_and_row_groups(tmp_path, small_taskset):
    path = save(small_taskset, f"parquet:{tmp_path / 't.parquet'}", row_group_size=2)
    import pyarrow.parquet as pq

    assert pq.ParquetFile(path).num_row_groups == 3
    assert load(f"parquet:{path}") == small_taskset
    assert count_hint(f"parquet:{path}") == 5


def test_parquet_json_string_columns_and_barc(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(
        pa.table(
            {
                "id": ["s"],
                "train": [json.dumps(GOOD["train"])],
                "test": [json.dumps(GOOD["test"])],
                "meta": ['{"a": 1}'],
            }
        ),
        tmp_path / "s.parquet",
    )
    t = load(f"parquet:{tmp_path / 's.parquet'}")["s"]
    assert t.meta == {"a": 1} and t.train[0].output.tolist() == [[4, 3], [2, 1]]
    pq.write_table(pa.table({"examples": [barc_rec()["examples"]], "source": ["g"]}), tmp_path / "b.parquet")
    t = load(f"parquet:{tmp_path / 'b.parquet'}")[0]
    assert t.id == "barc-0" and t.meta == {"source": "g"}


def test_parquet_wrong_columns(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"x": [1]}), tmp_path / "x.parquet")
    with pytest.raises(SourceError, match="neither the arcscope layout"):
        load(f"parquet:{tmp_path / 'x.parquet'}")
    (tmp_path / "junk.parquet").write_text("not parquet")
    with pytest.raises(SourceError, match="cannot open"):
        load(f"parquet:{tmp_path / 'junk.parquet'}")


def test_hf_save_to_disk(tmp_path, small_taskset):
    datasets = pytest.importorskip("datasets")
    from arcscope.tasks.writers import task_record

    records = [{k: v for k, v in task_record(t).items() if k != "meta"} for t in small_taskset]
    ds = datasets.Dataset.from_list(records)
    ds.save_to_disk(str(tmp_path / "one"))
    assert load(f"hf:{tmp_path / 'one'}") == small_taskset
    assert load(str(tmp_path / "one")) == small_taskset  # a bare save_to_disk folder is recognised
    datasets.DatasetDict({"train": ds, "extra": ds.select([0])}).save_to_disk(str(tmp_path / "two"))
    assert len(load(f"hf:{tmp_path / 'two'}:extra")) == 1
    with pytest.raises(SourceError, match="several splits"):
        load(f"hf:{tmp_path / 'two'}")
    with pytest.raises(SourceError, match="no split 'test'"):
        load(f"hf:{tmp_path / 'two'}:test")
    barc = datasets.Dataset.from_list([barc_rec(), barc_rec()])
    barc.save_to_disk(str(tmp_path / "barc"))
    assert load(f"hf:{tmp_path / 'barc'}").ids == ["barc-0", "barc-1"]


def test_hf_name_not_cached_is_offline(monkeypatch, tmp_path):
    pytest.importorskip("datasets")
    monkeypatch.delenv("ARCSCOPE_HF_DOWNLOAD", raising=False)
    with pytest.raises(SourceError, match="does not download by default"):
        load("hf:arcscope-test/surely-not-cached-anywhere")


# ------------------------------------------------------------------------------------------- validation rules


BAD_TASKS = [
    ({"train": [{"input": [[1, 2], [3]], "output": [[1]]}], "test": GOOD["test"]}, "ragged grid"),
    ({"train": [{"input": [[0] * 31], "output": [[1]]}], "test": GOOD["test"]}, "outside 1..30"),
    ({"train": [{"input": [], "output": [[1]]}], "test": GOOD["test"]}, "1..30 rows"),
    ({"train": [{"input": [[10]], "output": [[1]]}], "test": GOOD["test"]}, "colours must be 0..9"),
    ({"train": [{"input": [[-1]], "output": [[1]]}], "test": GOOD["test"]}, "colours must be 0..9"),
    ({"train": [{"input": [[1.5]], "output": [[1]]}], "test": GOOD["test"]}, "must be integers"),
    ({"train": [{"input": [["1"]], "output": [[1]]}], "test": GOOD["test"]}, "must be integers"),
    ({"train": [{"input": [[True]], "output": [[1]]}], "test": GOOD["test"]}, "must be integers"),
    ({"test": GOOD["test"]}, "missing key 'train'"),
    ({"train": GOOD["train"]}, "missing key 'test'"),
    ({"train": [{"output": [[1]]}], "test": GOOD["test"]}, "missing key 'input'"),
    ({"train": [{"input": [[1]]}], "test": GOOD["test"]}, "missing key 'output'"),
    ({"train": [], "test": GOOD["test"]}, "empty train set"),
]


@pytest.mark.parametrize("task, rule", BAD_TASKS)
def test_rules_in_jsonl_name_file_line_and_task(tmp_path, task, rule):
    p = write_jsonl(tmp_path / "bad.jsonl", [rec("ok"), rec("broken", task)])
    with pytest.raises(TaskFormatError) as e:
        load(f"jsonl:{p}")
    msg = str(e.value)
    assert f"{p} line 2" in msg and "task broken" in msg and rule in msg
    assert e.value.line == 2 and e.value.task_id == "broken"


@pytest.mark.parametrize("task, rule", BAD_TASKS[:3] + BAD_TASKS[8:])
def test_rules_in_dir_name_file_and_task(tmp_path, task, rule):
    write_json(tmp_path / "fine.json", GOOD)
    write_json(tmp_path / "zbad.json", task)
    with pytest.raises(TaskFormatError, match=rule) as e:
        load(f"dir:{tmp_path}")
    assert "zbad.json" in str(e.value) and "task zbad" in str(e.value)


def test_record_rules(tmp_path):
    p = write_jsonl(
        tmp_path / "r.jsonl",
        [
            {"train": GOOD["train"], "test": GOOD["test"]},  # no id
            [1, 2],  # not an object
            '{"id": "x", "train": [',  # invalid JSON
            rec("m", meta="[1, 2]"),  # meta must be an object
            rec("good"),
        ],
    )
    ts = load(f"jsonl:{p}", on_error="skip")
    assert ts.ids == ["good"]
    reasons = dict(ts.skipped)
    assert reasons == {
        f"{p} line 1": "missing key 'id' (arcscope records need 'id', 'train' and 'test')",
        f"{p} line 2": "a record must be a JSON object, got list",
        f"{p} line 3": reasons[f"{p} line 3"],
        f"{p} line 4, task m": "'meta' must be an object, got list",
    }
    assert reasons[f"{p} line 3"].startswith("invalid JSON")


def test_invalid_json_file_in_dir(tmp_path):
    (tmp_path / "a.json").write_text('{"train": [}')
    with pytest.raises(TaskFormatError, match=r"a.json line 1, task a: invalid JSON"):
        load(f"dir:{tmp_path}")


def test_skip_mode_reports_where_and_why(tmp_path):
    p = write_jsonl(tmp_path / "mix.jsonl", [rec("a"), rec("b", BAD_TASKS[0][0]), rec("c"), rec("a")])
    ts = load(f"jsonl:{p}", on_error="skip")
    assert isinstance(ts, TaskSet) and ts.ids == ["a", "c"]
    (where1, why1), (where2, why2) = ts.skipped
    assert where1 == f"{p} line 2, task b, train[0].input" and why1.startswith("ragged grid")
    assert "task a" in where2 and why2.startswith("duplicate task id")
    skipped: list = []
    assert [t.id for t in iter_tasks(f"jsonl:{p}", "skip", skipped)] == ["a", "c"]
    assert len(skipped) == 2


def test_duplicate_ids_raise(tmp_path):
    p = write_jsonl(tmp_path / "dup.jsonl", [rec("a"), rec("a")])
    with pytest.raises(TaskFormatError, match="task a: duplicate task id"):
        load(f"jsonl:{p}")


def test_on_error_value_checked():
    with pytest.raises(ValueError, match="on_error"):
        iter_tasks("arc1:training", on_error="ignore")


# ------------------------------------------------------------------------------------------- streaming


def test_iter_tasks_streams_lazily(tmp_path):
    # 3,000 good records, then garbage: the first tasks come out before the reader gets anywhere near it.
    path = tmp_path / "big.jsonl"
    with open(path, "w") as f:
        line = json.dumps(rec("x")).replace('"x"', '"{}"')
        for i in range(3000):
            f.write(line.replace("{}", f"t{i}") + "\n")
        f.write('{"id": "broken", "train": [[[\n')
    it = iter_tasks(f"jsonl:{path}")
    assert isinstance(it, types.GeneratorType)
    assert [next(it).id for _ in range(3)] == ["t0", "t1", "t2"]
    assert load(f"jsonl:{path}", limit=10).ids[-1] == "t9"
    with pytest.raises(TaskFormatError, match="line 3001: invalid JSON"):
        for _ in it:
            pass


def test_spec_errors_come_before_iteration(tmp_path):
    # A bad spec fails at the call, not at the first next(), so callers see it where they wrote it.
    with pytest.raises(SourceError):
        iter_tasks(f"jsonl:{tmp_path}/missing.jsonl")


# ------------------------------------------------------------------------------------------- content hash


def test_content_hash_is_the_same_from_every_source(tmp_path):
    bundled = load("arc1:evaluation", limit=3)
    save(bundled, f"dir:{tmp_path / 'd'}")
    save(bundled, f"jsonl:{tmp_path / 'a.jsonl'}")
    from_dir = load(f"dir:{tmp_path / 'd'}")
    from_jsonl = load(f"jsonl:{tmp_path / 'a.jsonl'}")
    for a, b, c in zip(bundled, from_dir, from_jsonl, strict=True):
        assert a.content_hash() == b.content_hash() == c.content_hash()
        assert a.with_id("other").content_hash() == a.content_hash()


def test_source_help_lists_every_form():
    for form in ("arc1:", "arc2:", "dir:", "kaggle:", "barc:", "jsonl:", "parquet:", "hf:"):
        assert form in SOURCE_HELP


# ----------------------------------------------------------------------------------------- hostile input

GOOD_TEXT = json.dumps(GOOD)
HUGE_TASK = GOOD_TEXT.replace("[[1, 2], [3, 4]]", "[[" + "9" * 5000 + ", 2], [3, 4]]", 1)
DEEP_TEXT = "[" * 100_000 + "]" * 100_000


def json_object(*pairs):
    """JSON object text from (key, JSON text) pairs, repeated keys kept (json.dumps cannot write them)."""
    return "{" + ", ".join(f'"{k}": {v}' for k, v in pairs) + "}"


def test_huge_integer_is_one_rule_naming_file_task_and_cell(tmp_path):
    # Python refuses to convert a 5000-digit integer (ValueError deep inside json); the reader names it.
    (tmp_path / "big.json").write_text(HUGE_TASK)
    write_json(tmp_path / "fine.json", GOOD)
    with pytest.raises(TaskFormatError) as e:
        load(f"dir:{tmp_path}")
    assert str(e.value) == (
        f"{tmp_path / 'big.json'}, task big, train[0].input: "
        "cell (0, 0) is a 5000-digit number: grid cells must be integers 0..9"
    )
    ts = load(f"dir:{tmp_path}", on_error="skip")
    assert ts.ids == ["fine"] and len(ts.skipped) == 1
    # In a challenges file the other tasks survive, and a JSONL line names its line.
    kaggle = tmp_path / "k_challenges.json"
    kaggle.write_text(json_object(("a", GOOD_TEXT), ("b", HUGE_TASK), ("c", GOOD_TEXT)))
    ts = load(f"kaggle:{kaggle}", on_error="skip")
    assert ts.ids == ["a", "c"] and "task b" in ts.skipped[0][0] and "5000-digit" in ts.skipped[0][1]
    lines = tmp_path / "r.jsonl"
    lines.write_text('{"id": "x", ' + HUGE_TASK[1:] + "\n")
    with pytest.raises(TaskFormatError, match=r"r.jsonl line 1, task x, train\[0\].input: cell"):
        load(f"jsonl:{lines}")


def test_deep_nesting_is_one_rule_naming_file_and_task(tmp_path):
    (tmp_path / "deep.json").write_text(DEEP_TEXT)
    write_json(tmp_path / "fine.json", GOOD)
    with pytest.raises(TaskFormatError, match=r"deep.json, task deep: invalid JSON: nested deeper"):
        load(f"dir:{tmp_path}")
    assert load(f"dir:{tmp_path}", on_error="skip").ids == ["fine"]
    lines = write_jsonl(tmp_path / "r.jsonl", [rec("ok"), DEEP_TEXT, rec("ok2")])
    ts = load(f"jsonl:{lines}", on_error="skip")
    assert ts.ids == ["ok", "ok2"] and ts.skipped[0][0] == f"{lines} line 2"


def test_kaggle_repeated_task_id_is_reported_not_collapsed(tmp_path):
    other = json.dumps({**GOOD, "test": [{"input": [[7]]}]})
    kaggle = tmp_path / "k_challenges.json"
    kaggle.write_text(json_object(("a", GOOD_TEXT), ("b", GOOD_TEXT), ("a", other)))
    with pytest.raises(TaskFormatError, match=r"k_challenges.json, task a: duplicate task id"):
        load(f"kaggle:{kaggle}")
    ts = load(f"kaggle:{kaggle}", on_error="skip")
    # The first "a" is kept (as for every other source), the second reported.
    assert ts.ids == ["a", "b"] and ts["a"].test[0].output is not None
    assert ts.skipped == [(f"kaggle:{kaggle}, task a", "duplicate task id (item 2; first at item 0)")]
    # A repeated id in the solutions file makes that task's outputs ambiguous.
    kaggle.write_text(json_object(("a", GOOD_TEXT), ("b", GOOD_TEXT)))
    sols = tmp_path / "k_solutions.json"
    sols.write_text('{"a": [[[1]]], "b": [[[2]]], "a": [[[3]]]}')
    ts = load(f"kaggle:{kaggle}", on_error="skip")
    assert ts.ids == ["b"] and ts.skipped[0][0] == f"{sols}, task a" and "ambiguous" in ts.skipped[0][1]


def test_repeated_key_inside_a_task_or_record(tmp_path):
    pair = '{"input": [[1]], "output": [[2]], "output": [[3]]}'
    (tmp_path / "p.json").write_text(json_object(("train", f"[{pair}]"), ("test", '[{"input": [[1]]}]')))
    with pytest.raises(TaskFormatError, match=r"task p, train\[0\]: duplicate key 'output'"):
        load(f"json:{tmp_path / 'p.json'}")
    lines = tmp_path / "r.jsonl"
    lines.write_text('{"id": "x", "id": "y", ' + GOOD_TEXT[1:] + "\n")
    with pytest.raises(TaskFormatError, match=r"r.jsonl line 1, task y: the record holds the key 'id'"):
        load(f"jsonl:{lines}")
