"""`arcscope tasks` commands and the terminal drawing of tasks."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from rich.console import Console
from typer.testing import CliRunner

from arcscope.cli import app, main
from arcscope.report.terminal import ARC_COLOURS, render_grid, render_task, summarize
from arcscope.tasks import as_grid, load, save

runner = CliRunner()


def run_main(args, capsys):
    """Run the real entry point; return (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as e:
        main(args)
    out, err = capsys.readouterr()
    # rich wraps long messages at the console width; compare words, not line breaks.
    return e.value.code, " ".join(out.split()), " ".join(err.split())


@pytest.fixture
def task_dir(tmp_path, small_taskset):
    return save(small_taskset, f"dir:{tmp_path / 'tasks'}")


@pytest.fixture
def bad_jsonl(tmp_path, small_taskset):
    path = save(small_taskset, tmp_path / "mixed.jsonl")
    lines = path.read_text().splitlines()
    rec = json.loads(lines[1])
    rec["train"][0]["input"] = [[1, 2], [3]]
    lines[1] = json.dumps(rec)
    path.write_text("\n".join(lines) + "\n")
    return path


def test_list_plain(task_dir):
    r = runner.invoke(app, ["tasks", "list", "--tasks", f"dir:{task_dir}", "--plain"])
    assert r.exit_code == 0, r.output
    lines = r.output.strip().splitlines()
    assert lines[0].split("\t")[:3] == ["id", "train", "test"]
    assert [ln.split("\t")[0] for ln in lines[1:]] == [f"task{i}" for i in range(5)]
    assert lines[-1].split("\t")[2] == "2" and lines[-1].endswith("?")


def test_list_table_default_source():
    r = runner.invoke(app, ["tasks", "list", "--limit", "2"])
    assert r.exit_code == 0 and "00576224" in r.output and "arc1:evaluation" in r.output


def test_info(tmp_path, small_taskset):
    save(list(small_taskset) + [small_taskset[0].with_id("copy")], tmp_path / "d.jsonl")
    r = runner.invoke(
        app, ["tasks", "info", "-q", "--tasks", f"jsonl:{tmp_path / 'd.jsonl'}"], env={"COLUMNS": "200"}
    )
    assert r.exit_code == 0, r.output
    assert "6" in r.output and "unknown test outputs" in r.output and "1 tasks (task4)" in r.output
    assert "1 groups: task0 = copy" in r.output


def test_validate_ok(task_dir):
    r = runner.invoke(app, ["tasks", "validate", "--tasks", f"dir:{task_dir}", "--quiet"])
    assert r.exit_code == 0 and "5 valid tasks" in r.output and "ok" in r.output


def test_validate_skip_lists_and_exits_1(bad_jsonl, capsys):
    code, out, err = run_main(
        ["tasks", "validate", "--tasks", f"jsonl:{bad_jsonl}", "--on-error", "skip", "-q"], capsys
    )
    assert code == 1
    assert "4 valid tasks" in out and "1 invalid" in out
    assert "skipped 1 invalid" in err and "line 2, task task1" in err and "ragged grid" in err


def test_validate_raise_exits_2_with_message(bad_jsonl, capsys):
    code, out, err = run_main(["tasks", "validate", "--tasks", f"jsonl:{bad_jsonl}", "-q"], capsys)
    assert code == 2 and "error:" in err and "line 2" in err and "ragged grid" in err
    assert "Traceback" not in err


def test_unknown_spec_exits_2_and_lists_forms(capsys):
    code, _, err = run_main(["tasks", "list", "--tasks", "nope:x"], capsys)
    assert code == 2 and "unknown task source kind" in err and "kaggle:" in err


def test_convert(task_dir, tmp_path, small_taskset, bad_jsonl):
    out = tmp_path / "o.parquet"
    r = runner.invoke(
        app, ["tasks", "convert", "--tasks", f"dir:{task_dir}", "--out", f"parquet:{out}", "-q"]
    )
    assert r.exit_code == 0 and "wrote 5 tasks" in r.output
    assert load(f"parquet:{out}") == small_taskset
    r = runner.invoke(
        app,
        [
            "tasks",
            "convert",
            "--tasks",
            str(bad_jsonl),
            "--out",
            str(out),
            "--overwrite",
            "--on-error",
            "skip",
            "-q",
        ],
    )
    assert r.exit_code == 0 and "wrote 4 tasks" in r.output and "1 skipped" in r.output
    assert len(load(str(out))) == 4


def test_convert_refuses_to_overwrite(task_dir, tmp_path, capsys):
    (tmp_path / "x.jsonl").write_text("")
    code, _, err = run_main(
        ["tasks", "convert", "-t", f"dir:{task_dir}", "-o", str(tmp_path / "x.jsonl"), "-q"], capsys
    )
    assert code == 2 and "--overwrite" in err


def test_show(task_dir):
    r = runner.invoke(app, ["tasks", "show", "task4", "--tasks", f"dir:{task_dir}", "--digits"])
    assert r.exit_code == 0, r.output
    assert "task task4: 2 train, 2 test" in r.output and "test 1 output ?" in r.output
    r = runner.invoke(app, ["tasks", "show", "00576224", "--hide-answer"])
    assert r.exit_code == 0 and "test 0 output ?" in r.output and "train 0 output 6x6" in r.output


def test_show_unknown_id_suggests(task_dir, capsys):
    code, _, err = run_main(["tasks", "show", "task9", "--tasks", f"dir:{task_dir}"], capsys)
    assert code == 2 and "not in" in err and "did you mean" in err and "task" in err


def test_show_invalid_task_says_why(bad_jsonl, capsys):
    code, _, err = run_main(["tasks", "show", "task1", "--tasks", str(bad_jsonl)], capsys)
    assert code == 2 and "is invalid" in err and "ragged grid" in err


def test_render_grid_uses_arc_colours():
    console = Console(record=True, width=80, color_system="truecolor", force_terminal=True)
    console.print(render_grid(as_grid([[0, 1], [2, 9]])))
    ansi = console.export_text(styles=True, clear=False)
    for c in (ARC_COLOURS[1], ARC_COLOURS[2], ARC_COLOURS[9]):
        r, g, b = (int(c[i : i + 2], 16) for i in (1, 3, 5))
        assert f"48;2;{r};{g};{b}" in ansi
    assert console.export_text() == "    \n    \n"  # two columns per cell, no digits by default


def test_render_task_stacks_when_narrow():
    task = next(t for t in load("arc1:evaluation") if t.train[0].input.shape[1] >= 15)
    wide = Console(record=True, width=200)
    wide.print(render_task(task))
    narrow = Console(record=True, width=40)
    narrow.print(render_task(task))
    assert len(narrow.export_text().splitlines()) > len(wide.export_text().splitlines())


def test_summarize_counts(small_taskset):
    s = summarize(small_taskset)
    assert (s.n_tasks, s.n_train_pairs, s.n_test_pairs) == (5, 10, 6)
    assert s.n_grids == 20 + 8 + 2 and s.unknown_output_ids == ["task4"] and s.duplicates == []
    assert sum(s.colour_cells) == sum(
        g.size for t in small_taskset for p in t.pairs for g in (p.input, p.output) if g is not None
    )


# ----------------------------------------------------------------------------------------- hostile input


def _arcscope(*args):
    """Run the real CLI in a child process; a wide console, so one message is one line of stderr."""
    env = {**os.environ, "COLUMNS": "4000", "NO_COLOR": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "arcscope", *args], capture_output=True, text=True, env=env, timeout=120
    )
    return proc.returncode, proc.stdout, proc.stderr


GOOD = {"train": [{"input": [[1, 2]], "output": [[2, 1]]}], "test": [{"input": [[3]], "output": [[3]]}]}


def _hostile(tmp_path, case):
    """A task source holding one hostile item next to a good one: (spec, words the message must hold)."""
    good = json.dumps(GOOD)
    if case == "huge-int":
        (tmp_path / "h").mkdir()
        (tmp_path / "h" / "fine.json").write_text(good)
        (tmp_path / "h" / "big.json").write_text(good.replace("[[1, 2]]", "[[" + "7" * 5000 + "]]", 1))
        return f"dir:{tmp_path / 'h'}", ["big.json", "task big", "5000-digit number", "0..9"]
    if case == "deep":
        (tmp_path / "h").mkdir()
        (tmp_path / "h" / "fine.json").write_text(good)
        (tmp_path / "h" / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
        return f"dir:{tmp_path / 'h'}", ["deep.json", "task deep", "nested deeper"]
    path = tmp_path / "h_challenges.json"
    path.write_text('{"dup": ' + good + ', "fine": ' + good + ', "dup": ' + good + "}")
    return f"kaggle:{path}", ["h_challenges.json", "task dup", "duplicate task id"]


@pytest.mark.parametrize("case", ["huge-int", "deep", "repeated-id"])
def test_hostile_task_files_give_one_line_and_exit_2(tmp_path, case):
    spec, words = _hostile(tmp_path, case)
    for args in (["validate", "-t", spec], ["convert", "-t", spec, "-o", f"jsonl:{tmp_path / 'o.jsonl'}"]):
        code, _, err = _arcscope("tasks", *args, "-q")
        assert code == 2, err
        assert len(err.strip().splitlines()) == 1 and err.startswith("error: "), err
        assert all(w in err for w in words), err
    assert not (tmp_path / "o.jsonl").exists()
    # --on-error skip: the batch goes on, writes the good task and names the bad one.
    code, out, err = _arcscope(
        "tasks", "convert", "-t", spec, "-o", f"jsonl:{tmp_path / 'o.jsonl'}", "-q", "--on-error", "skip"
    )
    kept = ["dup", "fine"] if case == "repeated-id" else ["fine"]  # the first "dup" is kept
    assert code == 0 and f"wrote {len(kept)} tasks" in out and "(1 skipped)" in out, err
    assert "Traceback" not in err and all(w in err for w in words), err
    assert [t.id for t in load(f"jsonl:{tmp_path / 'o.jsonl'}")] == kept


def test_task_id_too_long_for_dir_output_gives_one_line_and_exit_2(tmp_path):
    src = tmp_path / "long.jsonl"
    src.write_text("".join(json.dumps({"id": tid, **GOOD}) + "\n" for tid in ("a" * 300, "fine")))
    out = tmp_path / "out"
    code, _, err = _arcscope("tasks", "convert", "-t", f"jsonl:{src}", "-o", f"dir:{out}", "-q")
    assert code == 2 and len(err.strip().splitlines()) == 1 and err.startswith("error: "), err
    assert f"{out}, task aaaa" in err and "(300 characters)" in err and "at most 200 bytes" in err, err
    assert not out.exists()
    code, stdout, err = _arcscope(
        "tasks", "convert", "-t", f"jsonl:{src}", "-o", f"dir:{out}", "-q", "--on-error", "skip"
    )
    assert code == 0 and "wrote 1 tasks" in stdout and "(1 skipped)" in stdout, err
    assert "at most 200 bytes" in err and "Traceback" not in err
    assert [p.name for p in out.iterdir()] == ["fine.json"]
