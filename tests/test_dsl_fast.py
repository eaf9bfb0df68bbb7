"""Fast kernels against the reference on random grids (hypothesis), plus the set-order emulation they rely on."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import arcscope.dsl as public
from arcscope.dsl import _kernels as K
from arcscope.dsl import fast
from arcscope.dsl import reference as R

SETTINGS = settings(max_examples=60, deadline=None)


@st.composite
def grids(draw, max_side: int = 14):
    """Random grids with few colours (so objects, ties and repeats are common)."""
    h = draw(st.integers(1, max_side))
    w = draw(st.integers(1, max_side))
    colours = draw(st.lists(st.integers(0, 9), min_size=1, max_size=5, unique=True))
    cells = draw(st.lists(st.sampled_from(colours), min_size=h * w, max_size=h * w))
    return tuple(tuple(cells[i * w : (i + 1) * w]) for i in range(h))


FLAGS = list(itertools.product((True, False), repeat=3))


@pytest.fixture
def order_mode():
    """Set fast.objects' order mode for one test, restoring it (and the environment variable) after."""
    import os

    saved_env = os.environ.get("ARCSCOPE_DSL_ORDER")
    saved = fast.object_order()
    yield fast.set_object_order
    fast.set_object_order(saved)
    if saved_env is None:
        os.environ.pop("ARCSCOPE_DSL_ORDER", None)
    else:
        os.environ["ARCSCOPE_DSL_ORDER"] = saved_env


def _layout(objs):
    return [list(o) for o in objs]


@SETTINGS
@given(grids(30), st.sampled_from(FLAGS))
def test_objects_exact_order_is_the_references(grid, flags):
    # Default mode: every object iterates cell for cell as the reference's does.
    assert fast.object_order() == "exact"
    got, want = fast.objects(grid, *flags), R.objects(grid, *flags)
    assert got == want
    assert _layout(got) == _layout(want)


def test_objects_exact_order_on_big_one_colour_and_striped_grids():
    # Large objects (hundreds of cells, many table resizes and collisions) and the copy-and-discard path of
    # set difference (a big frontier while few cells are taken yet).
    rng = np.random.default_rng(3)
    cases = [
        ((0,) * 30,) * 30,
        tuple(tuple((i + j) % 2 for j in range(30)) for i in range(30)),
        tuple(tuple(int(v) for v in row) for row in rng.choice([0, 0, 0, 0, 3, 4], size=(30, 30))),
        tuple(tuple(int(v) for v in row) for row in rng.choice([1, 2], size=(25, 17))),
    ]
    for grid in cases:
        for flags in FLAGS:
            assert _layout(fast.objects(grid, *flags)) == _layout(R.objects(grid, *flags)), flags


@SETTINGS
@given(grids(), st.sampled_from(FLAGS))
def test_objects_fast_order_equal_reference(grid, flags):
    old = fast.set_object_order("fast")
    try:
        got, want = fast.objects(grid, *flags), R.objects(grid, *flags)
    finally:
        fast.set_object_order(old)
    assert got == want
    # The set of objects iterates in the reference's order (each object is equal, element by element).
    assert tuple(got) == tuple(want)


def test_exact_mode_falls_back_to_the_reference_where_the_replay_check_fails(monkeypatch):
    # An interpreter whose sets are laid out differently: the first use warns and the reference answers.
    monkeypatch.setattr(fast, "_replay_self_check", lambda: False)
    monkeypatch.setattr(fast, "_replay", {})
    monkeypatch.setitem(fast._order, "checked", None)
    grid = tuple(tuple((i * 7 + j * 3) % 4 for j in range(12)) for i in range(9))
    with pytest.warns(RuntimeWarning, match="reference implementation"):
        got = fast.objects(grid, True, True, False)
    assert _layout(got) == _layout(R.objects(grid, True, True, False))
    assert fast._order["checked"] is False and fast._replay == {}


def test_object_order_modes(order_mode):
    import os

    assert order_mode("fast") == "exact"
    assert fast.object_order() == "fast" and os.environ["ARCSCOPE_DSL_ORDER"] == "fast"
    grid = ((1, 1, 0), (0, 1, 2), (2, 2, 2))
    assert fast.objects(grid, False, True, True) == R.objects(grid, False, True, True)
    with pytest.raises(ValueError, match="exact, fast"):
        order_mode("sorted")
    assert fast.object_order() == "fast"


@SETTINGS
@given(grids(30))
def test_grid_kernels_equal_reference_including_order(grid):
    for name in ("mostcolor", "leastcolor", "palette", "numcolors", "asindices", "partition", "fgpartition"):
        got, want = getattr(fast, name)(grid), getattr(R, name)(grid)
        assert got == want, name
        if isinstance(want, frozenset):
            assert tuple(got) == tuple(want), name
            if name.endswith("partition"):
                assert [tuple(o) for o in got] == [tuple(o) for o in want], name


@SETTINGS
@given(grids(30), st.integers(0, 10))
def test_ofcolor_equal_reference(grid, value):
    got, want = fast.ofcolor(grid, value), R.ofcolor(grid, value)
    assert got == want and tuple(got) == tuple(want)


@SETTINGS
@given(grids(12), st.data())
def test_occurrences_equal_reference(grid, data):
    h, w = len(grid), len(grid[0])
    # A piece cut from the grid itself (so matches exist), or an arbitrary small object.
    if data.draw(st.booleans()):
        i0, j0 = data.draw(st.integers(0, h - 1)), data.draw(st.integers(0, w - 1))
        oh, ow = data.draw(st.integers(1, h - i0)), data.draw(st.integers(1, w - j0))
        cells = [(grid[i][j], (i, j)) for i in range(i0, i0 + oh) for j in range(j0, j0 + ow)]
        keep = data.draw(st.lists(st.booleans(), min_size=len(cells), max_size=len(cells)))
        obj = frozenset(c for c, k in zip(cells, keep, strict=True) if k) or frozenset(cells[:1])
    else:
        obj = frozenset(
            data.draw(
                st.lists(
                    st.tuples(st.integers(0, 9), st.tuples(st.integers(-3, 4), st.integers(-3, 4))),
                    min_size=1,
                    max_size=5,
                )
            )
        )
    got, want = fast.occurrences(grid, obj), R.occurrences(grid, obj)
    assert got == want and tuple(got) == tuple(want)


def test_set_rank_matches_cpython_for_every_small_colour_sequence():
    # set(values) of small ints: the order CPython iterates, for every first-seen order of up to 4 colours,
    # and some longer ones (ascending from five on).
    seqs = [p for k in range(1, 5) for p in itertools.permutations(range(10), k)]
    seqs += [tuple(np.random.default_rng(s).permutation(10)[: 5 + s % 6]) for s in range(50)]
    for seq in seqs:
        rank = np.full(10, 99, np.int64)
        K.set_rank(np.array(seq, np.int64), len(seq), rank)
        walked = sorted(seq, key=lambda c: rank[c])
        assert walked == list(set(seq)), seq


def test_tie_colour_matches_reference_on_ties():
    rng = np.random.default_rng(1)
    for _ in range(300):
        k = int(rng.integers(2, 5))
        colours = rng.choice(10, k, replace=False)
        row = np.repeat(colours, 4)
        rng.shuffle(row)
        grid = (tuple(int(v) for v in row),)
        flat = np.array(row, np.uint8)
        assert K.tie_colour(flat, len(row), True) == R.mostcolor(grid)
        assert K.tie_colour(flat, len(row), False) == R.leastcolor(grid)


@pytest.mark.parametrize(
    "grid",
    [
        [[0, 1], [1, 1]],  # lists, not tuples
        ((0, 1), (1,)),  # ragged
        ((0, 12), (1, 1)),  # colour above 9
        ((0, -1), (1, 1)),  # negative colour
        tuple(tuple(0 for _ in range(31)) for _ in range(2)),  # wider than 30
    ],
)
def test_unusual_grids_fall_back_to_the_reference(grid):
    assert fast.as_array(grid) is None
    try:
        want = R.objects(grid, True, False, True)
    except Exception as e:  # noqa: BLE001 - the fast path must raise the same way
        with pytest.raises(type(e)):
            fast.objects(grid, True, False, True)
    else:
        assert fast.objects(grid, True, False, True) == want
    assert fast.mostcolor(grid) == R.mostcolor(grid)


def test_occurrences_with_indices_or_clashing_cells_behaves_like_reference():
    grid = tuple(tuple((i + j) % 3 for j in range(9)) for i in range(9))
    with pytest.raises(TypeError):
        R.occurrences(grid, frozenset({(0, 0)}))
    with pytest.raises(TypeError):
        fast.occurrences(grid, frozenset({(0, 0)}))
    clash = frozenset({(0, (0, 0)), (1, (0, 0))})
    assert fast.occurrences(grid, clash) == R.occurrences(grid, clash) == frozenset()
    assert fast.occurrences(grid, frozenset()) == R.occurrences(grid, frozenset())


def test_public_primitives_use_fast_kernels_inside_other_primitives():
    # cover() calls mostcolor(); in the public namespace that call goes to the fast kernel.
    assert public.cover.__globals__["mostcolor"] is fast.mostcolor
    assert R.cover.__globals__["mostcolor"] is R.mostcolor


def test_numba_kernels_are_compiled():
    pytest.importorskip("numba")
    assert K.HAVE_NUMBA
    assert hasattr(K.label_grid, "signatures")


def test_direct_frozenset_sizes_match_the_interpreter():
    # Where _DIRECT says so, frozenset(cells) iterates exactly as frozenset(set(cells)) (the reference's
    # construction); checked against the running interpreter for every object size up to 300 cells.
    rng = np.random.default_rng(0)
    raw = rng.integers(0, 10, size=(900, 3)) * [1, 3, 3]
    cells = list(dict.fromkeys((int(v), (int(i), int(j))) for v, i, j in raw))
    assert len(cells) > 300
    for n in range(1, 301):
        part = cells[:n]
        if fast._DIRECT[n]:
            assert list(frozenset(part)) == list(frozenset(set(part))), n
