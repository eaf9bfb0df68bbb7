"""Analysis report blocks: heat grids laid out like the task, layer pictures, plots, tables, the report folder,
escaping of untrusted text, and the page drawn in headless Chromium."""

from __future__ import annotations

import html
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from arcscope.analysis import AnalysisError, Subject, to_grids
from arcscope.analysis.report import (
    COLOUR_MAPS,
    answer_compare,
    colour_at,
    decided_grid,
    heat_grids,
    heat_scale,
    heatmap,
    json_safe,
    layer_cell_picture,
    line_plot,
    nice_ticks,
    render_report,
    section,
    table,
    task_rows,
    write_report,
)
from arcscope.files import is_leftover
from arcscope.tasks import as_grid
from tests.browser import dump_dom
from tests.conftest import hand_task, tiny_arc_lm

EVIL = "</script><script>alert(1)</script><img src=x onerror=alert(2)>"


def block_data(text: str) -> list[dict]:
    """The JSON of each drawn block in ``text``, in page order."""
    found = re.findall(r'<script type="application/json" class="ablock-data">(.*?)</script>', text, re.S)
    return [json.loads(s) for s in found]


def attrs_of(text: str, cls: str) -> dict[str, str]:
    """The attributes of the first element whose class list contains ``cls``."""

    class P(HTMLParser):
        found: dict[str, str] | None = None

        def handle_starttag(self, tag, attrs):
            a = dict(attrs)
            if self.found is None and cls in (a.get("class") or "").split():
                self.found = {k: v or "" for k, v in a.items()}

    p = P()
    p.feed(text)
    assert p.found is not None, f"no element of class {cls}"
    return p.found


def element_attrs(text: str) -> list[tuple[str, str]]:
    """(tag, attribute name) of every element of ``text``."""

    class P(HTMLParser):
        seen: list[tuple[str, str]] = []

        def handle_starttag(self, tag, attrs):
            self.seen.extend((tag, k) for k, _ in attrs)

    p = P()
    p.seen = []
    p.feed(text)
    return p.seen


def hand_grids() -> list[dict]:
    """Prompt grids as Subject.grids() gives them: two train pairs, the test input and the answer."""
    g = as_grid
    shapes = [(2, 3), (3, 2), (1, 4), (2, 2), (3, 3), (2, 3)]
    roles = ["train_input", "train_output", "train_input", "train_output", "test_input", "answer"]
    pairs = [0, 0, 1, 1, 0, 0]
    rng = np.random.default_rng(0)
    return [
        {"segment": k, "role": r, "pair": p, "shape": s, "grid": g(rng.integers(0, 10, size=s))}
        for k, (s, r, p) in enumerate(zip(shapes, roles, pairs, strict=True))
    ]


# ---- colour scales ---------------------------------------------------------------------------------------


def test_heat_scale_picks_diverging_for_signed_values_and_sequential_for_weights():
    sc = heat_scale([np.array([[-0.5, 2.0]]), np.array([[np.nan, 1.0]])])
    assert (sc.cmap, sc.lo, sc.hi, sc.data_min, sc.data_max, sc.finite) == (
        "diverging",
        -2.0,
        2.0,
        -0.5,
        2.0,
        3,
    )
    assert sc.t(0.0) == 0.5 and sc.colour(0.0) == "#f7f7f7"  # zero is white
    assert sc.colour(-2.0) == COLOUR_MAPS["diverging"][0] and sc.colour(2.0) == COLOUR_MAPS["diverging"][-1]
    w = heat_scale(np.array([0.2, 0.5, np.nan]))
    assert (w.cmap, w.lo, w.hi, w.finite) == ("sequential", 0.0, 0.5, 2)  # weights start at 0
    assert heat_scale(np.array([0.2, 0.5]), vmin=0.1, vmax=1.0).hi == 1.0
    assert (
        heat_scale(np.array([0.3]), "diverging", vmax=1.0).lo,
        heat_scale([np.array([0.3])], "diverging").hi,
    ) == (
        -1.0,
        0.3,
    )
    empty = heat_scale(np.full((2, 2), np.nan))
    assert (empty.cmap, empty.finite, empty.data_min) == ("sequential", 0, None)
    with pytest.raises(AnalysisError, match="colour scale 'rainbow'"):
        heat_scale(np.zeros(2), "rainbow")


def test_colour_at_interpolates_the_stops():
    stops = COLOUR_MAPS["sequential"]
    assert colour_at("sequential", 0.0) == stops[0] and colour_at("sequential", 1.0) == stops[-1]
    assert colour_at("sequential", -3) == stops[0] and colour_at("sequential", 7) == stops[-1]
    # halfway between the first two diverging stops #2166ac and #4393c3
    assert colour_at("diverging", 0.5 / 8) == "#327db8"  # (0x66 + 0x93) / 2 = 124.5 rounds up, as in JS


# ---- heat grids ------------------------------------------------------------------------------------------


def test_task_rows_lay_out_train_pairs_then_the_test():
    rows = task_rows(hand_grids())
    assert rows == [
        {"label": "train 0", "items": [0, 1]},
        {"label": "train 1", "items": [2, 3]},
        {"label": "test", "items": [4, 5]},
    ]


def test_heat_grids_carries_grids_values_and_counts():
    grids = hand_grids()
    v4 = np.array([[0.1, -0.2, np.nan], [0.0, 0.4, 0.3], [np.nan, np.nan, 0.05]])
    v0 = np.array([[np.nan, 1.5, 0.0], [0.25, np.nan, np.nan]])
    text = heat_grids(grids, {4: v4, "0": v0}, title="patching effect", value_label="effect")
    (data,) = block_data(text)
    assert [g["seg"] for g in data["grids"]] == list(range(6))
    assert data["grids"][4]["v"] == [[0.1, -0.2, None, 0.0, 0.4, 0.3, None, None, 0.05]]
    assert data["grids"][0]["v"] == [[None, 1.5, 0.0, 0.25, None, None]]
    assert [g["n"] for g in data["grids"]] == [[3], [0], [0], [0], [6], [0]]
    assert (data["layers"], data["layer"]) == (None, 0)
    assert [g["v"] is None for g in data["grids"]] == [False, True, True, True, False, True]
    assert data["grids"][5]["label"] == "answer" and data["grids"][2]["label"] == "train 1 input"
    assert data["grids"][1]["g"] == "|".join("".join(str(x) for x in row) for row in grids[1]["grid"])
    assert data["scale"] == {"cmap": "diverging", "lo": -1.5, "hi": 1.5}
    a = attrs_of(text, "ablock")
    assert (a["data-kind"], a["data-scale"], a["data-heat-min"], a["data-heat-max"]) == (
        "heat-grids",
        "diverging",
        "-0.2",
        "1.5",
    )
    assert (a["data-cells-finite"], a["data-cells-shown"], a["data-grids"], a["data-layers"]) == (
        "9",
        "9",
        "6",
        "1",
    )
    assert 'class="layer-pick"' not in text
    assert "<h3>patching effect</h3>" in text and 'class="cbar"' in text


def test_heat_grids_rejects_wrong_shapes_segments_and_marks():
    grids = hand_grids()
    with pytest.raises(
        AnalysisError, match=r"grid 1 \(train 0 output\) have shape \(2, 3\); the grid is 3x2"
    ):
        heat_grids(grids, {1: np.zeros((2, 3))})
    with pytest.raises(AnalysisError, match="segment 9"):
        heat_grids(grids, {9: np.zeros((1, 1))})
    with pytest.raises(AnalysisError, match=r"marked cell \(3, 0\) is outside grid 5"):
        heat_grids(grids, {}, marks={5: [(3, 0)]})
    marked = block_data(heat_grids(grids, {}, marks={5: [(1, 1)]}))[0]
    assert marked["grids"][5]["marks"] == [[1, 1]] and "marks" not in marked["grids"][4]


def test_heat_grids_per_layer_pick_the_strongest_layer_first():
    grids = hand_grids()
    v = np.zeros((3, 3, 3))
    v[1, 0, 0] = -4.0  # the largest |value| is in layer 1
    v[2, 1, 1] = np.nan
    w = np.full((3, 2, 3), 0.5)
    text = heat_grids(grids, {4: v, 0: w}, layer_labels=["L0", "L1", "L2"], value_label="effect")
    (d,) = block_data(text)
    assert (d["layers"], d["layer"]) == (["L0", "L1", "L2"], 1)
    assert len(d["grids"][4]["v"]) == 3 and d["grids"][4]["v"][1][0] == -4.0
    assert (
        d["grids"][4]["n"] == [9, 9, 8]
        and d["grids"][0]["n"] == [6, 6, 6]
        and d["grids"][1]["n"] == [0, 0, 0]
    )
    a = attrs_of(text, "ablock")
    assert (a["data-layers"], a["data-cells-shown"], a["data-cells-finite"]) == ("3", "15", "44")
    assert d["scale"] == {"cmap": "diverging", "lo": -4.0, "hi": 4.0}  # one scale for every layer
    assert 'max="2" value="1"' in text and '<b class="layer-name">L1</b>' in text
    assert block_data(heat_grids(grids, {4: v}, layer=2))[0]["layer"] == 2
    with pytest.raises(AnalysisError, match="layer 3 is out of range"):
        heat_grids(grids, {4: v}, layer=3)
    with pytest.raises(AnalysisError, match="2 layer labels for 3 layers"):
        heat_grids(grids, {4: v}, layer_labels=["a", "b"])
    with pytest.raises(AnalysisError, match="no layers where other grids have 3"):
        heat_grids(grids, {4: v, 0: w[0]})


def test_heat_grids_outline_corrupted_cells_of_patch_grids():
    # A PatchResult's grids: clean and corrupt cells as lists instead of "grid".
    clean = [[1, 2], [3, 4]]
    patch_grids = [
        {
            "segment": 0,
            "role": "test_input",
            "pair": 0,
            "shape": [2, 2],
            "clean": clean,
            "corrupt": [[1, 2], [3, 9]],
        },
        {"segment": 1, "role": "answer", "pair": 0, "shape": [2, 2], "clean": clean, "corrupt": clean},
        {"segment": 2, "role": "train_input", "pair": 0, "shape": [2, 2], "clean": clean, "corrupt": None},
    ]
    d = block_data(heat_grids(patch_grids, {0: np.ones((2, 2))}))[0]
    assert [g.get("changed") for g in d["grids"]] == [[[1, 1]], [], None]
    assert d["grids"][0]["g"] == "12|34" and d["grids"][0]["cg"] == "12|39"


def test_heat_grids_from_a_subject_and_to_grids(subject):
    cells = subject.cells(["train_input", "test_input"])
    grids = subject.grids()
    shapes = [g["shape"] for g in grids]
    per_cell = np.linspace(0.0, 1.0, len(cells))
    per_cell[::5] = np.nan
    values = to_grids(per_cell, cells, shapes)
    data = block_data(heat_grids(grids, values))[0]
    assert sum(g["n"][0] for g in data["grids"]) == int(np.isfinite(per_cell).sum())
    roles = {g["role"] for g in data["grids"] if g["v"] is not None}
    assert roles == {"train_input", "test_input"}
    assert data["scale"]["cmap"] == "sequential" and data["scale"]["lo"] == 0.0


# ---- layers, decided cells, the answer ------------------------------------------------------------------


def test_layer_cell_picture_one_grid_per_layer():
    v = np.arange(2 * 2 * 3, dtype=float).reshape(2, 2, 3) / 12
    v[1, 0, 0] = np.nan
    truth = np.array([[1, 2, 3], [4, 5, 6]])
    text = layer_cell_picture(v, ["L0", "L1"], "p(correct colour)", truth=truth, vmin=0, vmax=1)
    (d,) = block_data(text)
    assert (d["h"], d["w"], d["labels"], d["truth"]) == (2, 3, ["L0", "L1"], "123|456")
    assert d["values"][1][0] is None and d["values"][0][1] == pytest.approx(1 / 12, abs=1e-6)
    assert d["scale"] == {"cmap": "sequential", "lo": 0.0, "hi": 1.0}
    assert attrs_of(text, "ablock")["data-layers"] == "2"
    assert block_data(layer_cell_picture(v))[0]["labels"] == ["0", "1"]
    with pytest.raises(AnalysisError, match="3 layer labels for 2 layers"):
        layer_cell_picture(v, ["a", "b", "c"])
    with pytest.raises(AnalysisError, match=r"\[layers, h, w\]"):
        layer_cell_picture(v[0])
    with pytest.raises(AnalysisError, match="truth grid is 3x2"):
        layer_cell_picture(v, truth=truth.T)


def test_decided_grid_writes_the_layer_in_each_cell():
    layers = np.array(
        [[0, 3, -1], [2, -2, 5]]
    )  # -1: never decided, -2: no token of its own (the lens's codes)
    text = decided_grid(layers, "decided at", n_layers=6, truth=np.array([[1, 2, 3], [4, 5, 6]]))
    svg = attrs_of(text, "decided")
    assert (svg["data-decided"], svg["data-undecided"], svg["data-unmeasured"]) == ("4", "1", "1")
    assert (svg["data-h"], svg["data-w"]) == ("2", "3")
    numbers = re.findall(r'<g class="cell"[^>]*data-layer="(-?\d+)".*?<text[^>]*>([^<]*)</text></g>', text)
    assert numbers == [("0", "0"), ("3", "3"), ("-1", "\u00b7"), ("2", "2"), ("-2", ""), ("5", "5")]
    assert "row 0, col 2: never decided; colour 3 (green)" in text
    assert "row 1, col 1: not measured (no token of its own)" in text
    assert "row 1, col 2: decided at layer 5" in text
    with pytest.raises(AnalysisError, match="decided at layer 5 but the model has 4 layers"):
        decided_grid(layers, n_layers=4)
    with pytest.raises(AnalysisError, match="2-d int"):
        decided_grid(layers.astype(float))


def test_answer_compare_marks_wrong_and_unknown_cells():
    truth = np.array([[1, 2, 3], [4, 5, 6]])
    pred = np.array([[1, 0, 3], [-1, 5, 9]])
    text = answer_compare(truth, pred)
    (d,) = block_data(text)
    assert d["wrong"] == [[0, 1], [1, 2]] and d["unknown"] == [[1, 0]]
    assert d["truth"] == "123|456" and d["pred"] == "103|059"
    a = attrs_of(text, "ablock")
    assert (a["data-wrong-cells"], a["data-unknown-cells"], a["data-cells"]) == ("2", "1", "6")
    assert "2 of 6 cells wrong, 1 without a token of their own" in text
    other = answer_compare(truth, np.zeros((3, 3), dtype=int))
    assert "shape 3x3, expected 2x3" in other and block_data(other)[0]["shape"] == [3, 3]
    assert "0 of 6 cells wrong" in answer_compare(truth, truth)


# ---- plots -----------------------------------------------------------------------------------------------


def test_nice_ticks_cover_the_range_with_round_steps():
    assert nice_ticks(0, 1) == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    assert nice_ticks(-3.2, 7.9) == [-5.0, -2.5, 0.0, 2.5, 5.0, 7.5, 10.0]
    assert nice_ticks(0, 29, 6) == [0.0, 5.0, 10.0, 15.0, 20.0, 25.0, 30.0]
    t = nice_ticks(5.0, 5.0)
    assert t[0] <= 5.0 <= t[-1] and len(t) >= 2


def test_line_plot_series_points_ticks_and_gaps():
    x = list(range(6))
    y1 = [0.1, 0.2, np.nan, 0.5, 0.7, 0.9]
    text = line_plot(
        x,
        {"mean p": y1, "chance <b>": [0.1] * 6},
        "layer",
        "probability",
        bands={"mean p": ([v - 0.05 for v in y1], [v + 0.05 for v in y1])},
        hlines={"chance": 0.1},
        y_range=(0, 1),
    )
    svg = attrs_of(text, "lineplot")
    assert (svg["data-series"], svg["data-x"]) == ("2", "6")
    groups = re.findall(r'<g class="series" data-name="([^"]*)" data-points="(\d+)">(.*?)</g>', text, re.S)
    assert [(html.unescape(n), int(k)) for n, k, _ in groups] == [("mean p", 5), ("chance <b>", 6)]
    assert [g[2].count("<circle") for g in groups] == [5, 6]
    assert groups[0][2].count("<polyline") == 2  # the NaN splits the line
    assert groups[1][2].count("<polyline") == 1
    assert re.findall(r'class="ytick"[^>]*>([^<]*)<', text) == ["0", "0.2", "0.4", "0.6", "0.8", "1"]
    assert re.findall(r'class="xtick"[^>]*>([^<]*)<', text) == ["0", "1", "2", "3", "4", "5"]
    assert text.count('class="band"') == 2 and 'class="ref"' in text
    assert "<b>" not in text and "chance &lt;b&gt;" in text
    assert ">layer<" in text and ">probability<" in text


def test_line_plot_integer_x_gets_integer_ticks():
    text = line_plot([0, 1, 2, 3], {"p": [0.1, 0.2, 0.3, 0.4]})
    assert re.findall(r'class="xtick"[^>]*>([^<]*)<', text) == ["0", "1", "2", "3"]
    frac = line_plot([0.0, 0.25, 0.5], {"p": [1, 2, 3]})
    assert re.findall(r'class="xtick"[^>]*>([^<]*)<', frac) == ["0", "0.1", "0.2", "0.3", "0.4", "0.5"]


def test_line_plot_text_x_and_errors():
    text = line_plot(["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"], {"acc": [0.5, 0.75]})
    assert re.findall(r'class="xtick"[^>]*>([^<]*)<', text) == [
        "blocks.0.hook_resid_post",
        "blocks.1.hook_resid_post",
    ]
    assert "acc: x blocks.1.hook_resid_post, 0.75" in text
    with pytest.raises(AnalysisError, match="series 'acc' has 1 values for 2 x values"):
        line_plot([0, 1], {"acc": [0.5]})
    with pytest.raises(AnalysisError, match="not a series"):
        line_plot([0, 1], {"acc": [0.5, 1]}, bands={"other": ([0, 0], [1, 1])})
    many = line_plot(list(range(300)), {"s": np.zeros(300)})
    assert "<circle" not in many and 'data-points="300"' in many


def test_heatmap_cells_labels_and_colours():
    m = np.array([[-1.0, 0.0, 2.0], [np.nan, 0.5, -2.0]])
    text = heatmap(m, ["L0", "L1"], ["H0", "H1", "H<2>"], title="heads", value_label="effect")
    svg = attrs_of(text, "heatmap")
    assert (svg["data-rows"], svg["data-cols"], svg["data-cells-shaded"], svg["data-scale"]) == (
        "2",
        "3",
        "5",
        "diverging",
    )
    rects = re.findall(
        r'<rect x="\d+" y="\d+" width="\d+" height="\d+" fill="(#[0-9a-f]{6})"><title>([^<]*)<', text
    )
    assert len(rects) == 5
    tips = dict((t, c) for c, t in rects)
    assert tips["L0 \u00b7 H&lt;2&gt;: 2"] == COLOUR_MAPS["diverging"][-1]
    assert tips["L1 \u00b7 H&lt;2&gt;: -2"] == COLOUR_MAPS["diverging"][0]
    assert tips["L0 \u00b7 H1: 0"] == "#f7f7f7"
    assert re.findall(r'class="rlab"[^>]*>([^<]*)<', text) == ["L0", "L1"]
    assert "H<2>" not in text
    with pytest.raises(AnalysisError, match="2 row and 2 column labels"):
        heatmap(m, ["a", "b"], ["x", "y"])


def test_table_formats_escapes_and_limits():
    rows = [
        {"layer": 0, "value": 0.123456, "name": "<i>x</i>"},
        {"layer": 1, "value": np.nan, "extra": [1, 2]},
    ]
    text = table(rows, title="t")
    assert re.findall(r"<th>([^<]*)</th>", text) == ["layer", "value", "name", "extra"]
    assert '<td class="num">0.1235</td>' in text and "&lt;i&gt;x&lt;/i&gt;" in text and "<i>x" not in text
    assert "<td>[1, 2]</td>" in text
    cut = table(pa.table({"a": list(range(10))}), max_rows=3)
    assert 'data-rows="10" data-shown="3"' in cut and "7 more rows not shown" in cut


def test_json_safe_turns_arrays_and_nan_into_plain_json():
    obj = {
        1: np.array([1.0, np.nan]),
        "t": (np.int64(3), np.float32(0.5)),
        "b": np.bool_(True),
        "x": torch.tensor([2]),
        "p": Path("a/b"),
    }
    assert json_safe(obj) == {"1": [1.0, None], "t": [3, 0.5], "b": True, "x": [2], "p": "a/b"}
    with pytest.raises(TypeError, match="object"):
        json_safe(object())


# ---- the report folder and page --------------------------------------------------------------------------


def test_write_report_writes_page_json_and_parquet(tmp_path):
    tab = pa.table({"layer": [0, 1], "value": [0.5, float("nan")]})
    files = write_report(
        tmp_path / "out",
        "logit lens",
        [section("Curve", line_plot([0, 1], {"p": [0.5, 0.7]}))],
        {"kind": "lens", "values": np.array([0.5, np.nan])},
        {"lens": tab, "cells": pa.table({"row": [0]})},
        task_id="abc",
        model="tiny",
        metric="logprob of the correct colour",
        settings={"layers": [0, 1], "seed": 0},
    )
    assert files.html == tmp_path / "out" / "report.html" and files.json == tmp_path / "out" / "result.json"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "cells.parquet",
        "lens.parquet",
        "report.html",
        "result.json",
    ]
    assert files.paths[-1] == files.html and set(files.tables) == {"lens", "cells"}
    assert dict(files) == {"report": files.html, "json": files.json, **files.tables}
    assert json.loads(files.json.read_text()) == {"kind": "lens", "values": [0.5, None]}
    back = pq.read_table(files.tables["lens"])
    assert back.schema == tab.schema and back.column("layer").to_pylist() == [0, 1]
    assert np.array_equal(back.column("value").to_numpy(), [0.5, np.nan], equal_nan=True)
    page = files.html.read_text()
    assert "<title>logit lens \u00b7 abc</title>" in page
    for key, value in {"task": "abc", "model": "tiny", "metric": "logprob of the correct colour"}.items():
        assert f'<span data-meta="{key}">{key} <b>{value}</b></span>' in page
    assert "<th>layers</th><td>[0, 1]</td>" in page and "result.json, lens.parquet, cells.parquet" in page
    # writing again replaces the files and leaves no temporary names behind
    write_report(tmp_path / "out", "again", [], {"kind": "x"})
    assert json.loads(files.json.read_text()) == {"kind": "x"}
    assert not [p for p in (tmp_path / "out").iterdir() if is_leftover(p.name)]


def test_write_report_rejects_bad_tables(tmp_path):
    with pytest.raises(AnalysisError, match="table name '../x'"):
        write_report(tmp_path, "t", [], {}, {"../x": pa.table({"a": [1]})})
    with pytest.raises(AnalysisError, match="'report' is taken"):
        write_report(tmp_path, "t", [], {}, {"report": pa.table({"a": [1]})})
    with pytest.raises(AnalysisError, match="is a dict, not a pyarrow.Table"):
        write_report(tmp_path, "t", [], {}, {"x": {"a": [1]}})
    assert not (tmp_path / "report.html").exists()


def test_page_is_self_contained_and_escapes_untrusted_text():
    grids = hand_grids()
    sections = [
        section(EVIL, heat_grids(grids, {4: np.ones((3, 3))}, title=EVIL, value_label=EVIL)),
        section("plots", line_plot([0, 1], {EVIL: [1, 2]}, EVIL, EVIL), heatmap(np.eye(2), [EVIL, "b"])),
        section("layers", layer_cell_picture(np.ones((2, 2, 2)), [EVIL, "x"])),
        table([{EVIL: EVIL}]),
    ]
    text = render_report(EVIL, sections, task_id=EVIL, model=EVIL, metric=EVIL, settings={EVIL: EVIL})
    assert EVIL not in text and "<img" not in text and "alert(1)</script>" not in text
    # Only our own scripts open and close: the page script and the data of the two drawn blocks.
    assert len(re.findall(r"<script", text, re.I)) == 3 == len(re.findall(r"</script", text, re.I))
    assert block_data(text)[1]["labels"][0] == EVIL
    # No element fetches anything or carries an event handler (the hostile text stayed text).
    assert not {a for _, a in element_attrs(text) if a in ("src", "href") or a.startswith("on")}
    csp = re.search(r'http-equiv="Content-Security-Policy" content="([^"]*)"', text)
    assert csp and "default-src 'none'" in html.unescape(csp.group(1))


# ---- headless browser -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def subject(arc_tokenizer):
    """A teacher-forced subject on a tiny random Llama with the real tokenizer."""
    task = hand_task(
        EVIL,
        train=[
            ([[1, 2, 0], [3, 4, 0]], [[4, 3], [2, 1], [0, 0]]),
            ([[5, 6], [7, 8]], [[8, 7], [6, 5]]),
        ],
        test=[([[2, 2, 1], [3, 1, 0], [0, 0, 9]], [[1, 3, 0], [2, 2, 0], [9, 0, 0]])],
    )
    return Subject.from_task(tiny_arc_lm(max_positions=4096), task, tokenizer=arc_tokenizer)


class _Dom(HTMLParser):
    """The drawn blocks of a dumped report page: their attributes, figures, canvases and outlines."""

    def __init__(self) -> None:
        super().__init__()
        self.body: dict[str, str] = {}
        self.blocks: list[dict] = []
        self.imgs = 0
        self.h1 = ""
        self._in_h1 = False

    def handle_starttag(self, tag, attrs):
        a = {k: v or "" for k, v in attrs}
        cls = a.get("class", "").split()
        if tag == "body":
            self.body = a
        elif tag == "img":
            self.imgs += 1
        elif tag == "h1":
            self._in_h1 = True
        elif "ablock" in cls and "data-kind" in a:
            self.blocks.append({"attrs": a, "figures": [], "canvases": [], "marks": []})
        elif tag == "figure" and self.blocks:
            self.blocks[-1]["figures"].append({"attrs": a, "canvases": []})
        elif tag == "canvas" and self.blocks:
            self.blocks[-1]["canvases"].append(a)
            if self.blocks[-1]["figures"]:
                self.blocks[-1]["figures"][-1]["canvases"].append(a)
        elif (
            tag == "i"
            and self.blocks
            and {"cell-mark", "cell-diff", "cell-unknown", "cell-changed"} & set(cls)
        ):
            self.blocks[-1]["marks"].append((cls[0], int(a["data-r"]), int(a["data-c"]), a.get("title", "")))

    def handle_endtag(self, tag):
        if tag == "h1":
            self._in_h1 = False

    def handle_data(self, data):
        if self._in_h1:
            self.h1 += data


def _render(path: Path, profile: Path) -> _Dom:
    dom = _Dom()
    dom.feed(dump_dom(path, "", profile))
    assert dom.body.get("data-ready") == "1", "the page script did not finish"
    return dom


@pytest.mark.browser
def test_browser_draws_every_block_without_errors(subject, tmp_path):
    grids = subject.grids()
    cells = subject.cells(["train_input", "test_input"])
    effect = np.sin(np.arange(len(cells), dtype=float))
    effect[::4] = np.nan
    values = to_grids(effect, cells, [g["shape"] for g in grids])
    n_finite = int(np.isfinite(effect).sum())
    answer_seg = next(g["segment"] for g in grids if g["role"] == "answer")
    lens = np.linspace(0, 1, 3 * 9).reshape(3, 3, 3)
    lens[2, 1, 1] = np.nan
    predicted = subject.predicted_grid()
    truth = np.asarray(subject.task.test[0].output)
    wrong = {(int(r), int(c)) for r, c in zip(*np.nonzero(predicted != truth), strict=True)}
    # A layered sweep on a PatchResult's grids (clean + corrupt cells): one test-input cell corrupted.
    test_seg = next(g["segment"] for g in grids if g["role"] == "test_input")
    patch_grids = []
    for g in grids:
        clean = np.asarray(g["grid"]).tolist()
        bad = [row[:] for row in clean]
        if g["segment"] == test_seg:
            bad[1][2] = (bad[1][2] + 1) % 10
        patch_grids.append(
            {k: g[k] for k in ("segment", "role", "pair", "shape")} | {"clean": clean, "corrupt": bad}
        )
    layered = {seg: np.stack([v, v * 2, np.full_like(v, np.nan)]) for seg, v in values.items()}
    sections = [
        section("Patching", heat_grids(grids, values, value_label="effect", marks={answer_seg: [(0, 1)]})),
        section("Sweep", heat_grids(patch_grids, layered, layer_labels=["a", "b", "c"], layer=0)),
        section(
            "Lens", layer_cell_picture(lens, ["0", "1", "2"], truth=truth), decided_grid(np.ones((3, 3), int))
        ),
        section("Answer", answer_compare(truth, predicted)),
        section("Curve", line_plot([0, 1, 2], {"a": [0.1, 0.5, 0.9], "b": [0.2, np.nan, 0.3]}, "layer", "p")),
    ]
    files = write_report(tmp_path / "r", EVIL, sections, {"effect": effect}, task_id=subject.task_id)
    dom = _render(files.html, tmp_path / "profile")
    assert dom.body.get("data-errors") == "0", dom.body.get("data-error-text")
    assert dom.imgs == 0 and dom.h1 == EVIL  # the hostile title is text, not markup
    heat, sweep, layers, compare = dom.blocks
    assert [b["attrs"]["data-rendered"] for b in dom.blocks] == ["1", "1", "1", "1"]

    # Heat grids: every prompt grid drawn in its row, heat canvases shade exactly the finite values.
    assert heat["attrs"]["data-cells-shaded"] == str(n_finite) == heat["attrs"]["data-cells-finite"]
    figs = heat["figures"]
    assert [int(f["attrs"]["data-segment"]) for f in figs] == [0, 1, 2, 3, 4, 5]
    for f, g in zip(figs, grids, strict=True):
        h, w = g["shape"]
        base = f["canvases"][0]
        assert (base["data-rendered"], base["data-h"], base["data-w"]) == ("1", str(h), str(w))
        seg = g["segment"]
        want = int(np.isfinite(values[seg]).sum()) if seg in values else 0
        assert f["attrs"]["data-cells-shaded"] == str(want)
        assert len(f["canvases"]) == (2 if seg in values else 1)
        if seg in values:
            assert f["canvases"][1]["data-cells-shaded"] == str(want) and "heat" in f["canvases"][1]["class"]
    assert heat["marks"] == [("cell-mark", 0, 1, "")]

    # The sweep shows its first layer, with the corrupted cell outlined on the test input.
    assert (sweep["attrs"]["data-layer"], sweep["attrs"]["data-cells-shaded"]) == ("0", str(n_finite))
    assert sweep["marks"] == [("cell-changed", 1, 2, "")]
    changed = [f["attrs"].get("data-changed-cells") for f in sweep["figures"]]
    assert changed == ["1" if g["segment"] == test_seg else "0" for g in grids]

    # Layer strip: the answer, then one heat grid per layer.
    assert [f["attrs"].get("data-layer") for f in layers["figures"]] == [None, "0", "1", "2"]
    assert [c["data-cells-shaded"] for c in layers["canvases"][1:]] == ["9", "9", "8"]
    assert layers["attrs"]["data-cells-shaded"] == "26"

    # Answer: the teacher-forced prediction's wrong cells are outlined, one element each.
    assert {(r, c) for k, r, c, _ in compare["marks"] if k == "cell-diff"} == wrong
    assert compare["attrs"]["data-wrong-cells"] == str(len(wrong))


@pytest.mark.browser
def test_browser_reports_script_errors(tmp_path):
    # A block whose data the renderer cannot use: the page must say so on <body>, not fail silently.
    broken = answer_compare(np.ones((2, 2), int), np.ones((2, 2), int)).replace('"wrong":[]', '"wrong":7')
    unknown = '<div class="ablock" data-kind="nope"><script type="application/json" class="ablock-data">{}</script></div>'
    path = tmp_path / "broken.html"
    path.write_text(render_report("broken", [broken, unknown]))
    dom = _render(path, tmp_path / "profile")
    assert dom.body.get("data-errors") == "2"
    assert (
        "answer-compare" in dom.body["data-error-text"]
        and "no renderer for block kind nope" in dom.body["data-error-text"]
    )
    assert [b["attrs"]["data-rendered"] for b in dom.blocks] == ["error", "error"]
