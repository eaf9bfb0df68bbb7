"""Exact piecewise-linear analysis of a bias-free ReLU RNN.

Fix which neuron is active at which step (an activation pattern) and every ReLU becomes a fixed 0/1 gate: the
RNN is then one linear map ``output = A @ x`` with ``A`` of shape ``[out, T]``. The inputs that produce a pattern
form a polyhedral cone (no bias, so every constraint passes through the origin), the pattern's *region*.

- :func:`classify_regions` sorts many inputs into their regions at once (vectorised, exact grouping).
- :func:`region_linear_map` gives a region's ``A``; :func:`check_regions` confirms ``A @ x`` equals the forward
  output on the inputs of each region.
- :func:`enumerate_regions` finds every realisable pattern of a small model exactly: it grows patterns one
  neuron-step at a time and keeps a branch only while its cone has an interior point (a sample already inside
  it, or a linear program that finds one).

Convention (as candle-mi's stoicheia): neuron ``j`` is *active* at step ``t`` when its pre-activation is >= 0.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import torch

from arcscope.progress import ProgressFn, emit
from arcscope.rnn.errors import EnumerationLimitError, InputShapeError, RegionOverflowError, RnnError
from arcscope.rnn.model import CHUNK, ReluRNN, _overflow, as_inputs, forward, scan

# ----------------------------------------------------------------------------------------------------------
# Activation patterns
# ----------------------------------------------------------------------------------------------------------


class ActivationPattern:
    """Which neuron is active at which step: H x T bits (any size), hashable; bit ``t*H + j`` is (t, j)."""

    __slots__ = ("_bits", "_hash", "hidden_size", "seq_len")

    def __init__(self, bits: bytes, hidden_size: int, seq_len: int):
        if hidden_size < 1 or seq_len < 1:
            raise RnnError(f"ActivationPattern: H and T must be >= 1, got H={hidden_size}, T={seq_len}")
        need = (hidden_size * seq_len + 7) // 8
        if len(bits) != need:
            raise RnnError(
                f"ActivationPattern: H={hidden_size}, T={seq_len} needs {need} bytes, got {len(bits)}"
            )
        self._bits = bytes(bits)
        self.hidden_size = hidden_size
        self.seq_len = seq_len
        self._hash = hash((self._bits, hidden_size, seq_len))

    @classmethod
    def from_array(cls, active: Any) -> ActivationPattern:
        """From a boolean array ``[T, H]`` (True = active)."""
        a = np.asarray(active, dtype=bool)
        if a.ndim != 2:
            raise RnnError(f"ActivationPattern.from_array: expected [T, H], got shape {list(a.shape)}")
        return cls(np.packbits(a.reshape(-1), bitorder="little").tobytes(), a.shape[1], a.shape[0])

    @classmethod
    def from_pre_activations(cls, pre: Any) -> ActivationPattern:
        """From one input's pre-activations ``[T, H]``: active where the pre-activation is >= 0."""
        return cls.from_array(np.asarray(pre) >= 0)

    @classmethod
    def parse(cls, text: str) -> ActivationPattern:
        """From the ``str()`` form: one group of 0/1 per step, neuron 0 first, separated by ``|``."""
        steps = text.strip().split("|")
        if not steps or any(len(s) != len(steps[0]) or set(s) - {"0", "1"} for s in steps) or not steps[0]:
            raise RnnError(
                f"not an activation pattern: {text!r} (expected e.g. '10|01|11', one group per step)"
            )
        return cls.from_array([[c == "1" for c in s] for s in steps])

    @property
    def bits(self) -> bytes:
        """The packed bits (little-endian within each byte)."""
        return self._bits

    def to_array(self) -> np.ndarray:
        """Boolean array ``[T, H]``."""
        flat = np.unpackbits(np.frombuffer(self._bits, np.uint8), bitorder="little")
        return flat[: self.total_slots].reshape(self.seq_len, self.hidden_size).astype(bool)

    def is_active(self, t: int, j: int) -> bool:
        """Whether neuron ``j`` is active at step ``t``."""
        if not (0 <= t < self.seq_len and 0 <= j < self.hidden_size):
            raise IndexError(f"(t={t}, j={j}) outside T={self.seq_len}, H={self.hidden_size}")
        i = t * self.hidden_size + j
        return bool(self._bits[i >> 3] >> (i & 7) & 1)

    def count_active(self) -> int:
        """Active neuron-steps in total."""
        return int(np.unpackbits(np.frombuffer(self._bits, np.uint8)).sum())

    @property
    def total_slots(self) -> int:
        """H * T."""
        return self.hidden_size * self.seq_len

    def active_per_timestep(self) -> list[int]:
        """Number of active neurons at each step."""
        return [int(v) for v in self.to_array().sum(axis=1)]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ActivationPattern):
            return NotImplemented
        return (self._bits, self.hidden_size, self.seq_len) == (other._bits, other.hidden_size, other.seq_len)

    def __hash__(self) -> int:
        return self._hash

    def __str__(self) -> str:
        return "|".join("".join("1" if v else "0" for v in row) for row in self.to_array())

    def __repr__(self) -> str:
        return f"ActivationPattern('{self}')"


# ----------------------------------------------------------------------------------------------------------
# Region classification
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RegionInfo:
    """One region of a :class:`RegionMap`: its pattern, how many inputs fell in it, and the first of them."""

    index: int
    count: int
    representative: np.ndarray
    pattern: ActivationPattern


class RegionMap:
    """Inputs grouped by activation pattern, regions sorted by population (ties: first seen first).

    ``assignment[i]`` is the region index of input ``i``; ``counts``, ``first`` (index of each region's
    representative input) and ``packed`` (each region's pattern bits) are aligned arrays. ``regions`` builds
    the :class:`RegionInfo` list on first use.
    """

    def __init__(
        self,
        hidden_size: int,
        seq_len: int,
        inputs: np.ndarray,
        counts: np.ndarray,
        first: np.ndarray,
        packed: np.ndarray,
        assignment: np.ndarray,
    ):
        self.hidden_size = hidden_size
        self.seq_len = seq_len
        self.inputs = inputs
        self.counts = counts
        self.first = first
        self.packed = packed
        self.assignment = assignment

    @property
    def total_inputs(self) -> int:
        """Number of inputs classified."""
        return len(self.assignment)

    @property
    def representatives(self) -> np.ndarray:
        """One input per region ``[regions, T]`` (the first input seen in it)."""
        return self.inputs[self.first]

    def pattern(self, i: int) -> ActivationPattern:
        """The activation pattern of region ``i``."""
        return ActivationPattern(self.packed[i].tobytes(), self.hidden_size, self.seq_len)

    def info(self, i: int) -> RegionInfo:
        """Region ``i`` as a :class:`RegionInfo`."""
        return RegionInfo(i, int(self.counts[i]), self.inputs[self.first[i]], self.pattern(i))

    def top(self, k: int) -> list[RegionInfo]:
        """The ``k`` most populated regions."""
        return [self.info(i) for i in range(min(k, len(self)))]

    @cached_property
    def regions(self) -> list[RegionInfo]:
        """All regions, most populated first."""
        return self.top(len(self))

    @cached_property
    def _index(self) -> dict[bytes, int]:
        return {row.tobytes(): i for i, row in enumerate(self.packed)}

    def index_of(self, pattern: ActivationPattern) -> int | None:
        """The index of the region with ``pattern``, or None when no input fell in it."""
        return self._index.get(pattern.bits)

    def coverage(self, k: int) -> float:
        """Fraction of the inputs in the ``k`` most populated regions."""
        return float(self.counts[:k].sum() / max(self.total_inputs, 1))

    def __len__(self) -> int:
        return len(self.counts)

    def __iter__(self) -> Iterator[RegionInfo]:
        return iter(self.regions)

    def __getitem__(self, i: int) -> RegionInfo:
        if not -len(self) <= i < len(self):
            raise IndexError(f"region {i} out of range ({len(self)} regions)")
        return self.info(i % len(self))

    def summary(self, top: int = 10) -> dict:
        """A JSON-ready summary: totals and the ``top`` regions with their patterns and counts."""
        return {
            "hidden_size": self.hidden_size,
            "seq_len": self.seq_len,
            "total_inputs": self.total_inputs,
            "regions": len(self),
            "possible": f"2^{self.hidden_size * self.seq_len}",
            "top": [
                {
                    "index": r.index,
                    "count": r.count,
                    "fraction": r.count / max(self.total_inputs, 1),
                    "pattern": str(r.pattern),
                    "active_per_timestep": r.pattern.active_per_timestep(),
                    "representative": [float(v) for v in r.representative],
                }
                for r in self.top(top)
            ],
        }


def pattern_bits(model: ReluRNN, inputs: Any, *, dtype: type = np.float64) -> np.ndarray:
    """Packed activation patterns ``[n, ceil(H*T/8)]`` uint8 of many inputs (bit ``t*H + j``, little-endian)."""
    x = as_inputs(model, inputs, dtype=dtype)
    nbytes = (model.hidden_size * x.shape[1] + 7) // 8
    return np.ascontiguousarray(_pattern_words(model, x, dtype).view(np.uint8)[:, :nbytes])


USE_NUMBA = True
"""Use the compiled kernel (numba, when installed) for activation patterns; False: the torch path."""


def _numba_kernels() -> Any:
    """The compiled kernels module, or None when numba is not installed."""
    if not USE_NUMBA:
        return None
    try:
        from arcscope.rnn import _kernels
    except ImportError:
        return None
    return _kernels


def _threads(threads: int | None) -> int:
    try:
        import numba
    except ImportError:
        return 1
    return max(1, min(threads or numba.config.NUMBA_NUM_THREADS, numba.config.NUMBA_NUM_THREADS))


def _pattern_words(model: ReluRNN, x: np.ndarray, dtype: type, threads: int | None = None) -> np.ndarray:
    """Activation patterns as little-endian uint64 words ``[n, ceil(H*T/64)]`` (unused high bits 0)."""
    n, steps = x.shape
    hid = model.hidden_size
    nw = (hid * steps + 63) // 64
    kernels = _numba_kernels()
    if kernels is not None:
        import numba

        w = model.weights(dtype)
        out = np.zeros((n, nw), dtype=np.uint64)
        k = _threads(threads)
        previous = numba.get_num_threads()
        numba.set_num_threads(k)
        try:
            xc, w_hh = np.ascontiguousarray(x, dtype=dtype), np.ascontiguousarray(w.w_hh)
            bad = kernels.words_parallel(xc, w_hh, w.w_ih, out, k)
        finally:
            numba.set_num_threads(previous)
        if bad >= 0:
            raise RegionOverflowError(
                f"input {bad}: {_overflow(model, steps)}; the activation patterns are undefined past the overflow"
            )
        return out
    out = np.zeros((n, nw * 8), dtype=np.uint8)
    nbytes = (hid * steps + 7) // 8
    active = torch.empty((min(CHUNK, max(n, 1)), steps, hid), dtype=torch.bool)

    def record(s: int, t: int, pre: torch.Tensor, hidden: torch.Tensor) -> None:
        torch.ge(pre, 0, out=active[: len(pre), t])
        if t == steps - 1:
            block = active[: len(pre)].numpy().reshape(len(pre), -1)
            out[s : s + len(pre), :nbytes] = np.packbits(block, axis=1, bitorder="little")

    try:
        scan(model, x, dtype=dtype, on_step=record)
    except RegionOverflowError as e:
        raise RegionOverflowError(f"{e}; the activation patterns are undefined past the overflow") from e
    return out.view(np.uint64)


_MIX = np.array([0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9, 0xD6E8FEB86659FD93], np.uint64)


def _group_rows(words: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exact grouping of equal uint64 rows: (index of each group's first row, group of every row, counts)."""
    kernels = _numba_kernels()
    if kernels is not None and 0 < len(words) < 2**30:
        return kernels.group_rows(np.ascontiguousarray(words))
    n, width = words.shape
    if n == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty
    if width == 1:
        key = words[:, 0]
    else:
        # A 64-bit mix of the words; checked word for word below, so grouping stays exact on a collision.
        key = np.zeros(n, dtype=np.uint64)
        with np.errstate(over="ignore"):
            for i in range(width):
                key ^= words[:, i] * _MIX[i % 4] + np.uint64(i)
                key ^= key >> np.uint64(29)
    first, inverse, counts = _group_keys([key])
    if width > 1 and not (words == words[first[inverse]]).all():
        first, inverse, counts = _group_keys([words[:, i] for i in range(width)])
    return first, inverse, counts


def _group_keys(columns: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Group rows by equal values in all ``columns``: (each group's earliest row, group of every row, counts)."""
    n = len(columns[0])
    order = np.argsort(columns[0]) if len(columns) == 1 else np.lexsort(columns[::-1])
    new = np.zeros(n, dtype=bool)
    new[0] = True
    for col in columns:
        sc = col[order]
        new[1:] |= sc[1:] != sc[:-1]
    starts = np.flatnonzero(new)
    counts = np.diff(np.append(starts, n))
    inverse = np.empty(n, dtype=np.int64)
    inverse[order] = np.cumsum(new) - 1
    # The sort need not be stable: the earliest row of each group is the minimum index within it.
    return np.minimum.reduceat(order, starts), inverse, counts


def classify_regions(
    model: ReluRNN, inputs: Any, *, dtype: type = np.float64, threads: int | None = None
) -> RegionMap:
    """Group ``inputs`` ``[n, T]`` by activation pattern: counts, a representative each, most populated first.

    Computes in float64 by default (float32 is faster and matches the model's own precision, but may put
    inputs within rounding of a ReLU boundary on the other side). ``threads`` caps the compiled kernel's
    threads (default: numba's, i.e. all cores); the result is the same for any number.
    """
    x = as_inputs(model, inputs, dtype=dtype)
    words = _pattern_words(model, x, dtype, threads)
    first, inverse, counts = _group_rows(words)
    nbytes = (model.hidden_size * x.shape[1] + 7) // 8
    # Most populated first, ties by first appearance: one integer key (first is unique) sorts fastest.
    order = np.argsort((counts.max(initial=0) - counts) * np.int64(len(x)) + first)
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    return RegionMap(
        model.hidden_size,
        x.shape[1],
        x,
        counts[order],
        first[order],
        np.ascontiguousarray(words[first[order]].view(np.uint8)[:, :nbytes]),
        rank[inverse],
    )


# ----------------------------------------------------------------------------------------------------------
# A region's linear maps
# ----------------------------------------------------------------------------------------------------------


def _check_pattern(model: ReluRNN, pattern: ActivationPattern) -> None:
    if pattern.hidden_size != model.hidden_size:
        raise InputShapeError(
            f"pattern has H={pattern.hidden_size} neurons but {model.name} has H={model.hidden_size}"
        )
    if model.seq_len and pattern.seq_len != model.seq_len:
        raise InputShapeError(
            f"pattern has T={pattern.seq_len} steps but {model.name} takes T={model.seq_len}"
        )


def region_constraints(model: ReluRNN, pattern: ActivationPattern, *, dtype: type = np.float64) -> np.ndarray:
    """Pre-activation maps ``[T, H, T]`` of a region: ``pre[t, j] = C[t, j] @ x`` for every input x in it."""
    _check_pattern(model, pattern)
    w = model.weights(dtype)
    gates = pattern.to_array()
    steps, hid = pattern.seq_len, pattern.hidden_size
    pre = np.zeros((steps, hid, steps), dtype=dtype)
    hidden = np.zeros((hid, steps), dtype=dtype)
    with np.errstate(over="ignore", invalid="ignore"):
        for t in range(steps):
            pre[t] = w.w_hh @ hidden
            pre[t, :, t] += w.w_ih
            if not np.isfinite(pre[t]).all():
                raise _map_overflow(model, t, dtype)
            hidden = pre[t] * gates[t][:, None]
    return pre


def _map_overflow(model: ReluRNN, t: int, dtype: type) -> RegionOverflowError:
    rho = float(np.max(np.abs(np.linalg.eigvals(model.weights().w_hh))))
    return RegionOverflowError(
        f"{model.name}: region linear map overflowed {np.dtype(dtype).name} at timestep {t} "
        f"(W_hh spectral radius {rho:.3g}: the recurrent matrix is not contractive on this region)"
    )


def region_linear_map(model: ReluRNN, pattern: ActivationPattern, *, dtype: type = np.float64) -> np.ndarray:
    """The region's exact linear map ``A`` ``[out, T]``: ``output = A @ x`` for every input x in it.

    Raises :class:`RegionOverflowError` when a product of recurrent matrices overflows ``dtype``.
    """
    pre = region_constraints(model, pattern, dtype=dtype)
    last = pre[-1] * pattern.to_array()[-1][:, None]
    with np.errstate(over="ignore", invalid="ignore"):
        a = model.weights(dtype).w_out @ last
    if not np.isfinite(a).all():
        raise _map_overflow(model, pattern.seq_len - 1, dtype)
    return a


def in_region(model: ReluRNN, pattern: ActivationPattern, inputs: Any) -> np.ndarray:
    """Boolean ``[n]``: which inputs produce ``pattern``."""
    x = as_inputs(model, inputs)
    bits = pattern_bits(model, x)
    return (bits == np.frombuffer(pattern.bits, np.uint8)).all(axis=1)


@dataclass(frozen=True)
class RegionCheck:
    """How closely a region's linear map reproduces the forward pass on the inputs of that region."""

    index: int
    pattern: ActivationPattern
    count: int
    max_abs_error: float
    max_rel_error: float

    @property
    def ok(self) -> bool:
        """True when ``A @ x`` equals the forward output to float64 rounding (relative error < 1e-9)."""
        return self.max_rel_error < 1e-9


def check_regions(
    model: ReluRNN, region_map: RegionMap, *, top: int | None = None, max_inputs: int = 10_000
) -> list[RegionCheck]:
    """For the ``top`` regions (all when None), compare ``A @ x`` with the forward output on their inputs."""
    k = len(region_map) if top is None else min(top, len(region_map))
    checks = []
    order = np.argsort(region_map.assignment, kind="stable")
    starts = np.searchsorted(region_map.assignment[order], np.arange(k + 1))
    for i in range(k):
        idx = order[starts[i] : starts[i + 1]][:max_inputs]
        x = region_map.inputs[idx].astype(np.float64)
        pattern = region_map.pattern(i)
        a = region_linear_map(model, pattern)
        lin = x @ a.T
        ref = forward(model, x)
        err = np.abs(lin - ref)
        scale = np.abs(x) @ np.abs(a).T + 1e-300
        checks.append(
            RegionCheck(i, pattern, int(region_map.counts[i]), float(err.max()), float((err / scale).max()))
        )
    return checks


# ----------------------------------------------------------------------------------------------------------
# Exact enumeration of realisable regions
# ----------------------------------------------------------------------------------------------------------


class RegionSet(list):
    """The realisable activation patterns of a model (a list), with an interior witness input for each.

    ``candidates`` = 2^(H*T) patterns a priori; ``lp_solves`` linear programs were needed.
    """

    def __init__(
        self,
        patterns: list[ActivationPattern],
        witnesses: np.ndarray,
        *,
        hidden_size: int,
        seq_len: int,
        lp_solves: int,
        nodes: int,
        seconds: float,
    ):
        super().__init__(patterns)
        self.witnesses = witnesses
        self.hidden_size = hidden_size
        self.seq_len = seq_len
        self.candidates = 2 ** (hidden_size * seq_len)
        self.lp_solves = lp_solves
        self.nodes = nodes
        self.seconds = seconds

    def summary(self) -> dict:
        """A JSON-ready summary: realisable count, candidates, work done."""
        return {
            "hidden_size": self.hidden_size,
            "seq_len": self.seq_len,
            "realisable": len(self),
            "candidates": self.candidates,
            "fraction": len(self) / self.candidates,
            "lp_solves": self.lp_solves,
            "nodes": self.nodes,
            "seconds": self.seconds,
        }


def _max_margin(rows: np.ndarray, dims: int) -> tuple[float, np.ndarray]:
    """max s s.t. rows @ x >= s, x in [-1, 1]^dims, s <= 1: the depth of the cone's best interior point."""
    from scipy.optimize import linprog

    m = len(rows)
    c = np.zeros(dims + 1)
    c[-1] = -1.0
    a_ub = np.hstack([-rows[:, :dims], np.ones((m, 1))])
    res = linprog(c, A_ub=a_ub, b_ub=np.zeros(m), bounds=[(-1.0, 1.0)] * dims + [(None, 1.0)], method="highs")
    if res.status != 0:
        raise RnnError(f"region enumeration: the LP solver failed ({res.message})")
    x = np.zeros(rows.shape[1])
    x[:dims] = res.x[:dims]
    return float(-res.fun), x


def region_witness(model: ReluRNN, pattern: ActivationPattern, *, tol: float = 1e-9) -> np.ndarray | None:
    """An input strictly inside ``pattern``'s region (one LP over all its constraints), or None if it is empty."""
    pre = region_constraints(model, pattern)
    gates = pattern.to_array()
    rows = []
    for t in range(pattern.seq_len):
        for j in range(pattern.hidden_size):
            r = pre[t, j]
            norm = np.linalg.norm(r)
            if norm == 0:
                if not gates[t, j]:
                    return None  # pre-activation identically 0: always counted active
                continue
            rows.append(r / norm if gates[t, j] else -r / norm)
    if not rows:
        return np.zeros(pattern.seq_len)
    depth, x = _max_margin(np.array(rows), pattern.seq_len)
    return x if depth > tol else None


def enumerate_regions(
    model: ReluRNN,
    seq_len: int | None = None,
    *,
    max_slots: int = 24,
    tol: float = 1e-9,
    samples: int = 4096,
    seed: int = 0,
    progress: ProgressFn | None = None,
) -> RegionSet:
    """Every realisable activation pattern of a small model, found exactly (not only those sampling hits).

    Patterns grow one neuron-step at a time (step 0 neuron 0, step 0 neuron 1, ...); a branch survives while
    its cone has an interior point at depth > ``tol`` (normalised constraints, inputs in the unit box): a
    Gaussian sample already inside it, the parent's witness, or else a linear program. A pre-activation that
    is identically zero on a branch counts as active (the >= 0 convention) and adds no constraint.
    ``progress`` gets "regions" events (found so far, with the nodes searched) as the search goes. Refuses models with H*T > ``max_slots``.
    """
    steps = model.require_seq_len(seq_len)
    hid = model.hidden_size
    slots = hid * steps
    if slots > max_slots:
        raise EnumerationLimitError(
            f"{model.name}: exhaustive enumeration of H*T = {hid}*{steps} = {slots} neuron-steps would need "
            f"up to 2^{slots} = {2**slots:,} candidate patterns, over the limit of 2^{max_slots} = "
            f"{2**max_slots:,} (max_slots={max_slots}); classify sampled inputs instead (classify_regions), "
            "or raise max_slots"
        )
    start = time.perf_counter()
    w = model.weights()
    abs_ih, abs_hh = np.abs(w.w_ih), np.abs(w.w_hh)
    rng = np.random.Generator(np.random.PCG64(seed))
    pool = rng.standard_normal((samples, steps))
    found: list[tuple[np.ndarray, np.ndarray]] = []
    stats = {"lp": 0, "nodes": 0}

    def step_rows(t: int, hidden: np.ndarray, hidden_abs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        rows = w.w_hh @ hidden
        rows[:, t] += w.w_ih
        bound = abs_hh @ hidden_abs
        bound[:, t] += abs_ih
        if not np.isfinite(rows).all():
            raise _map_overflow(model, t, np.float64)
        return rows, bound

    # Depth-first over neuron-steps with an explicit stack: (t, j, gates, constraints, rows, bound, pool, witness)
    rows0, bound0 = step_rows(0, np.zeros((hid, steps)), np.zeros((hid, steps)))
    stack = [(0, 0, np.zeros((steps, hid), bool), np.zeros((0, steps)), rows0, bound0, pool, None)]
    while stack:
        t, j, gates, cons, rows, bound, pts, wit = stack.pop()
        stats["nodes"] += 1
        if j == hid:
            hidden = rows * gates[t][:, None]
            if t == steps - 1:
                found.append((gates, pts[0] if len(pts) else wit))
                if progress is not None and len(found) % 64 == 0:
                    emit(progress, "regions", len(found), None, nodes=stats["nodes"])
                continue
            nrows, nbound = step_rows(t + 1, hidden, bound * gates[t][:, None])
            stack.append((t + 1, 0, gates, cons, nrows, nbound, pts, wit))
            continue
        r = rows[j]
        norm = float(np.linalg.norm(r))
        if norm <= 1e-12 * float(np.linalg.norm(bound[j])) or norm == 0.0:
            g = gates.copy()
            g[t, j] = True
            stack.append((t, j + 1, g, cons, rows, bound, pts, wit))
            continue
        r = r / norm
        vals = pts @ r
        children = []
        for active in (True, False):
            signed = r if active else -r
            inside = pts[vals > tol] if active else pts[vals < -tol]
            if len(inside):
                child_wit = inside[0]
            elif wit is not None and float(signed @ wit) > tol:
                child_wit = wit
            else:
                stats["lp"] += 1
                depth, x = _max_margin(np.vstack([cons, signed]), t + 1)
                if depth <= tol:
                    continue
                child_wit = x
            g = gates.copy()
            g[t, j] = active
            children.append((t, j + 1, g, np.vstack([cons, signed]), rows, bound, inside, child_wit))
        stack.extend(reversed(children))  # active branch explored first
    patterns = [ActivationPattern.from_array(g) for g, _ in found]
    witnesses = np.array([x for _, x in found]).reshape(len(found), steps)
    emit(progress, "regions", len(found), None, nodes=stats["nodes"])
    return RegionSet(
        patterns,
        witnesses,
        hidden_size=hid,
        seq_len=steps,
        lp_solves=stats["lp"],
        nodes=stats["nodes"],
        seconds=time.perf_counter() - start,
    )
