"""``objects`` over thousands of grids at once: compiled CPU threads (numba) or torch (GPU, or CPU for tests).

Both backends return the same :class:`BatchLabels`: per grid, a label per cell (-1 for background and for
padding), objects numbered 0.. in row-major order of their first cell, and the background colour used.
``BatchLabels.objects(k)`` turns grid k's labels into the DSL value, equal to ``objects(grid, ...)``.

The torch path is min-label propagation with pointer jumping: every foreground cell starts with its own flat
index, takes the smallest label among the neighbours it connects to, then the label of the cell its label
points at; a component settles on the index of its first cell, which is also the canonical id order. The
background colour (``mostcolor``, with arc-dsl's set-order tie-break) is computed on the device too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from arcscope.dsl import _kernels as K
from arcscope.dsl import fast
from arcscope.dsl.arc_types import Grid, Objects
from arcscope.errors import ArcscopeError

MAX = 30
PAD = 255
"""Padding value outside each grid (not a colour)."""
PARALLEL_FROM = 2048
"""Batch size from which the numba backend uses all cores by default."""


class BatchError(ArcscopeError, ValueError):
    """A batch of grids cannot be labelled as asked."""


@dataclass
class BatchLabels:
    """Per-grid labelled components of a batch (numpy arrays, or torch tensors from the torch backend)."""

    labels: Any
    """``[N, H, W]`` int32: object id per cell, -1 for background and outside the grid."""
    n_objects: Any
    """``[N]`` number of objects per grid."""
    background: Any
    """``[N]`` background colour that was left out, -1 when ``without_bg`` is false."""
    grids: np.ndarray
    """``[N, H, W]`` uint8, the input padded with 255."""
    shapes: np.ndarray
    """``[N, 2]`` (height, width) of each grid."""

    def __len__(self) -> int:
        return int(self.grids.shape[0])

    def numpy(self) -> BatchLabels:
        """The same result with every array on the host as numpy."""

        def host(x: Any) -> np.ndarray:
            return x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)

        return BatchLabels(
            host(self.labels), host(self.n_objects), host(self.background), self.grids, self.shapes
        )

    def objects(self, k: int) -> Objects:
        """Grid k's objects as the DSL value: equal to ``objects(grid, ...)``, the set of objects in the same
        order, the cells inside each object row-major (as in ``ARCSCOPE_DSL_ORDER=fast``)."""
        h, w = (int(x) for x in self.shapes[k])
        lab = self.labels[k]
        lab = lab.detach().cpu().numpy() if hasattr(lab, "detach") else np.asarray(lab)
        flat_labels = np.ascontiguousarray(lab[:h, :w], dtype=np.int32).reshape(-1)
        flat_grid = np.ascontiguousarray(self.grids[k, :h, :w]).reshape(-1)
        return fast.objects_from_labels(flat_grid, flat_labels, int(self.n_objects[k]), h, w)


def pack_grids(grids: Sequence[Grid] | Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Grids (DSL tuples or 2-d arrays, 1..30 a side, colours 0..9) as a padded ``[N, 30, 30]`` uint8 batch."""
    n = len(grids)
    out = np.full((n, MAX, MAX), PAD, dtype=np.uint8)
    shapes = np.zeros((n, 2), dtype=np.int32)
    for k, g in enumerate(grids):
        if isinstance(g, np.ndarray):
            arr = g
            ok = arr.ndim == 2 and 0 < arr.shape[0] <= MAX and 0 < arr.shape[1] <= MAX
            ok = ok and arr.size > 0 and int(arr.min()) >= 0 and int(arr.max()) <= 9
            if ok:
                arr = arr.astype(np.uint8, copy=False)
        else:
            flat = fast.as_array(g)
            ok = flat is not None
            if ok:
                arr = flat.reshape(len(g), len(g[0]))
        if not ok:
            raise BatchError(
                f"grid {k} of the batch is not a 1..30 x 1..30 grid of colours 0..9; "
                "fix or drop it (objects() on it alone falls back to the reference)"
            )
        h, w = arr.shape
        out[k, :h, :w] = arr
        shapes[k] = (h, w)
    return out, shapes


def batch_objects(
    grids: Sequence[Grid] | Sequence[np.ndarray] | tuple[np.ndarray, np.ndarray],
    univalued: bool,
    diagonal: bool,
    without_bg: bool,
    *,
    backend: str = "numba",
    device: str | None = None,
    parallel: bool | None = None,
) -> BatchLabels:
    """Label the objects of many grids at once; ``backend`` is ``"numba"`` (CPU threads) or ``"torch"``.

    ``grids`` is a sequence of grids, or an already padded ``(uint8 [N, H, W], int [N, 2] shapes)`` pair
    (as :func:`pack_grids` makes). ``device`` picks the torch device (default ``auto``: CUDA, else MPS, else CPU);
    ``parallel`` runs the numba backend on all cores (default: only from 2,048 grids on, since waking
    numba's thread pool costs milliseconds on a busy machine).
    """
    if (
        isinstance(grids, tuple)
        and len(grids) == 2
        and isinstance(grids[0], np.ndarray)
        and grids[0].ndim == 3
    ):
        packed, shapes = np.ascontiguousarray(grids[0], dtype=np.uint8), np.asarray(grids[1], dtype=np.int32)
    else:
        packed, shapes = pack_grids(grids)
    if backend == "numba":
        n = packed.shape[0]
        labels = np.empty(packed.shape, dtype=np.int32)
        n_objects = np.empty(n, dtype=np.int32)
        background = np.empty(n, dtype=np.int32)
        if parallel is None:
            parallel = n >= PARALLEL_FROM
        kernel = K.label_batch if parallel else K.label_batch_serial
        kernel(
            packed,
            shapes[:, 0].astype(np.int64),
            shapes[:, 1].astype(np.int64),
            bool(univalued),
            bool(diagonal),
            bool(without_bg),
            labels,
            n_objects,
            background,
        )
        return BatchLabels(labels, n_objects, background, packed, shapes)
    if backend == "torch":
        return _torch_objects(packed, shapes, bool(univalued), bool(diagonal), bool(without_bg), device)
    raise BatchError(f"unknown batch backend {backend!r}: use 'numba' or 'torch'")


# ------------------------------------------------------------------------------------------------ torch


def _torch_device(device: str | None):
    from arcscope.models.device import DeviceError, resolve_device

    try:
        return resolve_device(device)
    except DeviceError as e:
        raise BatchError(str(e)) from None


def _set_order_rank(first_pos, present):
    """Per grid and colour, the iteration rank of ``set(values)`` (see ``_kernels.set_rank``), vectorised."""
    import torch

    n = first_pos.shape[0]
    dev = first_pos.device
    n_distinct = present.sum(1)
    colours = torch.arange(10, device=dev).expand(n, 10)
    rank = colours.clone()  # five or more colours: a 32-slot table, ascending order
    seen_order = torch.argsort(torch.where(present, first_pos, first_pos.max() + 1), dim=1)
    table = torch.full((n, 8), -1, dtype=torch.long, device=dev)
    rows = torch.arange(n, device=dev)
    for t in range(4):
        c = seen_order[:, t]
        active = (t < n_distinct) & (n_distinct <= 4)
        slot = c & 7
        placed = ~active
        for _ in range(8):
            free = table[rows, slot] == -1
            put = free & ~placed
            table[rows[put], slot[put]] = c[put]
            placed = placed | put
            slot = torch.where(placed, slot, (slot * 5 + 1) & 7)
    small = n_distinct <= 4
    match = table.unsqueeze(2) == torch.arange(10, device=dev).view(1, 1, 10)
    slot_of = torch.where(match, torch.arange(8, device=dev).view(1, 8, 1), 99).min(1).values
    return torch.where(small[:, None], slot_of, rank)


def _torch_background(g, valid, hw: int):
    import torch

    n = g.shape[0]
    flat = torch.where(valid, g.long(), torch.full_like(g, 10, dtype=torch.long)).view(n, -1)
    counts = torch.zeros(n, 11, dtype=torch.long, device=g.device).scatter_add_(
        1, flat, torch.ones_like(flat)
    )
    counts = counts[:, :10]
    pos = torch.arange(flat.shape[1], device=g.device).expand_as(flat)
    first_pos = torch.full((n, 11), hw, dtype=torch.long, device=g.device)
    first_pos = first_pos.scatter_reduce(1, flat, pos, reduce="amin", include_self=True)[:, :10]
    present = counts > 0
    rank = _set_order_rank(first_pos, present)
    top = counts.max(1, keepdim=True).values
    tied = counts == top
    # Among the most frequent colours, the one the set walks first.
    return torch.where(tied, rank, torch.full_like(rank, 1000)).argmin(1)


def _shifted(x, di: int, dj: int, fill):
    """y[i, j] = x[i + di, j + dj], ``fill`` outside."""
    import torch.nn.functional as F

    h, w = x.shape[-2:]
    padded = F.pad(x, (1, 1, 1, 1), value=fill)
    return padded[..., 1 + di : 1 + di + h, 1 + dj : 1 + dj + w]


def _torch_objects(packed, shapes, univalued, diagonal, without_bg, device) -> BatchLabels:
    import torch

    dev = _torch_device(device)
    n, h, w = packed.shape
    hw = h * w
    g_host = torch.from_numpy(packed)
    s_host = torch.from_numpy(shapes.astype(np.int64))
    if dev.type == "cuda":
        g_host, s_host = g_host.pin_memory(), s_host.pin_memory()
    g = g_host.to(dev, non_blocking=True)
    s = s_host.to(dev, non_blocking=True)
    ii = torch.arange(h, device=dev).view(1, h, 1)
    jj = torch.arange(w, device=dev).view(1, 1, w)
    valid = (ii < s[:, 0].view(n, 1, 1)) & (jj < s[:, 1].view(n, 1, 1))
    if without_bg:
        bg = _torch_background(g, valid, hw)
        fg = valid & (g.long() != bg.view(n, 1, 1))
    else:
        bg = torch.full((n,), -1, dtype=torch.long, device=dev)
        fg = valid
    offsets = [(-1, 0), (1, 0), (0, -1), (0, 1)]
    if diagonal:
        offsets += [(-1, -1), (-1, 1), (1, -1), (1, 1)]
    gi = g.to(torch.int16)
    joins = []
    for di, dj in offsets:
        j_mask = fg & _shifted(fg, di, dj, False)
        if univalued:
            j_mask = j_mask & (gi == _shifted(gi, di, dj, -1))
        joins.append(j_mask)
    big = hw
    idx = torch.arange(hw, device=dev, dtype=torch.int32).view(1, h, w).expand(n, h, w)
    lab = torch.where(fg, idx, torch.full_like(idx, big))
    step = 0
    while True:
        new = lab
        for (di, dj), j_mask in zip(offsets, joins, strict=True):
            new = torch.where(j_mask, torch.minimum(new, _shifted(lab, di, dj, big)), new)
        flat = new.reshape(n, hw)
        jumped = torch.gather(flat, 1, flat.clamp(max=hw - 1).long()).view(n, h, w)
        new = torch.where(fg, torch.minimum(new, jumped), new)
        step += 1
        # A host sync every iteration would stall the GPU; check every few steps instead.
        if step % 4 == 0 or step > hw:
            if torch.equal(new, lab) or step > hw:
                lab = new
                break
        lab = new
    roots = fg & (lab == idx)
    rank = torch.cumsum(roots.reshape(n, hw).to(torch.int32), 1) - 1
    out = torch.gather(rank, 1, lab.reshape(n, hw).clamp(max=hw - 1).long()).view(n, h, w)
    out = torch.where(fg, out, torch.full_like(out, -1)).to(torch.int32)
    return BatchLabels(out, roots.reshape(n, hw).sum(1).to(torch.int32), bg.to(torch.int32), packed, shapes)


__all__ = ["BatchError", "BatchLabels", "batch_objects", "pack_grids"]
