"""``objects`` in the reference's exact iteration order: CPython's set tables, replayed in compiled code.

A frozenset's iteration order is its hash table's slot order, and where two keys collide the one inserted
first keeps the better slot. So the order of the cells inside each object of arc-dsl's ``objects`` depends on
the order its breadth-first search adds them, which in turn depends on the slot order of every intermediate
set (``cands``, ``neighborhood``) of that search. This module runs the same search on integer cell ids while
keeping a copy of each intermediate set's table laid out exactly as CPython 3 lays it out: open addressing with
runs of ``LINEAR_PROBES`` slots and perturbed jumps, growth when the table is 60% full, one big resize before
a merge, copying of equal-sized tables, the two algorithms of ``set.__sub__``. The hashes are the
interpreter's own (``hash((i, j))``, taken once per process), so the only assumption is the table algorithm.
It is checked on first use in a process, by comparing whole ``objects`` results with the reference on a grid
full of collisions (``fast._replay_self_check``; a mismatch sends every call to the reference, with a
warning), and by the tests on thousands of grids.

The kernel returns each object's cells in the order the reference adds them; building ``set(cells)`` and
then ``frozenset`` of it in Python reproduces the reference's object exactly, slot for slot. Two shortcuts
leave the result unchanged: an object whose search meets one new cell per step has only one possible order
(no tables needed), and adding a key that a set already holds changes nothing in CPython either, so such adds
are skipped without probing.
"""

from __future__ import annotations

import numpy as np

from arcscope.dsl._kernels import njit, tie_colour

LINEAR_PROBES = 9
PERTURB_SHIFT = 5
EMPTY = -1
DUMMY = -2
CAP = 8192
"""Room for the largest table a 30 x 30 grid needs (900 keys grow a table to at most 4096 slots)."""

# A set is (table, meta): table[0 .. mask] holds cell ids (EMPTY / DUMMY), meta = [mask, fill, used].


@njit(inline="always")
def _new(table, meta):
    for s in range(8):
        table[s] = EMPTY
    meta[0] = 7
    meta[1] = 0
    meta[2] = 0


@njit(inline="always")
def _insert_clean(table, mask, key, hashes):
    h = np.uint64(hashes[key])
    m = np.uint64(mask)
    perturb = h
    i = h & m
    while True:
        if table[i] == EMPTY:
            table[i] = key
            return
        if i + np.uint64(LINEAR_PROBES) <= m:
            for j in range(1, LINEAR_PROBES + 1):
                if table[i + np.uint64(j)] == EMPTY:
                    table[i + np.uint64(j)] = key
                    return
        perturb = perturb >> np.uint64(PERTURB_SHIFT)
        i = (i * np.uint64(5) + np.uint64(1) + perturb) & m


@njit
def _resize(table, meta, minused, hashes, scratch):
    newsize = 8
    while newsize <= minused:
        newsize <<= 1
    oldsize = meta[0] + 1
    for s in range(oldsize):
        scratch[s] = table[s]
    for s in range(newsize):
        table[s] = EMPTY
    meta[0] = newsize - 1
    for s in range(oldsize):
        k = scratch[s]
        if k >= 0:
            _insert_clean(table, newsize - 1, k, hashes)
    meta[1] = meta[2]


@njit(inline="always")
def _add(table, meta, key, hashes, scratch):
    """set_add_entry for a table without dummies."""
    h = np.uint64(hashes[key])
    m = np.uint64(meta[0])
    perturb = h
    i = h & m
    while True:
        probes = LINEAR_PROBES if i + np.uint64(LINEAR_PROBES) <= m else 0
        for j in range(probes + 1):
            k = table[i + np.uint64(j)]
            if k == EMPTY:
                table[i + np.uint64(j)] = key
                meta[1] += 1
                meta[2] += 1
                if meta[1] * 5 >= meta[0] * 3:
                    used = meta[2]
                    _resize(table, meta, used * 2 if used > 50000 else used * 4, hashes, scratch)
                return
            if k == key:
                return
        perturb = perturb >> np.uint64(PERTURB_SHIFT)
        i = (i * np.uint64(5) + np.uint64(1) + perturb) & m


@njit
def _merge_into_empty(table, meta, other, other_mask, other_used, hashes, scratch):
    """``set |= other`` for an empty ``table`` (set_merge's first branch, also ``set.copy``).

    One resize up front if ``other`` would fill the table past 3/5, then a slot-for-slot copy when both tables
    have one size, else a clean insert of ``other``'s keys in slot order. ``other`` has no dummies.
    """
    if (meta[1] + other_used) * 5 >= meta[0] * 3:
        _resize(table, meta, (meta[2] + other_used) * 2, hashes, scratch)
    mask = meta[0]
    if mask == other_mask:
        for s in range(mask + 1):
            table[s] = other[s]
    else:
        for s in range(other_mask + 1):
            k = other[s]
            if k >= 0:
                _insert_clean(table, mask, k, hashes)
    meta[1] = other_used
    meta[2] = other_used


@njit(inline="always")
def _merge_neighbours(table, meta, comp, comp_mask, comp_members, comp_used, p, hashes, scratch, seen, stamp):
    """``set |= neighbours(p)``, the neighbour set read in place from the per-shape tables (row p of ``comp``).

    ``seen[k] == stamp`` marks the keys already in ``table``: adding one of those changes nothing in CPython
    either, so it is skipped without probing.
    """
    n_members = comp_used[p]
    if n_members == 0:
        return
    if meta[1] == 0:
        _merge_into_empty(table, meta, comp[p], comp_mask[p], n_members, hashes, scratch)
        for t in range(n_members):
            seen[comp_members[p, t]] = stamp
        return
    if (meta[1] + n_members) * 5 >= meta[0] * 3:
        _resize(table, meta, (meta[2] + n_members) * 2, hashes, scratch)
    for t in range(n_members):
        k = comp_members[p, t]
        if seen[k] != stamp:
            seen[k] = stamp
            _add(table, meta, k, hashes, scratch)


@njit
def _difference(src, src_meta, taken, n_taken, dst, dst_meta, hashes, scratch):
    """``dst = src - taken`` (set_difference); ``taken`` is a membership array of ``n_taken`` cells."""
    used = src_meta[2]
    src_mask = src_meta[0]
    _new(dst, dst_meta)
    if (used >> 2) > n_taken:
        # A copy of src, then taken's members discarded (left as dummies).
        _merge_into_empty(dst, dst_meta, src, src_mask, used, hashes, scratch)
        for s in range(dst_meta[0] + 1):
            k = dst[s]
            if k >= 0 and taken[k]:
                dst[s] = DUMMY
                dst_meta[2] -= 1
        if dst_meta[1] - dst_meta[2] > dst_meta[0] // 4:
            left = dst_meta[2]
            _resize(dst, dst_meta, left * 2 if left > 50000 else left * 4, hashes, scratch)
        return
    for s in range(src_mask + 1):
        k = src[s]
        if k >= 0 and not taken[k]:
            _add(dst, dst_meta, k, hashes, scratch)


@njit
def exact_object_keys(
    flat,
    h,
    w,
    univalued,
    diagonal,
    without_bg,
    seed_order,
    hashes,
    comp,
    comp_mask,
    comp_used,
    comp_members,
    keys,
    starts,
):
    """The reference's ``objects`` search, cell for cell: returns the number of objects.

    ``seed_order`` lists the flat cells in ``asindices`` iteration order, ``hashes[p]`` is ``hash((i, j))``,
    ``comp[p]`` the table of the in-grid neighbour set the reference builds for cell p (``comp_mask``,
    ``comp_used``; ``comp_members`` lists its members in slot order). ``keys`` receives
    ``colour * 900 + i * 30 + j`` per cell in the order the reference adds it to its object, ``starts`` the
    object boundaries. -1 when a colour is above 9.
    """
    n = h * w
    for p in range(n):
        if flat[p] > 9:
            return -1
    bg = tie_colour(flat, n, True) if without_bg else -1
    taken = np.zeros(n, np.bool_)
    n_taken = 0
    front = np.empty(CAP, np.int64)
    front_meta = np.zeros(3, np.int64)
    reach = np.empty(CAP, np.int64)
    reach_meta = np.zeros(3, np.int64)
    scratch = np.empty(CAP, np.int64)
    mark = np.zeros(n, np.int64)
    path = np.empty(n, np.int64)
    in_reach = np.zeros(n, np.int64)
    layer = 0
    stamp = 0
    n_obj = 0
    n_keys = 0
    starts[0] = 0
    for t in range(n):
        seed = seed_order[t]
        if taken[seed]:
            continue
        colour = flat[seed]
        if colour == bg:
            continue
        # An object whose search meets at most one new cell per step (a single cell, a domino, a line seeded
        # at its end) has only one possible insertion order: walk it without replaying any set.
        stamp += 1
        mark[seed] = stamp
        path[0] = seed
        n_path = 1
        cur = seed
        forced = True
        while True:
            ci = cur // w
            cj = cur - ci * w
            nxt = -1
            count = 0
            for di in range(-1, 2):
                for dj in range(-1, 2):
                    if (di == 0 and dj == 0) or (not diagonal and di != 0 and dj != 0):
                        continue
                    a = ci + di
                    b = cj + dj
                    if 0 <= a < h and 0 <= b < w:
                        q = a * w + b
                        v = flat[q]
                        if mark[q] != stamp and ((v == colour) if univalued else (v != bg)):
                            count += 1
                            nxt = q
            if count == 0:
                break
            if count > 1:
                forced = False
                break
            mark[nxt] = stamp
            path[n_path] = nxt
            n_path += 1
            cur = nxt
        if forced:
            for t2 in range(n_path):
                p = path[t2]
                i = p // w
                keys[n_keys] = flat[p] * 900 + i * 30 + (p - i * w)
                n_keys += 1
                taken[p] = True
            n_taken += n_path
            n_obj += 1
            starts[n_obj] = n_keys
            continue
        _new(front, front_meta)
        _add(front, front_meta, seed, hashes, scratch)
        while front_meta[2] > 0:
            _new(reach, reach_meta)
            layer += 1
            for s in range(front_meta[0] + 1):
                p = front[s]
                if p < 0:
                    continue
                v = flat[p]
                if (v == colour) if univalued else (v != bg):
                    i = p // w
                    keys[n_keys] = v * 900 + i * 30 + (p - i * w)
                    n_keys += 1
                    if not taken[p]:
                        taken[p] = True
                        n_taken += 1
                    _merge_neighbours(
                        reach,
                        reach_meta,
                        comp,
                        comp_mask,
                        comp_members,
                        comp_used,
                        p,
                        hashes,
                        scratch,
                        in_reach,
                        layer,
                    )
            _difference(reach, reach_meta, taken, n_taken, front, front_meta, hashes, scratch)
        n_obj += 1
        starts[n_obj] = n_keys
    return n_obj


@njit
def neighbour_tables(h, w, near_i, near_j, hashes, comp, comp_mask, comp_used, comp_members):
    """Per cell of an h x w grid, the table of ``{(i, j) for i, j in around(loc) if in the grid}``.

    ``near_i``/``near_j`` (row ``i * 30 + j``) hold ``around((i, j))`` in its iteration order; the set is
    built by adding the in-grid ones in that order, as the reference's comprehension does. Writes
    ``comp[p]`` (the 32-slot table), ``comp_mask``, ``comp_used`` and ``comp_members`` (members in slot order).
    """
    table = np.empty(CAP, np.int64)
    meta = np.zeros(3, np.int64)
    scratch = np.empty(CAP, np.int64)
    for p in range(h * w):
        i = p // w
        j = p - i * w
        _new(table, meta)
        for t in range(near_i.shape[1]):
            a = near_i[i * 30 + j, t]
            b = near_j[i * 30 + j, t]
            if 0 <= a < h and 0 <= b < w:
                _add(table, meta, a * w + b, hashes, scratch)
        for s in range(32):
            comp[p, s] = table[s] if s <= meta[0] else EMPTY
        comp_mask[p] = meta[0]
        comp_used[p] = meta[2]
        n_members = 0
        for s in range(meta[0] + 1):
            if table[s] >= 0:
                comp_members[p, n_members] = table[s]
                n_members += 1
        for t in range(n_members, 8):
            comp_members[p, t] = EMPTY
