"""Task families with known programs: valid tasks, determinism, knobs, ambiguity, source maps, CLI, contamination."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

import arcscope.cli.generate  # noqa: F401 - registers `arcscope tasks generate` until COMMAND_MODULES lists it
from arcscope.cli import app
from arcscope.families import (
    DIHEDRAL,
    FAMILIES,
    ArcIndex,
    ContaminationReport,
    GenerationError,
    Knobs,
    check_task,
    contamination,
    exclude_arc,
    generate,
    iter_generate,
    screen,
    select,
)
from arcscope.families.core import Family
from arcscope.tasks import ColourPermutation, Dihedral, Pair, PairOrder, Task, load, save

runner = CliRunner()
MOVED = [name for name, f in FAMILIES.items() if f.moves_cells]


def _grid(rows) -> np.ndarray:
    g = np.array(rows, dtype=np.uint8)
    g.setflags(write=False)
    return g


# ------------------------------------------------------------------------------------------- coverage


def test_at_least_30_families_cover_the_issue():
    assert len(FAMILIES) >= 30
    names = set(FAMILIES)
    assert set(DIHEDRAL) <= names  # all 8 dihedral transforms, both transposes among them
    for needed in (
        "colour_cycle",  # fixed colour map
        "colour_permute",  # per-task random map
        "shift_wrap",
        "shift_crop",
        "upscale",
        "tile",
        "gravity",
        "recolour_by_size",
        "recolour_squares",
        "recolour_by_count",
        "crop_largest",
        "crop_colour",
        "fill_enclosed",
        "lines_ray",
        "denoise",
        "symmetry_complete",
        "count_bar",
        "count_grid",
    ):
        assert needed in names
    assert sum("composition" in f.tags for f in FAMILIES.values()) >= 3
    for f in FAMILIES.values():
        assert f.program_name.startswith("solve_") and f.description
        assert f.program.__module__.startswith("arcscope.families.")


# ------------------------------------------------------------------------------------------- validity


@pytest.mark.parametrize("name", list(FAMILIES))
def test_every_family_generates_valid_tasks(name):
    family = FAMILIES[name]
    for seed in (0, 1, 2):
        for task in generate([name], n=2, seed=seed):
            assert 2 <= len(task.train) <= 5 and 1 <= len(task.test) <= 2
            meta = task.meta
            assert meta["family"] == name and meta["program"] == family.program_name
            assert meta["seed"] == seed
            inputs = set()
            for p in task.pairs:
                for g in (p.input, p.output):
                    assert g.dtype == np.uint8 and g.ndim == 2
                    assert 1 <= g.shape[0] <= 30 and 1 <= g.shape[1] <= 30
                    assert int(g.max()) <= 9
                assert np.array_equal(family.run(meta["params"], p.input), p.output)
                if not family.keeps_input:
                    assert not np.array_equal(p.input, p.output)
                inputs.add(p.input.tobytes() + bytes(p.input.shape))
            assert len(inputs) == len(task.pairs)  # no input repeats
            assert check_task(task) == []


def test_a_task_is_redrawn_from_its_meta():
    for task in generate(["gravity", "colour_permute", "tile"], n=6, seed=7, max_side=6):
        m = task.meta
        again = FAMILIES[m["family"]].task(m["seed"], m["index"], m.get("knobs"), task_id=task.id)
        assert again == task and again.meta == task.meta
        assert m["knobs"] == {"max_side": 6}


# ------------------------------------------------------------------------------------------- determinism


def test_same_seed_same_bytes(tmp_path):
    a = save(generate(None, n=74, seed=3), tmp_path / "a.jsonl")
    b = save(iter_generate(None, n=74, seed=3), tmp_path / "b.jsonl")
    c = save(generate(None, n=74, seed=4), tmp_path / "c.jsonl")
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()
    # Another process with another hash seed: the same bytes (no set-order or hash dependence).
    code = (
        "import sys; from arcscope.families import generate; from arcscope.tasks import save; "
        "save(generate(None, n=74, seed=3), sys.argv[1])"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "d.jsonl")], check=True, env=env)
    assert (tmp_path / "d.jsonl").read_bytes() == a.read_bytes()


def test_families_take_turns_and_ids_are_unique():
    ts = generate(["rot90", "gravity", "denoise"], n=9, seed=0)
    assert [t.meta["family"] for t in ts] == ["rot90", "gravity", "denoise"] * 3
    assert ts.ids[0] == "rot90-0-0" and ts.ids[-1] == "denoise-0-8"


# ------------------------------------------------------------------------------------------- knobs


def test_knobs_are_respected():
    knobs = dict(min_side=5, max_side=7, colours=[2, 3, 4], min_train=3, max_train=3, min_test=2, max_test=2)
    for task in generate(None, n=len(FAMILIES), seed=1, **knobs):
        assert len(task.train) == 3 and len(task.test) == 2, task.id
        for p in task.pairs:
            assert 5 <= p.input.shape[0] <= 7 and 5 <= p.input.shape[1] <= 7, task.id
            assert set(np.unique(p.input).tolist()) <= {0, 2, 3, 4}, task.id
        assert task.meta["knobs"]["colours"] == [2, 3, 4]


def test_object_count_knob():
    for task in generate(["count_bar"], n=6, seed=0, min_objects=5, max_objects=7):
        for p in task.pairs:
            assert p.output.shape[0] == 1 and 5 <= p.output.shape[1] <= 7
    for task in generate(["count_grid"], n=4, seed=0, min_objects=2, max_objects=3):
        assert all(2 <= int((p.output != 0).sum()) <= 3 for p in task.pairs)


def test_impossible_knobs_fail_naming_the_family():
    with pytest.raises(GenerationError, match="crop_largest.*objects"):
        generate(["crop_largest"], n=1, seed=0, max_objects=1)
    with pytest.raises(GenerationError, match="upscale.*sides"):
        generate(["upscale"], n=1, seed=0, min_side=20, max_side=30)
    with pytest.raises(GenerationError, match="min_side"):
        generate(["rot90"], n=1, seed=0, min_side=9, max_side=4)
    with pytest.raises(GenerationError, match="colours"):
        Knobs(colours=[0, 1]).validate()
    with pytest.raises(GenerationError, match="did you mean rot90"):
        generate(["rot09"], n=1)


def test_select_by_pattern_and_tag():
    assert [f.name for f in select("rot*")] == ["rot90", "rot180", "rot270", "rot90_permute"]
    assert {f.name for f in select(["tag:dihedral"])} >= set(DIHEDRAL)
    assert len(select(None)) == len(select("all")) == len(FAMILIES)
    assert [f.name for f in select(["gravity", "gravity", "rot90"])] == ["gravity", "rot90"]


# ------------------------------------------------------------------------------------------- ambiguity


def test_identity_outputs_are_rejected():
    hm = FAMILIES["hmirror"]
    symmetric = _grid([[1, 2, 3], [4, 5, 6], [1, 2, 3]])  # top-bottom symmetric: hmirror leaves it alone
    assert hm._output({}, symmetric) is None
    assert hm._output({}, _grid([[1, 2], [3, 4]])) is not None
    assert FAMILIES["identity"]._output({}, symmetric) is not None


def test_a_rival_rule_that_fits_every_train_pair_rejects_the_task():
    hm = FAMILIES["hmirror"]
    # Left-right symmetric inputs: flipping top-bottom or turning a half turn gives the same outputs.
    inputs = [_grid([[1, 0, 1], [2, 3, 2]]), _grid([[4, 4], [0, 0], [6, 6]])]
    train = [Pair(g, hm.run({}, g)) for g in inputs]
    assert hm.fitting_rivals(train) == ["rot180"]
    test = Pair(_grid([[1, 2], [3, 4]]), hm.run({}, _grid([[1, 2], [3, 4]])))
    task = Task("amb", tuple(train), (test,), {"family": "hmirror", "params": {}})
    assert check_task(task) == ["rival rule 'rot180' fits every train pair too"]
    # A non-symmetric train input tells them apart.
    train[1] = Pair(_grid([[1, 2], [3, 4]]), hm.run({}, _grid([[1, 2], [3, 4]])))
    assert hm.fitting_rivals(train) == []


def test_constant_outputs_and_colour_maps_are_rivals():
    cb = FAMILIES["count_bar"]
    same = [_grid([[1, 0, 0], [0, 0, 1]]), _grid([[0, 1, 0], [0, 0, 0], [1, 0, 0]])]
    train = [Pair(g, cb.run({}, g)) for g in same]  # two objects each time: the same answer twice
    assert "constant" in cb.fitting_rivals(train)
    # One cell falling one row is also a top-bottom flip and an anticlockwise turn: ambiguous.
    grav = FAMILIES["gravity_down"]
    g = _grid([[1, 0], [0, 0]])
    assert grav.fitting_rivals([Pair(g, grav.run({}, g))]) == ["rot270", "hmirror"]
    g = _grid([[1, 2, 0], [0, 0, 0], [0, 0, 3]])
    assert grav.fitting_rivals([Pair(g, grav.run({}, g))]) == []
    # A cell-wise colour map explaining a colour swap task is that task's own rule, so it is skipped there.
    sw = FAMILIES["colour_swap"]
    g = _grid([[1, 2], [2, 0]])
    assert "colour_map" in FAMILIES["rot90"].fitting_rivals([Pair(g, sw.run({"a": 1, "b": 2}, g))])
    assert sw.fitting_rivals([Pair(g, sw.run({"a": 1, "b": 2}, g))]) == []


def test_test_inputs_must_be_covered_by_train():
    cp = FAMILIES["colour_permute"]
    params = {"mapping": [0, 2, 1, 3, 4, 5, 6, 7, 8, 9]}
    a, b = _grid([[1, 0], [0, 2]]), _grid([[2, 2], [1, 0]])
    unseen = _grid([[3, 1], [2, 0]])  # colour 3 never appears in a train input
    task = Task(
        "cover",
        (Pair(a, cp.run(params, a)), Pair(b, cp.run(params, b))),
        (Pair(unseen, cp.run(params, unseen)),),
        {"family": "colour_permute", "params": params},
    )
    assert check_task(task) == ["test[0]: needs [3] that no train input shows"]


def test_a_wrong_output_is_reported():
    t = generate(["rot90"], n=1, seed=0)[0]
    bad = Pair(t.test[0].input, t.test[0].input)
    broken = Task(t.id, t.train, (bad,), t.meta)
    assert any("is not solve_rot90(input)" in p for p in check_task(broken))


# ------------------------------------------------------------------------------------------- source maps


@pytest.mark.parametrize("name", MOVED)
def test_source_map_gives_every_output_cell_its_input_cell(name):
    family = FAMILIES[name]
    for task in generate([name], n=3, seed=11):
        for p in task.pairs:
            src = family.source_map(task.meta["params"], p.input.shape)
            assert src.shape == (*p.output.shape, 2) and src.dtype == np.int64
            inside = src[..., 0] >= 0
            assert np.array_equal(inside, src[..., 1] >= 0)
            r, c = src[..., 0][inside], src[..., 1][inside]
            assert r.max(initial=0) < p.input.shape[0] and c.max(initial=0) < p.input.shape[1]
            assert np.array_equal(p.output[inside], p.input[r, c])
            assert not p.output[~inside].any()  # cells with no source are background
            if name != "shift_crop":
                assert inside.all()


def test_the_moved_cell_families_and_the_rest():
    assert {*DIHEDRAL, "shift_wrap", "shift_crop", "upscale", "tile"} <= set(MOVED)
    with pytest.raises(GenerationError, match="no source map"):
        FAMILIES["gravity"].source_map({"direction": "down"}, (3, 3))
    src = FAMILIES["rot90"].source_map({}, (2, 3))  # clockwise: output row 0 reads input column 0 upwards
    assert src[0].tolist() == [[1, 0], [0, 0]]


# ------------------------------------------------------------------------------------------- CLI


def test_cli_writes_a_jsonl_that_loads_back_equal(tmp_path):
    out = tmp_path / "gen.jsonl"
    args = ["tasks", "generate", "rot90", "gravity", "--n", "12", "--seed", "3", "--max-side", "6"]
    r = runner.invoke(app, [*args, "--out", f"jsonl:{out}", "--no-check-arc", "-q"])
    assert r.exit_code == 0, r.output
    assert "wrote 12 tasks" in r.output
    back = load(f"jsonl:{out}")
    want = generate(["rot90", "gravity"], n=12, seed=3, max_side=6)
    assert back == want
    assert [t.meta for t in back] == [t.meta for t in want]
    assert all(check_task(t) == [] for t in back)
    # Any writer: a folder of ARC JSON files too.
    r = runner.invoke(app, [*args, "--out", f"dir:{tmp_path / 'd'}", "--no-check-arc", "-q"])
    assert r.exit_code == 0, r.output
    assert load(f"dir:{tmp_path / 'd'}").ids == sorted(want.ids)


def test_cli_reports_contamination_and_lists_families(tmp_path):
    out = tmp_path / "g.jsonl"
    r = runner.invoke(app, ["tasks", "generate", "--n", "5", "--out", str(out), "--exclude-arc", "-q"])
    assert r.exit_code == 0, r.output
    assert "contamination:" in r.output and "1920 ARC tasks checked" in " ".join(r.output.split())
    r = runner.invoke(app, ["tasks", "families", "--plain"])
    assert r.exit_code == 0
    lines = r.output.strip().splitlines()
    assert len(lines) == len(FAMILIES) + 1 and lines[1].startswith("identity\tsolve_identity")
    r = runner.invoke(app, ["tasks", "generate", "nosuch", "--out", str(tmp_path / "x.jsonl")])
    assert r.exit_code != 0


# ------------------------------------------------------------------------------------------- contamination


@pytest.fixture(scope="module")
def arc_sample():
    tasks = list(load("arc1:training"))[:30]
    return tasks, ArcIndex((f"arc1:training/{t.id}", t) for t in tasks)


def test_an_arc_task_fed_as_generated_is_counted_and_excluded(arc_sample):
    tasks, index = arc_sample
    arc = tasks[3]
    # The same task under a rotation, a recolouring and another train order is still the ARC task.
    disguised = Dihedral(1).apply(arc)
    disguised = ColourPermutation([0, 3, 1, 2, 5, 4, 6, 7, 9, 8]).apply(disguised)
    order = list(range(len(arc.train)))[::-1]
    disguised = PairOrder(order).apply(disguised).with_id("gen-fake")
    # A generated task that carries one ARC pair (transposed) among its own.
    own = generate(["tile"], n=1, seed=0)[0]
    leaked = Task(
        "gen-leak",
        (
            *own.train,
            Pair(Dihedral(6).apply_grid(arc.train[0].input), Dihedral(6).apply_grid(arc.train[0].output)),
        ),
        own.test,
    )
    clean = list(generate(None, n=20, seed=2))
    report = contamination([*clean, disguised, leaked], index=index)
    assert report.checked == 22
    assert report.task_matches == [("gen-fake", f"arc1:training/{arc.id}")]
    assert report.pair_matches == [("gen-leak", f"arc1:training/{arc.id}")]
    assert report.contaminated == 2 and "2 of 22" in report.summary()
    kept_report = ContaminationReport()
    kept = list(screen([*clean, disguised, leaked], kept_report, exclude=True, index=index))
    assert [t.id for t in kept] == [t.id for t in clean] and kept_report.excluded == 2
    assert [t.id for t in exclude_arc([disguised, *clean[:2]], index=index)] == [t.id for t in clean[:2]]


def test_family_is_a_plain_dataclass():
    f = FAMILIES["rot90"]
    assert isinstance(f, Family) and f.moves_cells and "dihedral" in f.tags
