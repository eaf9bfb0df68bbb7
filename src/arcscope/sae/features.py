"""Latents on grids: top-activating cells with their grids, density, grid-property profiles, logit effects.

:func:`latent_stats` makes one pass over a store and keeps, for every latent, its top ``top`` rows, how
often and how strongly it fires, a histogram of its activation values, and how its activation mass splits
over grid properties of the rows it fires on: the cell's colour, the grid's role (train input, test input,
answer...), and whether the cell lies on the grid's border. Grids come from the store's task source (the
index names task, augmentation, role, pair, row and column of every row).

:func:`rank_latents` answers "which latents fire mostly on colour 3 / test inputs / border cells", ranked by
the share of their activation mass there. :func:`logit_effects` projects decoder directions through the final
norm and the unembedding (for hooks on the residual stream).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from arcscope.progress import ProgressFn, emit
from arcscope.sae.config import SAEError
from arcscope.sae.io import check_width
from arcscope.sae.model import SparseAutoencoder
from arcscope.tasks.lookup import GridLookup

ROLES = ("train_input", "train_output", "test_input", "answer", "generated", "none")
PROPERTIES = (
    tuple(f"colour:{c}" for c in range(10)) + tuple(f"role:{r}" for r in ROLES) + ("border", "interior")
)
"""Columns of :attr:`LatentStats.mass`: colour 0..9 of the cell, the grid's role, border or interior cell."""
ACT_EDGES = np.logspace(-3, 3, 25)
"""Activation-value histogram bin edges (log-spaced); values outside fall in the end bins."""


def load_tasks_for(store: Any, tasks: Any = None) -> GridLookup:
    """A grid lookup for the store's task source (or ``tasks``: a spec or a TaskSet)."""
    from arcscope.tasks import load

    spec = tasks if tasks is not None else store.meta.get("task_source")
    if spec is None:
        raise SAEError(f"{store.url}: the store does not name its task source; pass --tasks")
    try:
        return GridLookup(load(spec))
    except Exception as e:
        raise SAEError(f"cannot load the task source {spec!r} to draw grids: {e}") from e


@dataclass
class RowInfo:
    """Per store row: grid id (-1: not a cell), cell colour (-1: unknown), border flag, property index."""

    grid_id: np.ndarray
    colour: np.ndarray
    border: np.ndarray
    role_code: np.ndarray
    grid_keys: list[tuple[str, str, str, int, int]]
    """grid id -> (task id, augmentation, role, pair, sample)."""


def row_info(store: Any, lookup: GridLookup | None) -> RowInfo:
    """Grid membership, colour and border flag of every store row, vectorised per grid."""
    idx = store.index(columns=["task_id", "augmentation", "role", "pair", "row", "col", "sample"])
    n = idx.num_rows
    role = np.asarray(idx["role"].to_numpy(zero_copy_only=False)).astype(str)
    row = idx["row"].to_numpy().astype(np.int64)
    key = pc.binary_join_element_wise(
        idx["sample"].cast(pa.string()), idx["role"], idx["pair"].cast(pa.string()), "|"
    )
    enc = pc.dictionary_encode(key).combine_chunks()
    codes = enc.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    grid_id = np.where(row >= 0, codes, -1)
    if lookup is None:
        colour, border = np.full(n, -1, dtype=np.int8), np.zeros(n, dtype=bool)
    else:
        cell_colour, border = lookup.cells(idx)
        colour = cell_colour.astype(np.int8)
    role_code = np.array([ROLES.index(r) if r in ROLES else len(ROLES) - 1 for r in role], dtype=np.int8)
    tids = idx["task_id"].to_numpy(zero_copy_only=False)
    augs = idx["augmentation"].to_numpy(zero_copy_only=False)
    pairs = idx["pair"].to_numpy().astype(np.int64)
    samples = idx["sample"].to_numpy().astype(np.int64)
    # a grid's key is read off its first row
    order = np.argsort(codes, kind="stable")
    first = order[np.searchsorted(codes[order], np.arange(len(enc.dictionary)))]
    keys = [(str(tids[r]), str(augs[r]), str(role[r]), int(pairs[r]), int(samples[r])) for r in first]
    return RowInfo(grid_id, colour, border, role_code, keys)


def _property_matrix(info: RowInfo, lo: int, hi: int) -> torch.Tensor:
    """One-hot ``[rows, len(PROPERTIES)]`` of rows [lo, hi)."""
    n = hi - lo
    p = torch.zeros(n, len(PROPERTIES))
    col = torch.from_numpy(info.colour[lo:hi].astype(np.int64))
    has = col >= 0
    p[has.nonzero().squeeze(1), col[has]] = 1.0
    p[torch.arange(n), 10 + torch.from_numpy(info.role_code[lo:hi].astype(np.int64))] = 1.0
    cell = torch.from_numpy(info.grid_id[lo:hi] >= 0)
    b = torch.from_numpy(info.border[lo:hi])
    p[:, len(PROPERTIES) - 2] = (cell & b).float()
    p[:, len(PROPERTIES) - 1] = (cell & ~b).float()
    return p


@dataclass
class LatentStats:
    """What :func:`latent_stats` measured, per latent."""

    hook: str
    n_rows: int
    count: torch.Tensor
    """[d_sae] rows on which the latent fires."""
    total: torch.Tensor
    """[d_sae] sum of its activations."""
    top_values: torch.Tensor
    """[d_sae, top] its largest activations, descending (0 where it fired less often)."""
    top_rows: torch.Tensor
    """[d_sae, top] global store rows of those activations (-1 where none)."""
    mass: torch.Tensor
    """[d_sae, len(PROPERTIES)] activation mass on rows with each property."""
    hits: torch.Tensor
    """[d_sae, len(PROPERTIES)] rows with each property on which it fires."""
    hist: torch.Tensor
    """[d_sae, len(ACT_EDGES) + 1] counts of its nonzero activations per :data:`ACT_EDGES` bin."""
    info: RowInfo | None = field(default=None, repr=False)

    @property
    def density(self) -> torch.Tensor:
        """[d_sae] fraction of rows on which each latent fires."""
        return self.count / max(self.n_rows, 1)

    def share(self, prop: str) -> torch.Tensor:
        """[d_sae] share of each latent's activation mass on rows with property ``prop``."""
        j = PROPERTIES.index(prop)
        return self.mass[:, j] / self.total.clamp_min(1e-12)

    def profile(self, latent: int) -> dict[str, float]:
        """Property -> share of this latent's activation mass."""
        t = max(float(self.total[latent]), 1e-12)
        return {p: float(self.mass[latent, j]) / t for j, p in enumerate(PROPERTIES)}


@torch.no_grad()
def latent_stats(
    sae: SparseAutoencoder,
    store: Any,
    hook: str | None = None,
    *,
    top: int = 32,
    batch_size: int = 2048,
    rows: int | None = None,
    lookup: GridLookup | None = None,
    progress: ProgressFn | None = None,
) -> LatentStats:
    """One pass over ``hook`` of ``store`` (the first ``rows`` rows, or all), collecting per-latent statistics.

    ``progress`` gets an "activations" event (rows done of the rows read) after each batch.
    """
    hook = hook or sae.cfg.hook
    if hook is None:
        raise SAEError("the SAE names no hook; pass the hook its rows come from")
    check_width(sae, store, hook)
    info = row_info(store, lookup)
    S, P, dev = sae.d_sae, len(PROPERTIES), sae.W_dec.device
    count = torch.zeros(S, dtype=torch.float64)
    total = torch.zeros(S, dtype=torch.float64)
    mass = torch.zeros(S, P, dtype=torch.float64)
    hits = torch.zeros(S, P, dtype=torch.float64)
    hist = torch.zeros(S, len(ACT_EDGES) + 1, dtype=torch.float64)
    edges = torch.as_tensor(ACT_EDGES, dtype=torch.float32)
    top_v = torch.zeros(S, top)
    top_r = torch.full((S, top), -1, dtype=torch.int64)
    limit = store.n_rows if rows is None else min(rows, store.n_rows)
    start = 0
    for x in store.iter_batches(hook, batch_size):
        if start >= limit:
            break
        x = x[: limit - start].float().to(dev)
        acts = sae.encode(x).float().cpu()
        n = len(x)
        active = acts > 0
        count += active.sum(0).double()
        total += acts.sum(0).double()
        p = _property_matrix(info, start, start + n)
        mass += (acts.T @ p).double()
        hits += (active.float().T @ p).double()
        r, c = active.nonzero(as_tuple=True)
        if len(r):
            b = torch.bucketize(acts[r, c], edges)
            hist.index_put_((c, b), torch.ones(len(c), dtype=torch.float64), accumulate=True)
        kk = min(top, n)
        bv, bi = acts.topk(kk, dim=0)
        cand_v = torch.cat([top_v, bv.T], dim=1)
        cand_r = torch.cat([top_r, (bi.T + start)], dim=1)
        top_v, j = cand_v.topk(top, dim=1)
        top_r = cand_r.gather(1, j)
        start += n
        emit(progress, "activations", start, limit)
    top_r = torch.where(top_v > 0, top_r, torch.full_like(top_r, -1))
    return LatentStats(hook, start, count, total, top_v, top_r, mass, hits, hist, info)


def rank_latents(
    stats: LatentStats,
    *,
    colour: int | None = None,
    role: str | None = None,
    border: bool | None = None,
    min_count: int = 5,
    top: int = 20,
) -> list[dict[str, Any]]:
    """Latents ranked by the share of their activation mass on rows with every given property.

    ``colour`` 0..9, ``role`` one of :data:`ROLES`, ``border`` True (border cells) or False (interior cells);
    latents firing on fewer than ``min_count`` rows are left out; ties go to the latent firing on more rows.
    Each result has latent, share, count, density and the properties asked for.
    """
    props = []
    if colour is not None:
        if not 0 <= int(colour) <= 9:
            raise SAEError(f"colour must be 0..9, got {colour}")
        props.append(f"colour:{int(colour)}")
    if role is not None:
        r = str(role).replace("-", "_")
        if r not in ROLES:
            raise SAEError(f"role {role!r} is not one of {', '.join(ROLES)}")
        props.append(f"role:{r}")
    if border is not None:
        props.append("border" if border else "interior")
    if not props:
        raise SAEError("give at least one property: colour, role or border")
    share = torch.ones(stats.count.shape[0], dtype=torch.float64)
    for p in props:
        share = torch.minimum(share, stats.share(p))
    ok = ((stats.count >= min_count) & (share > 0)).tolist()
    sh, cnt = share.tolist(), stats.count.tolist()
    # equal shares (often 1.0) rank the latent that covers more rows first
    order = sorted((i for i in range(len(sh)) if ok[i]), key=lambda i: (-sh[i], -cnt[i], i))[:top]
    return [
        {
            "latent": int(i),
            "share": float(share[i]),
            "count": int(stats.count[i]),
            "density": float(stats.density[i]),
            "properties": props,
        }
        for i in order
    ]


@torch.no_grad()
def logit_effects(
    sae: SparseAutoencoder, loaded: Any, top: int = 8, chunk: int = 512
) -> list[dict[str, Any]] | None:
    """Per latent, the tokens its decoder direction most raises and lowers (through the final norm's gain and
    the unembedding); None when the SAE's width is not the model's residual width."""
    model, tok = loaded.model, loaded.tokenizer
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    d_model = getattr(model.config, "hidden_size", None)
    if head is None or d_model != sae.d_in:
        return None
    from arcscope.capture import find_layout

    w_u = head.weight.detach().float().cpu()
    gain = torch.ones(sae.d_in)
    layout = find_layout(model)
    if layout is not None:
        norm = model.get_submodule(layout.final_norm)
        if getattr(norm, "weight", None) is not None:
            gain = norm.weight.detach().float().cpu()
    out = []
    W = sae.W_dec.detach().float().cpu()
    for a in range(0, sae.d_sae, chunk):
        logits = (W[a : a + chunk] * gain) @ w_u.T
        pv, pi = logits.topk(top, dim=1)
        nv, ni = logits.topk(top, dim=1, largest=False)
        for j in range(len(logits)):
            out.append(
                {
                    "up": [
                        [tok.decode([int(t)]), round(float(v), 4)] for t, v in zip(pi[j], pv[j], strict=True)
                    ],
                    "down": [
                        [tok.decode([int(t)]), round(float(v), 4)] for t, v in zip(ni[j], nv[j], strict=True)
                    ],
                }
            )
    return out


@torch.no_grad()
def example_heatmaps(
    sae: SparseAutoencoder,
    store: Any,
    stats: LatentStats,
    latents: list[int],
    lookup: GridLookup,
    *,
    examples: int = 6,
    batch_size: int = 2048,
) -> dict[int, list[dict[str, Any]]]:
    """For each latent, its top rows grouped by grid (up to ``examples`` grids), each grid with the latent's
    activation on every cell: ``{latent: [{grid, heat [h][w], cell, value, task_id, ...}]}``."""
    info = stats.info if stats.info is not None else row_info(store, lookup)
    idx = store.index(columns=["row", "col"])
    rows_of = idx["row"].to_numpy().astype(np.int64)
    cols_of = idx["col"].to_numpy().astype(np.int64)
    want: dict[int, list[tuple[int, int, float]]] = {}
    need: dict[int, list[tuple[int, int]]] = {}
    for lat in latents:
        seen: list[int] = []
        picks = []
        for v, r in zip(stats.top_values[lat].tolist(), stats.top_rows[lat].tolist(), strict=True):
            if r < 0 or v <= 0:
                continue
            g = int(info.grid_id[r])
            if g < 0 or g in seen:
                continue
            seen.append(g)
            picks.append((g, r, v))
            if len(picks) >= examples:
                break
        want[lat] = picks
        for slot, (g, _, _) in enumerate(picks):
            need.setdefault(g, []).append((lat, slot))
    heat: dict[tuple[int, int], np.ndarray] = {}
    grids: dict[int, np.ndarray | None] = {}
    for g in need:
        tid, aug, role, pair, _ = info.grid_keys[g]
        grids[g] = lookup.grid(tid, aug, role, pair)
        if grids[g] is not None:
            for lat, slot in need[g]:
                heat[(lat, slot)] = np.zeros(grids[g].shape, dtype=np.float32)
    needed = np.zeros(len(info.grid_keys) + 1, dtype=bool)
    needed[[g for g in need if grids[g] is not None]] = True
    start = 0
    dev = sae.W_dec.device
    for x in store.iter_batches(stats.hook, batch_size):
        n = len(x)
        gid = info.grid_id[start : start + n]
        sel = np.flatnonzero((gid >= 0) & needed[gid])
        if len(sel):
            acts = sae.encode(x[torch.from_numpy(sel)].float().to(dev)).float().cpu().numpy()
            gsel = gid[sel]
            for g in np.unique(gsel):
                m = gsel == g
                rr, cc = rows_of[start + sel[m]], cols_of[start + sel[m]]
                h, w = grids[int(g)].shape
                ok = (rr < h) & (cc < w)
                for lat, slot in need[int(g)]:
                    heat[(lat, slot)][rr[ok], cc[ok]] = acts[m][ok, lat]
        start += n
        if start >= stats.n_rows:
            break
    result: dict[int, list[dict[str, Any]]] = {}
    for lat, picks in want.items():
        cards = []
        for slot, (g, r, v) in enumerate(picks):
            tid, aug, role, pair, sample = info.grid_keys[g]
            grid = grids[g]
            cards.append(
                {
                    "task_id": tid,
                    "augmentation": aug,
                    "role": role,
                    "pair": pair,
                    "sample": sample,
                    "cell": [int(rows_of[r]), int(cols_of[r])],
                    "value": float(v),
                    "grid": None if grid is None else grid,
                    "heat": heat.get((lat, slot)),
                }
            )
        result[lat] = cards
    return result
