"""The HTML task viewer: page content, escaping, prediction marks, `arcscope view`, and a headless browser."""

from __future__ import annotations

import html
import json
import re
import urllib.parse
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from arcscope.errors import TaskFormatError
from arcscope.report.html import ARC_PALETTE, ROW_SEP, encode_grid, script_json
from arcscope.report.viewer import render_viewer, summarize, write_viewer
from arcscope.tasks.core import Pair, Task, as_grid
from tests.browser import dump_dom

EVIL_IDS = [
    "<img src=x onerror=alert(1)>",
    "</script><script>alert(1)</script>",
    "a&amp;b\u2028\u2029<!--",
]


def decode_grid(text: str) -> np.ndarray:
    """Inverse of ``encode_grid`` (pages only ever decode in JS): the uint8 grid encoded in ``text``."""
    rows = text.split(ROW_SEP)
    if not rows or any(len(r) != len(rows[0]) or not r.isdigit() for r in rows):
        raise ValueError(f"not an encoded grid: {text[:40]!r}")
    return np.array([[int(ch) for ch in r] for r in rows], dtype=np.uint8)


def grid(rows: list[list[int]]) -> np.ndarray:
    """A validated grid from nested lists."""
    return as_grid(rows)


def build_task(task_id: str, seed: int = 0, n_train: int = 2, n_test: int = 1, known: bool = True) -> Task:
    """A small random task whose grid sizes vary with the seed."""
    rng = np.random.default_rng(seed)

    def g() -> np.ndarray:
        h, w = (int(x) for x in rng.integers(1, 12, size=2))
        return as_grid(rng.integers(0, 10, size=(h, w)))

    train = tuple(Pair(g(), g()) for _ in range(n_train))
    test = tuple(Pair(g(), g() if known else None) for _ in range(n_test))
    return Task(task_id, train, test)


def page_data(text: str) -> dict:
    """The JSON a viewer page embeds."""
    m = re.search(r'<script id="arcscope-data" type="application/json">(.*?)</script>', text, re.S)
    assert m, "no data element in the page"
    return json.loads(m.group(1))


# --- html helpers -----------------------------------------------------------------------------------------


def test_encode_grid_round_trips_and_rejects_non_grids():
    g = grid([[0, 1, 2], [7, 8, 9]])
    assert encode_grid(g) == "012|789"
    assert np.array_equal(decode_grid(encode_grid(g)), g)
    big = as_grid(np.random.default_rng(1).integers(0, 10, size=(30, 29)))
    assert np.array_equal(decode_grid(encode_grid(big)), big)
    for bad in (np.zeros((0, 3)), np.array([[10]]), np.zeros(4)):
        with pytest.raises(ValueError):
            encode_grid(bad)


def test_script_json_cannot_close_a_script_element():
    obj = {"ids": [*EVIL_IDS, "plain"], "n": 3}
    text = script_json(obj)
    for ch in "<>&\u2028\u2029":
        assert ch not in text
    assert json.loads(text) == obj


# --- the page ---------------------------------------------------------------------------------------------


def test_page_is_self_contained_and_lists_every_task():
    tasks = [build_task(f"t{i:02d}", seed=i) for i in range(12)]
    text = render_viewer(tasks, title="My tasks")
    data = page_data(text)
    assert [t["id"] for t in data["tasks"]] == [t.id for t in tasks]
    for task, rec in zip(tasks, data["tasks"], strict=True):
        assert [decode_grid(s).shape for s in rec["train"][0]] == [
            p.shape for p in (task.train[0].input, task.train[0].output)
        ]
        assert np.array_equal(decode_grid(rec["test"][0]["o"]), task.test[0].output)
    for colour in ARC_PALETTE:
        assert colour in text
    assert "<title>My tasks</title>" in text
    # Nothing is fetched from anywhere: no src/href attributes, no stylesheet links, a CSP that denies fetches.
    assert not re.search(r"\b(src|href)\s*=", text)
    assert "<link" not in text
    csp = re.search(r'http-equiv="Content-Security-Policy" content="([^"]*)"', text)
    assert csp and "default-src 'none'" in html.unescape(csp.group(1))


def test_malicious_ids_are_escaped():
    tasks = [build_task(i, seed=k) for k, i in enumerate(EVIL_IDS)]
    text = render_viewer(tasks, title="<b>title</b>")
    for evil in EVIL_IDS:
        assert evil not in text
    assert "<img" not in text
    assert "<b>title</b>" not in text and "&lt;b&gt;title&lt;/b&gt;" in text
    assert "\u2028" not in text and "\u2029" not in text
    # Only our own two scripts open and close; the ids never end one early.
    assert len(re.findall(r"<script", text, re.I)) == 2
    assert len(re.findall(r"</script", text, re.I)) == 2
    assert [t["id"] for t in page_data(text)["tasks"]] == EVIL_IDS


def test_prediction_marks_and_counts():
    a, b, c, d, e = (build_task(x, seed=k, n_test=2 if x == "b" else 1) for k, x in enumerate("abcde"))
    d = Task("d", d.train, (Pair(d.test[0].input, None),))
    zero = grid([[0]])
    preds = {
        "a": [[zero, a.test[0].output]],  # right on the second attempt
        "b": [[b.test[0].output.tolist(), zero], [zero, zero]],  # one test output of two: wrong
        "d": [[zero]],  # no known answer: unscored
        "e": [[zero, None]],  # wrong, second attempt missing
        "zz": [[zero]],  # not among the tasks
    }
    # task c has no prediction: unscored
    tasks = [a, b, c, d, e]
    s = summarize(tasks, preds)
    assert (s.tasks, s.correct, s.wrong, s.unscored) == (5, 1, 2, 2)
    assert (s.tests_right, s.tests_scored) == (2, 4)
    assert s.extra == ("zz",)
    assert "1 correct, 2 wrong, 2 unscored" in s.line()

    text = render_viewer(tasks, preds)
    for key, value in {
        "correct": 1,
        "wrong": 2,
        "unscored": 2,
        "tests-right": 2,
        "tests-scored": 4,
        "extra": 1,
    }.items():
        assert f'data-count="{key}">{value}<' in text
    recs = {r["id"]: r for r in page_data(text)["tasks"]}
    assert {k: r["status"] for k, r in recs.items()} == {
        "a": "correct",
        "b": "wrong",
        "c": "unscored",
        "d": "unscored",
        "e": "wrong",
    }
    assert [m[1] for m in recs["a"]["test"][0]["a"]] == [0, 1]
    assert [m[1] for m in recs["b"]["test"][0]["a"]] == [1, 0]
    assert [m[1] for m in recs["b"]["test"][1]["a"]] == [0, 0]
    assert recs["d"]["test"][0]["a"] == [["0", None]]
    # a wrong attempt carries how it differs from the truth (here: its shape); a missing one does not
    e_shape = [int(x) for x in e.test[0].output.shape]
    assert recs["e"]["test"][0]["a"] == [["0", 0, {"shape": [1, 1], "expected": e_shape}], [None, 0]]
    assert "a" not in recs["c"]["test"][0]


def test_bad_prediction_grid_names_the_task():
    task = build_task("abc123")
    with pytest.raises(TaskFormatError, match="abc123"):
        render_viewer([task], {"abc123": [[[[11]]]]})


def test_write_viewer_creates_parents(tmp_path):
    out = write_viewer([build_task("x1")], tmp_path / "deep" / "page.html", title="t")
    assert out == tmp_path / "deep" / "page.html"
    assert "x1" in out.read_text(encoding="utf-8")


# --- the CLI ----------------------------------------------------------------------------------------------


def _invoke(args: list[str]):
    from typer.testing import CliRunner

    from arcscope.cli import app

    return CliRunner().invoke(app, args)


def test_cli_view_dir_with_predictions(tmp_path):
    src = tmp_path / "tasks"
    src.mkdir()
    tasks = [build_task(f"{i:08x}", seed=i) for i in range(3)]
    for t in tasks:
        (src / f"{t.id}.json").write_text(json.dumps(t.to_json()))
    sub = {
        tasks[0].id: [{"attempt_1": tasks[0].test[0].output.tolist(), "attempt_2": [[0]]}],
        tasks[1].id: [{"attempt_1": [[0]], "attempt_2": [[0]]}],
    }
    (tmp_path / "submission.json").write_text(json.dumps(sub))
    out = tmp_path / "page.html"
    res = _invoke(["view", f"dir:{src}", "--predictions", str(tmp_path / "submission.json"), "-o", str(out)])
    assert res.exit_code == 0, res.output
    text = out.read_text(encoding="utf-8")
    assert sorted(t["id"] for t in page_data(text)["tasks"]) == sorted(t.id for t in tasks)
    assert 'data-count="correct">1<' in text and 'data-count="wrong">1<' in text
    assert "1 correct, 1 wrong, 1 unscored" in res.output


def test_cli_view_arc1_evaluation_limit(tmp_path):
    from arcscope.tasks import load

    out = tmp_path / "eval.html"
    res = _invoke(["view", "arc1:evaluation", "--limit", "20", "-o", str(out)])
    assert res.exit_code == 0, res.output
    ids = [t["id"] for t in page_data(out.read_text(encoding="utf-8"))["tasks"]]
    assert ids == [t.id for t in load("arc1:evaluation")][:20]


def test_cli_view_skips_bad_tasks_when_asked(tmp_path):
    src = tmp_path / "tasks"
    src.mkdir()
    (src / "good.json").write_text(json.dumps(build_task("good").to_json()))
    (src / "bad.json").write_text(json.dumps({"train": [], "test": []}))
    out = tmp_path / "page.html"
    res = _invoke(["view", f"dir:{src}", "--on-error", "skip", "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert [t["id"] for t in page_data(out.read_text(encoding="utf-8"))["tasks"]] == ["good"]
    assert "skipped 1" in res.output


def test_cli_view_bad_source_exits_2_without_a_page(tmp_path):
    from arcscope.cli import main

    out = tmp_path / "page.html"
    with pytest.raises(SystemExit) as exc:
        main(["view", f"dir:{tmp_path / 'missing'}", "-o", str(out)])
    assert exc.value.code == 2
    assert not out.exists()


# --- headless browser -------------------------------------------------------------------------------------


class _Dom(HTMLParser):
    """Collects task cards, their canvases and a few summary fields from a dumped DOM."""

    def __init__(self) -> None:
        super().__init__()
        self.cards: list[dict] = []
        self.imgs = 0
        self.shown: str | None = None
        self._text: str | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "section" and "data-task-id" in a:
            self.cards.append({"attrs": a, "canvases": [], "tid": ""})
        elif tag == "canvas" and self.cards:
            self.cards[-1]["canvases"].append(a)
        elif tag == "img":
            self.imgs += 1
        elif tag == "span" and a.get("class") == "tid":
            self._text = "tid"
        elif tag == "b" and a.get("id") == "shown":
            self._text = "shown"

    def handle_endtag(self, tag):
        self._text = None

    def handle_data(self, data):
        if self._text == "tid":
            self.cards[-1]["tid"] += data
        elif self._text == "shown":
            self.shown = data


def _dump_dom(page: Path, fragment: str, profile: Path) -> _Dom:
    """Open ``page#fragment`` in headless chromium, let its scripts run, and parse the resulting DOM."""
    dom = _Dom()
    dom.feed(dump_dom(page, fragment, profile))
    assert dom.cards, "no task cards in the DOM: did the page script run?"
    return dom


def _expected_shapes(task: Task, attempts: list[list[np.ndarray | None]] | None) -> list[tuple[int, int]]:
    """Grid shapes a rendered card draws, in page order."""
    shapes = []
    for p in task.train:
        shapes += [p.input.shape, p.output.shape]
    for k, p in enumerate(task.test):
        shapes.append(p.input.shape)
        if p.output is not None:
            shapes.append(p.output.shape)
        if attempts is not None and k < len(attempts):
            shapes += [a.shape for a in attempts[k] if a is not None]
    return [tuple(int(x) for x in s) for s in shapes]


def _check_rendered(card: dict, task: Task, preds: dict) -> None:
    """A rendered card shows exactly its task's grids, with cell counts matching their sizes."""
    assert card["attrs"]["data-rendered"] == "1"
    got = [(int(c["data-h"]), int(c["data-w"])) for c in card["canvases"]]
    assert got == _expected_shapes(task, preds.get(task.id))
    for c in card["canvases"]:
        assert c["data-rendered"] == "1"
        assert int(c["data-cells"]) == int(c["data-h"]) * int(c["data-w"]) > 0


@pytest.fixture(scope="module")
def browser_page(tmp_path_factory):
    """A page of 60 tasks (one with a hostile id) and predictions for some of them."""
    tasks = [build_task(f"task{i:03d}x", seed=i, n_test=1 + i % 2) for i in range(60)]
    tasks[1] = build_task(EVIL_IDS[0], seed=1)
    preds: dict = {}
    for i, t in enumerate(tasks[:30]):
        right = i % 3 != 0
        preds[t.id] = [[grid([[1, 2]]), p.output if right else grid([[3]])] for p in t.test]
    path = write_viewer(tasks, tmp_path_factory.mktemp("viewer") / "page.html", predictions=preds)
    return path, tasks, preds


@pytest.mark.browser
def test_browser_renders_cards_in_view_lazily(browser_page, tmp_path):
    path, tasks, preds = browser_page
    dom = _dump_dom(path, "", tmp_path / "profile")
    assert [c["attrs"]["data-task-id"] for c in dom.cards] == [t.id for t in tasks]
    rendered = [i for i, c in enumerate(dom.cards) if c["attrs"]["data-rendered"] == "1"]
    # The first screen renders without scrolling; cards far below it stay empty until scrolled to.
    assert rendered and rendered[0] == 0
    assert len(rendered) < len(tasks)
    for i, card in enumerate(dom.cards):
        if i in rendered:
            _check_rendered(card, tasks[i], preds)
        else:
            assert card["canvases"] == []
    assert sum(int(c["data-cells"]) for i in rendered for c in dom.cards[i]["canvases"]) > 0
    # The hostile id is text, not markup.
    assert dom.imgs == 0
    assert dom.cards[1]["tid"] == EVIL_IDS[0]
    assert dom.shown == str(len(tasks))


@pytest.mark.browser
def test_browser_filter_by_id_from_url_hash(browser_page, tmp_path):
    path, tasks, preds = browser_page
    target = tasks[47]
    dom = _dump_dom(path, "filter=" + urllib.parse.quote(target.id), tmp_path / "profile")
    visible = [c for c in dom.cards if c["attrs"]["data-hidden"] == "0"]
    assert [c["attrs"]["data-task-id"] for c in visible] == [target.id]
    assert "hidden" not in visible[0]["attrs"]
    assert all("hidden" in c["attrs"] for c in dom.cards if c is not visible[0])
    # The one card left moved to the top, into view, and drew its grids.
    _check_rendered(visible[0], target, preds)
    assert dom.shown == "1"


@pytest.mark.browser
def test_browser_filter_by_status(browser_page, tmp_path):
    path, tasks, preds = browser_page
    dom = _dump_dom(path, "status=wrong", tmp_path / "profile")
    visible = [c["attrs"]["data-task-id"] for c in dom.cards if c["attrs"]["data-hidden"] == "0"]
    expected = [t.id for i, t in enumerate(tasks[:30]) if i % 3 == 0]
    assert visible == expected
    assert dom.shown == str(len(expected))


# --- wrong answers: which cells differ ----------------------------------------------------------------------


def _diff_task() -> tuple[Task, dict]:
    truth = grid([[1, 2, 3], [4, 5, 6], [7, 8, 9]])
    close = truth.copy()
    close[0, 1], close[2, 0] = 0, 0
    task = Task("diffs", (Pair(grid([[0]]), grid([[1]])),), (Pair(grid([[5]]), truth),))
    return task, {"diffs": [[close, grid([[1, 2, 3, 4]] * 3), truth]]}


def test_grid_diff_marks_cells_or_names_the_shape():
    from arcscope.report.viewer import diff_text, grid_diff

    task, preds = _diff_task()
    truth = task.test[0].output
    close, other, _ = preds["diffs"][0]
    d = grid_diff(close, truth)
    assert d == {"wrong": 2, "cells": 9, "mask": "010|000|100"} and diff_text(d) == "2 of 9 cells wrong"
    d = grid_diff(other, truth)
    assert d == {"shape": [3, 4], "expected": [3, 3]} and diff_text(d) == "shape 3x4, expected 3x3"
    marks = page_data(render_viewer([task], preds))["tasks"][0]["test"][0]["a"]
    assert [len(m) for m in marks] == [3, 3, 2]  # the right attempt carries no diff
    assert marks[0][2]["mask"] == "010|000|100" and marks[1][2]["shape"] == [3, 4]


class _Attempts(HTMLParser):
    """Attempt figures of a dumped DOM: their attributes, cell outlines and diff notes."""

    def __init__(self) -> None:
        super().__init__()
        self.figs: list[dict] = []
        self._note = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "figure" and "attempt" in (a.get("class") or "").split():
            self.figs.append({"attrs": a, "cells": [], "note": ""})
        elif tag == "i" and a.get("class") == "cell-diff" and self.figs:
            self.figs[-1]["cells"].append((int(a["data-r"]), int(a["data-c"]), a.get("title")))
        elif tag == "span" and a.get("class") == "diffnote":
            self._note = True

    def handle_endtag(self, tag):
        self._note = False

    def handle_data(self, data):
        if self._note:
            self.figs[-1]["note"] += data


@pytest.mark.browser
def test_browser_outlines_the_wrong_cells(tmp_path):
    task, preds = _diff_task()
    path = write_viewer([task], tmp_path / "diff.html", predictions=preds)
    dom = _Attempts()
    dom.feed(dump_dom(path, "", tmp_path / "profile"))
    close, other, right = dom.figs
    assert close["cells"] == [(0, 1, "row 0, col 1: 0, expected 2"), (2, 0, "row 2, col 0: 0, expected 7")]
    assert close["attrs"]["data-wrong-cells"] == "2" and close["attrs"]["data-diff-cells"] == "0,1 2,0"
    assert "cells-wrong" in close["attrs"]["class"] and close["note"] == "2 of 9 cells wrong"
    assert other["cells"] == [] and other["note"] == "shape 3x4, expected 3x3"
    assert "shape-mismatch" in other["attrs"]["class"] and other["attrs"]["data-expected"] == "3x3"
    assert right["cells"] == [] and right["note"] == "" and "right" in right["attrs"]["class"]
