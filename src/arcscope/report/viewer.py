"""The task viewer: one self-contained HTML page of tasks, their grids and, optionally, predictions.

The page embeds every task once as compact JSON and draws a task's grids only when its card scrolls into
view (IntersectionObserver), so a page of 800 tasks opens quickly. A filter box (task id substring) and a
status menu (all / correct / wrong / unscored) narrow the list; both can be set from the URL hash, e.g.
``page.html#filter=0a1d4ef5&status=wrong``. A wrong attempt shows how it differs from the truth: the cells that
differ are outlined and counted ("2 of 9 cells wrong"), or the page says the shape differs ("shape 3x4,
expected 3x3").
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from arcscope.files import atomic_write_text
from arcscope.report.html import GRID_JS, encode_grid, escape, page, palette_legend
from arcscope.tasks.core import Grid, Task, as_grid, grids_equal

Predictions = Mapping[str, Sequence[Sequence[Any]]]
"""Task id -> one list of attempts per test pair (what ``read_submission`` returns)."""

STATUSES: tuple[str, ...] = ("correct", "wrong", "unscored")
"""A task is correct when every test output with a known answer was hit by some attempt, wrong when one was
missed, and unscored when it has no prediction or no known test output."""


@dataclass(frozen=True)
class ViewerSummary:
    """The counts shown at the top of a viewer page."""

    tasks: int
    correct: int
    wrong: int
    unscored: int
    tests_right: int
    """Test outputs with a known answer that some attempt matched."""
    tests_scored: int
    """Test outputs with a known answer, in tasks that have a prediction."""
    extra: tuple[str, ...] = ()
    """Predicted task ids that are not among the tasks shown."""

    def line(self) -> str:
        """The summary as one line of plain text."""
        text = (
            f"{self.tasks} tasks: {self.correct} correct, {self.wrong} wrong, {self.unscored} unscored; "
            f"{self.tests_right}/{self.tests_scored} test outputs right"
        )
        if self.extra:
            text += f"; {len(self.extra)} predicted task(s) not shown"
        return text


def _attempt_grid(obj: Any, task_id: str, where: str) -> Grid | None:
    """A predicted grid validated at the boundary, or None for a missing attempt."""
    if obj is None:
        return None
    return as_grid(obj, source="predictions", task_id=task_id, where=where)


def grid_diff(predicted: Grid, truth: Grid) -> dict[str, Any]:
    """How a predicted grid differs from the truth, as the page shows it.

    Same shape: ``{"wrong": k, "cells": n, "mask": ...}`` with the mask in :func:`encode_grid` text (1 where
    the cells differ); another shape: ``{"shape": [h, w], "expected": [H, W]}``.
    """
    p, t = np.asarray(predicted), np.asarray(truth)
    if p.shape != t.shape:
        return {"shape": [int(x) for x in p.shape], "expected": [int(x) for x in t.shape]}
    differ = p != t
    return {
        "wrong": int(differ.sum()),
        "cells": int(differ.size),
        "mask": encode_grid(differ.astype(np.uint8)),
    }


def diff_text(diff: Mapping[str, Any]) -> str:
    """A :func:`grid_diff` as words: ``2 of 9 cells wrong`` or ``shape 3x4, expected 3x3``."""
    if "shape" in diff:
        (h, w), (eh, ew) = diff["shape"], diff["expected"]
        return f"shape {h}x{w}, expected {eh}x{ew}"
    return f"{diff['wrong']} of {diff['cells']} cells wrong"


def _task_record(task: Task, attempts: Sequence[Sequence[Any]] | None) -> tuple[dict[str, Any], int, int]:
    """The page's JSON record for one task, with (test outputs right, test outputs scored)."""
    right = scored = 0
    tests = []
    for k, pair in enumerate(task.test):
        rec: dict[str, Any] = {
            "i": encode_grid(pair.input),
            "o": None if pair.output is None else encode_grid(pair.output),
        }
        if attempts is not None:
            tries = list(attempts[k]) if k < len(attempts) and attempts[k] is not None else []
            marks = []
            hit = False
            for j, raw in enumerate(tries):
                grid = _attempt_grid(raw, task.id, f"test[{k}] attempt {j + 1}")
                ok = None if pair.output is None else int(grid is not None and grids_equal(grid, pair.output))
                hit = hit or ok == 1
                mark: list[Any] = [None if grid is None else encode_grid(grid), ok]
                if ok == 0 and grid is not None:
                    assert pair.output is not None
                    mark.append(grid_diff(grid, pair.output))
                marks.append(mark)
            rec["a"] = marks
            if pair.output is not None:
                scored += 1
                right += int(hit)
        tests.append(rec)
    if attempts is None or scored == 0:
        status = "unscored"
    else:
        status = "correct" if right == scored else "wrong"
    record = {
        "id": task.id,
        "status": status,
        "train": [[encode_grid(p.input), encode_grid(p.output)] for p in task.train],
        "test": tests,
    }
    return record, right, scored


def _build(
    tasks: Iterable[Task], predictions: Predictions | None
) -> tuple[list[dict[str, Any]], ViewerSummary]:
    """Records for the page and the summary, computed in one pass."""
    records = []
    counts = dict.fromkeys(STATUSES, 0)
    tests_right = tests_scored = 0
    seen: set[str] = set()
    for task in tasks:
        seen.add(task.id)
        attempts = None if predictions is None else predictions.get(task.id)
        rec, right, scored = _task_record(task, attempts)
        records.append(rec)
        counts[rec["status"]] += 1
        tests_right += right
        tests_scored += scored
    extra = tuple(sorted(k for k in (predictions or {}) if k not in seen))
    summary = ViewerSummary(
        len(records), tests_right=tests_right, tests_scored=tests_scored, extra=extra, **counts
    )
    return records, summary


def summarize(tasks: Iterable[Task], predictions: Predictions | None = None) -> ViewerSummary:
    """The counts a viewer page of these tasks and predictions would show."""
    return _build(tasks, predictions)[1]


VIEWER_CSS = """
.controls{display:flex;gap:8px;align-items:center;flex-wrap:wrap}
.controls input{font:inherit;padding:4px 8px;min-width:16em;border:1px solid var(--line);border-radius:4px}
.controls select{font:inherit;padding:3px 6px;border:1px solid var(--line);border-radius:4px}
.summary{color:var(--muted);display:flex;gap:12px;flex-wrap:wrap}
.summary b{color:var(--fg)}
.summary .correct b{color:var(--ok)} .summary .wrong b{color:var(--bad)}
section.task{background:var(--card);border:1px solid var(--line);border-radius:6px;margin:0 0 12px;
padding:8px 12px}
section.task[hidden]{display:none}
.task-head{display:flex;gap:10px;align-items:baseline;flex-wrap:wrap}
.tid{font:600 14px ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;overflow-wrap:anywhere}
.badge{font-size:11px;padding:1px 6px;border-radius:9px;color:#fff;background:var(--unk)}
.badge.correct{background:var(--ok)} .badge.wrong{background:var(--bad)}
.meta{color:var(--muted);font-size:12px}
.task[data-rendered="0"] .task-body{min-height:150px}
.row{display:flex;flex-wrap:wrap;gap:10px 22px;align-items:flex-start;margin-top:8px}
.row h3{font-size:12px;color:var(--muted);margin:0;width:3.5em;font-weight:500}
.pair{display:flex;gap:6px;align-items:center}
.arrow{color:var(--muted)}
figure{margin:0;display:flex;flex-direction:column;align-items:center;gap:2px}
figcaption{font-size:11px;color:var(--muted)}
figure.attempt{padding:3px;border:2px solid var(--unk);border-radius:4px}
figure.attempt.right{border-color:var(--ok)} figure.attempt.wrong{border-color:var(--bad)}
figure.attempt.right figcaption{color:var(--ok)} figure.attempt.wrong figcaption{color:var(--bad)}
.noattempt{font-size:12px;color:var(--muted);align-self:center}
.gridwrap{position:relative}
.cell-diff{position:absolute;box-sizing:border-box;border:2px solid #fff;outline:1px solid #000;
pointer-events:none}
.diffnote{font-size:11px;color:var(--bad)}
#empty{color:var(--muted)}
"""

VIEWER_JS = """
(function () {
  "use strict";
  const DATA = JSON.parse(document.getElementById("arcscope-data").textContent);
  const TASKS = DATA.tasks;
  const STATUSES = ["all", "correct", "wrong", "unscored"];
  const list = document.getElementById("tasks");
  const box = document.getElementById("filter");
  const menu = document.getElementById("status");
  const shown = document.getElementById("shown");
  const empty = document.getElementById("empty");
  const cards = [];

  // Untrusted text (task ids) only ever goes in through textContent.
  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = text;
    return e;
  }
  function figure(grid, caption, cls) {
    const f = el("figure", cls || null);
    f.append(grid ? drawGrid(grid) : el("div", "nogrid", "?"), el("figcaption", null, caption));
    return f;
  }
  // A wrong attempt: outline each cell that differs from the truth (same shape) and say how many, or
  // say that the shape differs. The outlines are elements over the canvas, one per differing cell.
  function markDiff(f, d, pred, truth) {
    const note = el("span", "diffnote");
    if (d.shape) {
      f.classList.add("shape-mismatch");
      f.dataset.shape = d.shape[0] + "x" + d.shape[1];
      f.dataset.expected = d.expected[0] + "x" + d.expected[1];
      note.textContent = "shape " + f.dataset.shape + ", expected " + f.dataset.expected;
    } else {
      const cv = f.querySelector("canvas");
      const rows = d.mask.split("|");
      const h = rows.length, w = rows[0].length;
      const cs = gridCellSize(h, w, 150);
      const gap = cs >= 6 ? 1 : 0;
      const wrap = el("div", "gridwrap");
      cv.replaceWith(wrap);
      wrap.append(cv);
      const got = pred.split("|"), want = truth.split("|");
      const where = [];
      for (let r = 0; r < h; r++) {
        for (let c = 0; c < w; c++) {
          if (rows[r].charAt(c) !== "1") continue;
          const m = el("i", "cell-diff");
          m.style.left = c * cs + "px";
          m.style.top = r * cs + "px";
          m.style.width = m.style.height = cs + gap + "px";
          m.dataset.r = String(r);
          m.dataset.c = String(c);
          m.title = "row " + r + ", col " + c + ": " + got[r].charAt(c) + ", expected " + want[r].charAt(c);
          wrap.append(m);
          where.push(r + "," + c);
        }
      }
      f.classList.add("cells-wrong");
      f.dataset.wrongCells = String(d.wrong);
      f.dataset.diffCells = where.join(" ");
      note.textContent = d.wrong + " of " + d.cells + " cells wrong";
    }
    f.append(note);
  }
  function renderCard(card) {
    if (card.dataset.rendered === "1") return;
    const t = TASKS[Number(card.dataset.index)];
    const body = card.querySelector(".task-body");
    const train = el("div", "row train");
    train.append(el("h3", null, "train"));
    t.train.forEach(function (p, k) {
      const d = el("div", "pair");
      d.append(figure(p[0], "in " + k), el("span", "arrow", "\\u2192"), figure(p[1], "out " + k));
      train.append(d);
    });
    const test = el("div", "row test");
    test.append(el("h3", null, "test"));
    t.test.forEach(function (p, k) {
      const d = el("div", "pair");
      d.append(figure(p.i, "test " + k), el("span", "arrow", "\\u2192"),
               figure(p.o, p.o ? "truth" : "truth unknown", "truth"));
      if (p.a && p.a.length) {
        p.a.forEach(function (a, j) {
          const cls = a[1] === 1 ? "right" : a[1] === 0 ? "wrong" : "unmarked";
          const mark = a[1] === 1 ? " \\u2713" : a[1] === 0 ? " \\u2717" : "";
          const f = figure(a[0], "attempt " + (j + 1) + mark, "attempt " + cls);
          f.dataset.correct = a[1] === null ? "" : String(a[1]);
          if (a[2] && a[0] && p.o) markDiff(f, a[2], a[0], p.o);
          d.append(f);
        });
      } else if (DATA.has_predictions) {
        d.append(el("span", "noattempt", "no prediction"));
      }
      test.append(d);
    });
    body.append(train, test);
    card.dataset.rendered = "1";
  }

  function build() {
    const frag = document.createDocumentFragment();
    TASKS.forEach(function (t, i) {
      const card = el("section", "task");
      card.dataset.index = String(i);
      card.dataset.taskId = t.id;
      card.dataset.status = t.status;
      card.dataset.rendered = "0";
      card.dataset.hidden = "0";
      const head = el("div", "task-head");
      head.append(el("span", "tid", t.id));
      if (DATA.has_predictions) head.append(el("span", "badge " + t.status, t.status));
      head.append(el("span", "meta", t.train.length + " train \\u00b7 " + t.test.length + " test"));
      card.append(head, el("div", "task-body"));
      frag.append(card);
      cards.push(card);
    });
    list.append(frag);
  }

  function applyFilter(writeHash) {
    const needle = box.value.trim().toLowerCase();
    const want = menu.value;
    let n = 0;
    for (const card of cards) {
      const t = TASKS[Number(card.dataset.index)];
      const ok = (!needle || t.id.toLowerCase().includes(needle)) && (want === "all" || t.status === want);
      card.hidden = !ok;
      card.dataset.hidden = ok ? "0" : "1";
      if (ok) n++;
    }
    shown.textContent = String(n);
    empty.hidden = n > 0;
    if (writeHash) {
      const p = new URLSearchParams();
      if (box.value.trim()) p.set("filter", box.value.trim());
      if (want !== "all") p.set("status", want);
      const h = p.toString();
      try {
        history.replaceState(null, "", h ? "#" + h : location.pathname + location.search);
      } catch (e) { /* some file:// setups refuse; the filter still works */ }
    }
  }
  // Draw the visible cards on (or near) the first screen at once, without waiting for the observer's first
  // callback, which a busy or headless browser may deliver late; the observer handles scrolling.
  function renderInView() {
    const limit = window.innerHeight + 600;
    for (const card of cards) {
      if (card.hidden) continue;
      if (card.getBoundingClientRect().top > limit) break;
      renderCard(card);
    }
  }
  function readHash() {
    const p = new URLSearchParams(location.hash.slice(1));
    box.value = p.get("filter") || "";
    const s = p.get("status");
    menu.value = STATUSES.includes(s) ? s : "all";
  }

  build();
  readHash();
  applyFilter(false);
  // Grids are drawn only for cards near the viewport; the observer reports the cards already in view at
  // once, so the first screen renders without any scrolling.
  if ("IntersectionObserver" in window) {
    const io = new IntersectionObserver(function (entries) {
      for (const en of entries) {
        if (en.isIntersecting) {
          renderCard(en.target);
          io.unobserve(en.target);
        }
      }
    }, {rootMargin: "600px 0px"});
    cards.forEach(function (c) { io.observe(c); });
  } else {
    cards.forEach(renderCard);
  }
  renderInView();
  box.addEventListener("input", function () { applyFilter(true); renderInView(); });
  menu.addEventListener("change", function () { applyFilter(true); renderInView(); });
  window.addEventListener("hashchange", function () { readHash(); applyFilter(false); renderInView(); });
  document.addEventListener("keydown", function (e) {
    if (e.key === "/" && document.activeElement !== box) { e.preventDefault(); box.focus(); }
  });
  document.body.dataset.ready = "1";
})();
"""


def _header(title: str, summary: ViewerSummary, has_predictions: bool) -> str:
    """The sticky page header: title, counts, filter controls and the colour legend."""
    counts = {
        "all": summary.tasks,
        "correct": summary.correct,
        "wrong": summary.wrong,
        "unscored": summary.unscored,
    }
    options = "".join(f'<option value="{s}">{s} ({counts[s]})</option>' for s in ("all", *STATUSES))
    parts = [f'<span><b id="shown">{summary.tasks}</b> of {summary.tasks} tasks shown</span>']
    if has_predictions:
        for s in STATUSES:
            parts.append(f'<span class="{s}"><b data-count="{s}">{counts[s]}</b> {s}</span>')
        parts.append(
            f'<span>test outputs right: <b data-count="tests-right">{summary.tests_right}</b>'
            f'/<b data-count="tests-scored">{summary.tests_scored}</b></span>'
        )
        if summary.extra:
            parts.append(
                f'<span title="{escape(", ".join(summary.extra[:50]))}">'
                f'<b data-count="extra">{len(summary.extra)}</b> predicted tasks not in this set</span>'
            )
    return (
        '<header class="page">'
        f"<h1>{escape(title)}</h1>"
        '<div class="controls">'
        '<input id="filter" type="search" placeholder="filter by task id  ( / )" aria-label="filter by task id"'
        ' autocomplete="off" spellcheck="false">'
        # Without predictions every task is unscored, so the status menu would only add noise.
        f'<select id="status" aria-label="filter by status"{"" if has_predictions else " hidden"}>{options}</select>'
        "</div>"
        f'<div class="summary" id="summary">{"".join(parts)}</div>'
        f"{palette_legend()}"
        "</header>"
    )


def render_viewer(
    tasks: Iterable[Task],
    predictions: Predictions | None = None,
    title: str = "arcscope task viewer",
    preamble_html: str = "",
    css: str = "",
) -> str:
    """The viewer page for ``tasks`` (and predictions per task id, attempts per test pair) as HTML text.

    ``preamble_html`` is trusted markup shown above the task cards (the run report puts its summary there).
    """
    records, summary = _build(tasks, predictions)
    body = (
        _header(title, summary, predictions is not None)
        + f"<main>{preamble_html}"
        + '<div id="tasks"></div><p id="empty" hidden>No task matches the filter.</p>'
        "<noscript><p>This page draws its grids with JavaScript; please enable it.</p></noscript></main>"
    )
    data = {"has_predictions": predictions is not None, "tasks": records}
    return page(title, body, css=VIEWER_CSS + css, js=GRID_JS + VIEWER_JS, data=data)


def write_viewer(
    tasks: Iterable[Task],
    path: str | Path,
    predictions: Predictions | None = None,
    title: str = "arcscope task viewer",
) -> Path:
    """Write the viewer page to ``path`` (parents created) and return the path."""
    path = Path(path)
    text = render_viewer(tasks, predictions, title)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Atomic, so a browser reloading the page never sees half of it. errors="replace": a task id with a
    # lone surrogate (an undecodable file name) must not abort the page.
    atomic_write_text(path, text, errors="replace")
    return path
