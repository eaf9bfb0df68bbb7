"""The program runner: statuses, time limits, bad files, engines giving identical results, profile, CLI."""

from __future__ import annotations

import importlib.util
import json
import textwrap

import pytest

import arcscope.dsl.corpus as corpus
from arcscope.dsl import runner
from arcscope.dsl.runner import ProgramError, ProgramSource, load_programs, run_programs
from arcscope.tasks import load

TASKS = ["3c9b0459", "6150a2bd", "68b16354", "74dd1130", "a416b8f3", "c8f0f002"]

MIXED = textwrap.dedent(
    """
    from dsl import *          # arc-dsl's own import lines, resolved to arcscope.dsl
    from constants import *

    def solve_3c9b0459(I):
        return rot180(I)               # solved

    def solve_6150a2bd(I):
        return rot90(I)                # wrong

    def solve_68b16354(I):
        x1 = objects(I, T, F, T)
        return first(x1)[5]            # raises (index into a frozenset)

    def solve_74dd1130(I):
        return asindices(I)            # invalid: not a grid

    def solve_a416b8f3(I):
        while True:                    # times out
            pass

    def solve_c8f0f002(I):
        try:
            while True:
                pass
        except Exception:              # cannot swallow the time limit
            return I

    def solve_00000000(I):             # no such task
        return I
    """
)


@pytest.fixture(scope="module")
def taskset():
    return load("arc1:training").filter(lambda t: t.id in TASKS)


@pytest.fixture()
def mixed(tmp_path):
    path = tmp_path / "mixed.py"
    path.write_text(MIXED)
    return path


def test_statuses_are_recorded_per_program_and_the_run_goes_on(mixed, taskset):
    report = run_programs(mixed, taskset, engine="sequential", time_limit=0.3)
    status = {r.task_id: r.status for r in report.results}
    assert status == {
        "3c9b0459": "solved",
        "6150a2bd": "wrong",
        "68b16354": "raised",
        "74dd1130": "invalid",
        "a416b8f3": "timeout",
        "c8f0f002": "timeout",
    }
    by_id = {r.task_id: r for r in report.results}
    assert "TypeError" in by_id["68b16354"].error and "line" in by_id["68b16354"].error
    # After a timeout the remaining pairs are not run.
    assert [p.status for p in by_id["a416b8f3"].pairs][1:] == ["skipped"] * (len(by_id["a416b8f3"].pairs) - 1)
    assert all(p.status == "correct" for p in by_id["3c9b0459"].pairs)
    assert report.no_task == [(str(mixed), "solve_00000000")]
    assert report.counts() == {"solved": 1, "wrong": 1, "invalid": 1, "raised": 1, "timeout": 2}
    assert json.loads(json.dumps(report.to_json()))["counts"]["timeout"] == 2


def test_bundled_corpus_solves_every_task():
    report = run_programs(corpus.__file__, "arc1:training", engine="sequential")
    assert len(report.results) >= 30
    assert report.counts()["solved"] == len(report.results)


def test_sequential_process_and_ray_give_identical_results(mixed, taskset):
    runs = {
        "sequential": run_programs([mixed, corpus.__file__], taskset, engine="sequential", time_limit=0.5)
    }
    for method in ("fork", "spawn"):  # forked workers inherit the loaded programs; spawned ones load them
        runs[method] = run_programs(
            [mixed, corpus.__file__],
            taskset,
            engine="process",
            workers=2,
            time_limit=0.5,
            start_method=method,
        )
    if importlib.util.find_spec("ray") is not None:
        runs["ray"] = run_programs([mixed, corpus.__file__], taskset, engine="ray", workers=2, time_limit=0.5)
    outcomes = {k: [r.outcome() for r in v.results] for k, v in runs.items()}
    assert len(outcomes["sequential"]) == 6 + 6
    for name, got in outcomes.items():
        assert got == outcomes["sequential"], name


def test_process_engine_kills_a_worker_that_ignores_the_alarm(tmp_path, taskset, monkeypatch):
    path = tmp_path / "stuck.py"
    path.write_text(
        "import signal\n"
        "from arcscope.dsl import *\n"
        "def solve_3c9b0459(I):\n"
        "    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})\n"
        "    while True:\n"
        "        pass\n"
        "def solve_6150a2bd(I):\n"
        "    return rot180(I)\n"
    )
    monkeypatch.setattr(runner.job, "_HARD_GRACE", 0.5)
    report = run_programs(path, taskset, engine="process", workers=2, time_limit=0.2)
    status = {r.task_id: (r.status, r.error) for r in report.results}
    assert status["6150a2bd"] == ("solved", None)
    assert status["3c9b0459"][0] == "timeout" and "worker killed" in status["3c9b0459"][1]


@pytest.mark.parametrize(
    "text, message",
    [
        ("def solve_x(I)\n    return I\n", "line 1: syntax error"),
        (
            "from dsl import *\nimport not_a_module_anywhere\n",
            "line 2: loading the file raised ModuleNotFoundError",
        ),
        ("def helper(I):\n    return I\n", "no solve_<task_id> functions"),
    ],
)
def test_bad_programs_file_is_a_clear_error(tmp_path, text, message, taskset):
    path = tmp_path / "bad.py"
    path.write_text(text)
    with pytest.raises(ProgramError, match=message) as info:
        run_programs(path, taskset, engine="sequential")
    assert str(path) in str(info.value)
    report = run_programs([path, corpus.__file__], taskset, engine="sequential", on_error="skip")
    assert report.skipped and report.skipped[0][0] == str(path)
    assert report.counts()["solved"] == len(report.results) == 6


def test_missing_file_and_missing_entry(tmp_path):
    with pytest.raises(ProgramError, match="no such programs file"):
        load_programs(tmp_path / "nope.py")
    with pytest.raises(ProgramError, match="no function named 'main'"):
        load_programs(ProgramSource("x.py", "def solve(I):\n    return I\n"), entry="main")


def test_entry_runs_one_function_on_every_task(taskset):
    src = ProgramSource("entry.py", "from arcscope.dsl import *\ndef flipper(I):\n    return rot180(I)\n")
    report = run_programs(src, taskset, entry="flipper", engine="sequential")
    assert {r.task_id for r in report.results} == set(TASKS)
    assert {r.program for r in report.results} == {"flipper"}
    assert {r.task_id for r in report.results if r.status == "solved"} == {"3c9b0459", "6150a2bd"}


def test_profile_names_the_slowest_primitives(taskset):
    src = ProgramSource(
        "prof.py",
        "from arcscope.dsl import *\ndef solve_3c9b0459(I):\n    return rot180(fill(I, ZERO, merge(objects(I, T, F, T))))\n",
    )
    report = run_programs(src, taskset, engine="sequential", profile=True)
    assert report.results[0].status == "wrong"  # it runs; it is just not the task's rule
    assert {"objects", "fill", "rot180"} <= set(report.profile)
    top = report.top_primitives(3)
    assert len(top) == 3 and top[0][1]["self_s"] >= top[-1][1]["self_s"]
    assert report.profile["rot180"]["calls"] == 5  # 4 train + 1 test pair
    assert run_programs(src, taskset, engine="sequential").profile is None


def test_bad_arguments_are_arcscope_errors(taskset):
    from arcscope.errors import ArcscopeError

    with pytest.raises(ArcscopeError, match="unknown engine"):
        run_programs(corpus.__file__, taskset, engine="threads")
    with pytest.raises(ArcscopeError, match="time_limit must be positive"):
        run_programs(corpus.__file__, taskset, time_limit=0)
    with pytest.raises(ArcscopeError, match="unknown object order 'sorted'"):
        run_programs(corpus.__file__, taskset, order="sorted")


ORDER_PROBE = textwrap.dedent(
    """
    from arcscope.dsl import *
    from arcscope.dsl import fast

    def solve_3c9b0459(I):
        # Raises unless objects() runs in the order mode the run asked for.
        if fast.object_order() != WANT:
            raise RuntimeError("objects order is " + fast.object_order())
        return rot180(I)
    """
)


@pytest.mark.parametrize("engine", ["sequential", "process"])
@pytest.mark.parametrize("order", ["exact", "fast"])
def test_order_mode_reaches_the_programs_and_is_restored(tmp_path, taskset, engine, order):
    from arcscope.dsl import fast

    path = tmp_path / "probe.py"
    path.write_text(f"WANT = {order!r}\n" + ORDER_PROBE)
    before = fast.object_order()
    report = run_programs(path, taskset, engine=engine, workers=2, order=order)
    assert [r.status for r in report.results] == ["solved"], report.results[0].error
    assert report.order == order and report.to_json()["order"] == order
    assert fast.object_order() == before


def test_cli_run_primitives_and_errors(tmp_path, mixed, capsys):
    from typer.testing import CliRunner

    from arcscope.cli import app, main

    cli = CliRunner()
    out = tmp_path / "report.json"
    result = cli.invoke(
        app,
        [
            "dsl",
            "run",
            str(mixed),
            "-t",
            "arc1:training",
            "--engine",
            "sequential",
            "--time-limit",
            "0.3",
            "--json",
            str(out),
            "--details",
            "--order",
            "fast",
            "-q",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "solve_6150a2bd" in result.output and "timed out" in result.output
    assert "objects order fast" in result.output
    assert json.loads(out.read_text())["order"] == "fast"
    assert json.loads(out.read_text())["counts"] == {
        "solved": 1,
        "wrong": 1,
        "invalid": 1,
        "raised": 1,
        "timeout": 2,
    }
    result = cli.invoke(app, ["dsl", "primitives", "--plain"])
    assert result.exit_code == 0 and len(result.output.split()) == 160
    bad = tmp_path / "bad.py"
    bad.write_text("def solve_x(I)\n")
    with pytest.raises(SystemExit) as info:
        main(["dsl", "run", str(bad), "-t", "arc1:training", "--engine", "sequential", "-q"])
    assert info.value.code == 2
    assert "syntax error" in capsys.readouterr().err


HARD_GOOD = textwrap.dedent(
    """
    import os
    import signal
    from arcscope.dsl import *

    def solve_68b16354(I):
        return first(objects(I, T, F, T))[5]   # raises (same line in both files)
    {stuck}
    def solve_6150a2bd(I):
        return rot180(I)                       # solved
    {dies}
    def solve_74dd1130(I):
        return rot90(I)                        # wrong

    def solve_c8f0f002(I):
        while True:                            # times out by the alarm
            pass
    """
)
STUCK = """
def solve_3c9b0459(I):
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})  # the alarm cannot stop it
    while True:
        pass
"""
DIES = """
def solve_a416b8f3(I):
    os.kill(os.getpid(), signal.SIGKILL)  # its worker dies under it
"""


@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="needs ray")
def test_ray_engine_kills_a_stuck_worker_and_survives_a_dead_one(monkeypatch):
    # One file name, two texts: with and without the stuck and the dying program. With the bundled corpus on
    # all of arc1:training (48 jobs, 2 workers) the runner sends this file's six jobs as one chunk, so the
    # stuck job's chunk is cut short and the dying job's worker takes unreported jobs down with it.
    good = ProgramSource("programs.py", HARD_GOOD.format(stuck="", dies=""))
    bad = ProgramSource("programs.py", HARD_GOOD.format(stuck=STUCK, dies=DIES))
    tasks = load("arc1:training")
    monkeypatch.setattr(runner.job, "_HARD_GRACE", 0.5)
    seen = []
    report = run_programs(
        [bad, corpus.__file__], tasks, engine="ray", workers=2, time_limit=0.2, on_result=seen.append
    )
    expected = run_programs([good, corpus.__file__], tasks, engine="sequential", time_limit=0.2)
    by_name = {(r.source, r.program): r for r in report.results}
    stuck, dead = by_name["programs.py", "solve_3c9b0459"], by_name["programs.py", "solve_a416b8f3"]
    assert stuck.status == "timeout" and "worker killed" in stuck.error
    assert dead.status == "raised" and dead.error == "worker process died"
    rest = [r.outcome() for r in report.results if r not in (stuck, dead)]
    assert rest == [r.outcome() for r in expected.results]
    assert {r.status for r in expected.results} == {"solved", "wrong", "raised", "timeout"}
    # every job's result is passed on exactly once
    assert sorted(r.outcome() for r in seen) == sorted(r.outcome() for r in report.results)
