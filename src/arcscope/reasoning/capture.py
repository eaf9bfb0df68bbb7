"""Recurrent states for interpretation: every z_H and z_L of every cycle and ACT step, and the halting logits.

:func:`trace` runs one batch and returns the states in memory as a :class:`ReasoningTrace`.
:func:`capture_to_store` runs a dataset split and writes the states into an activation store
(:mod:`arcscope.store`), one row per (example, ACT step, sequence position), so the store's readers, its
``ActivationDataset`` and later SAEs work on reasoning states. Hooks are named after where the state was
taken::

    z_L.{h}.{l}   z_L after L update l of H cycle h
    z_H.{h}       z_H after H cycle h (HRM: the H module; TRM: the answer update)

and the index holds, beside the store's required columns (``task_id``, ``augmentation``, ``pair``,
``role``, ``row``, ``col``, ``token_id``, ``position``, ``sample``), the columns ``act_step``, ``split``,
``puzzle_identifier``, ``label_id``, ``pred_id``, ``q_halt_logit`` and ``q_continue_logit``. ``row``/``col``
are grid coordinates of the cell the position encodes (for ARC, relative to the grid's top-left corner on
the canvas; -1 for padding, EOS and puzzle-embedding positions).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from arcscope.errors import ArcscopeError
from arcscope.progress import ProgressFn, emit
from arcscope.puzzles.layout import PuzzleDataset
from arcscope.reasoning.act import ACTModel
from arcscope.reasoning.data import eval_batches

__all__ = ["ReasoningTrace", "trace", "hook_names", "capture_to_store"]


@dataclass
class ReasoningTrace:
    """States of one batch over ``steps`` ACT steps (positions include the puzzle-embedding prefix)."""

    z_H: torch.Tensor
    """[steps, H_cycles, batch, positions, hidden]"""
    z_L: torch.Tensor
    """[steps, H_cycles, L_cycles, batch, positions, hidden]"""
    q_halt: torch.Tensor
    """[steps, batch] halting logits."""
    q_continue: torch.Tensor
    """[steps, batch] continue logits."""
    preds: torch.Tensor
    """[steps, batch, seq_len] argmax token after each step."""
    puzzle_emb_len: int
    """Leading positions that hold the puzzle embedding rather than a token."""


class _Keep:
    """A recorder that keeps a float32 CPU copy of every state under (kind, h, l)."""

    def __init__(self, into: dict[tuple[str, int, int], torch.Tensor]):
        self.into = into

    def __call__(self, kind: str, h: int, l: int, state: torch.Tensor) -> None:  # noqa: E741
        self.into[(kind, h, l)] = state.detach().float().cpu()


def _per_pos(arr: np.ndarray, tok_idx: np.ndarray, fill: int = -1) -> np.ndarray:
    """Per (example, captured position) the value of ``arr`` at that token, ``fill`` in the puzzle prefix."""
    out = np.full((arr.shape[0], len(tok_idx)), fill, dtype=np.int64)
    ok = tok_idx >= 0
    out[:, ok] = arr[:, tok_idx[ok]]
    return out.reshape(-1)


def hook_names(model: ACTModel) -> list[str]:
    """The store hook names of one ACT step, in recording order."""
    cfg = model.config
    names = []
    for h in range(cfg.H_cycles):
        names += [f"z_L.{h}.{l}" for l in range(cfg.L_cycles)]  # noqa: E741
        names.append(f"z_H.{h}")
    return names


@torch.inference_mode()
def trace(model: ACTModel, batch: dict[str, torch.Tensor], steps: int | None = None) -> ReasoningTrace:
    """Run ``steps`` ACT steps (default ``halt_max_steps``) on ``batch`` in eval mode and keep every state."""
    cfg = model.config
    steps = steps or cfg.halt_max_steps
    was_training = model.training
    model.eval()
    carry = model.initial_carry(batch)
    zh, zl, qh, qc, pr = [], [], [], [], []
    for _ in range(steps):
        rec: dict[tuple[str, int, int], torch.Tensor] = {}
        carry, out = model(carry, batch, _Keep(rec))
        zh.append(torch.stack([rec[("z_H", h, -1)] for h in range(cfg.H_cycles)]))
        zl.append(
            torch.stack(
                [torch.stack([rec[("z_L", h, j)] for j in range(cfg.L_cycles)]) for h in range(cfg.H_cycles)]
            )
        )
        qh.append(out["q_halt_logits"].float().cpu())
        qc.append(out["q_continue_logits"].float().cpu())
        pr.append(out["logits"].argmax(-1).cpu())
    if was_training:
        model.train()
    return ReasoningTrace(
        torch.stack(zh),
        torch.stack(zl),
        torch.stack(qh),
        torch.stack(qc),
        torch.stack(pr),
        model.inner.puzzle_emb_len,
    )


def _cell_coords(inputs: np.ndarray, kind: str | None) -> tuple[np.ndarray, np.ndarray]:
    """Per token, the (row, col) of the grid cell it encodes, -1 where it encodes none."""
    n, seq = inputs.shape
    side = int(round(seq**0.5))
    rows = np.full((n, seq), -1, dtype=np.int64)
    cols = np.full((n, seq), -1, dtype=np.int64)
    if side * side != seq:
        rows[:] = 0
        cols[:] = np.arange(seq)
        return rows, cols
    r, c = np.divmod(np.arange(seq), side)
    if kind == "arc":
        for i in range(n):
            colour = inputs[i] >= 2
            if not colour.any():
                continue
            first = int(np.flatnonzero(colour)[0])
            top, left = divmod(first, side)
            rows[i, colour] = r[colour] - top
            cols[i, colour] = c[colour] - left
    else:
        rows[:] = r
        cols[:] = c
    return rows, cols


def capture_to_store(
    model: ACTModel,
    dataset: PuzzleDataset,
    store: str | os.PathLike[str],
    *,
    split: str = "test",
    hooks: Sequence[str] | None = None,
    steps: int | None = None,
    max_examples: int | None = None,
    batch_size: int = 64,
    positions: str = "tokens",
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
    overwrite: bool = False,
    storage_options: dict | None = None,
    progress: ProgressFn | None = None,
) -> dict[str, Any]:
    """Write the recurrent states of ``split`` into the activation store at ``store``; see the module docstring.

    ``hooks`` picks a subset of :func:`hook_names` (default: all); ``positions`` is ``tokens`` (the sequence
    positions of the puzzle) or ``all`` (also the puzzle-embedding prefix). ``device`` defaults to the
    model's own. ``progress`` gets an "examples" event after each batch. Returns a summary.
    """
    device = next(model.parameters()).device if device is None else device
    from arcscope.puzzles.arc import parse_puzzle_name
    from arcscope.store import StoreWriter

    all_hooks = hook_names(model)
    chosen = list(hooks) if hooks else all_hooks
    bad = [h for h in chosen if h not in all_hooks]
    if bad:
        raise ArcscopeError(f"unknown reasoning hook {bad[0]!r}; this model has {', '.join(all_hooks)}")
    if positions not in ("tokens", "all"):
        raise ArcscopeError(f"positions must be 'tokens' or 'all', got {positions!r}")
    sp = dataset[split]
    cfg = model.config
    steps = steps or cfg.halt_max_steps
    prefix = model.inner.puzzle_emb_len
    kind = dataset.kind
    hooks_meta = {h: {"d": cfg.hidden_size, "dtype": str(dtype).replace("torch.", "")} for h in chosen}
    meta = {
        "model": {"arch": cfg.name, "config": {k: v for k, v in vars(cfg).items()}},
        "capture": {
            "kind": "reasoning",
            "hooks": chosen,
            "steps": steps,
            "positions": positions,
            "split": split,
        },
        "task_source": str(dataset.path),
    }
    n_total = sp.n_examples if max_examples is None else min(sp.n_examples, max_examples)
    done = rows_written = 0
    role = "test input" if split == "test" else "train input"
    with StoreWriter(
        store, hooks=hooks_meta, meta=meta, overwrite=overwrite, storage_options=storage_options
    ) as w:
        for batch in eval_batches(sp, batch_size):
            if done >= n_total:
                break
            real = np.flatnonzero(batch.examples >= 0)[: n_total - done]
            t = batch.to(device)
            tr = trace(model, t, steps)
            set_arrays = sp.sets[batch.set_name]
            ex = batch.examples[real]
            pz = batch.puzzles[real]
            inputs = np.asarray(set_arrays.inputs[ex])
            labels = np.asarray(set_arrays.labels[ex])
            grow, gcol = _cell_coords(inputs, kind)
            pos_lo = 0 if positions == "all" else prefix
            n_pos = tr.z_H.shape[3] - pos_lo
            seq_pos = np.arange(pos_lo, pos_lo + n_pos)
            tok_idx = seq_pos - prefix  # token index; negative in the puzzle prefix
            names, augs, pairs = [], [], []
            for e, p in zip(ex.tolist(), pz.tolist(), strict=True):
                ident = int(set_arrays.puzzle_identifiers[p])
                name = dataset.identifier_name(ident)
                if kind == "arc":
                    tid, aug = parse_puzzle_name(name)
                    augs.append(aug.canonical().name)
                else:
                    gi = np.asarray(set_arrays.group_indices)
                    g = int(np.searchsorted(gi, p, side="right") - 1)
                    tid = f"{kind or 'puzzle'}-{split}-{g:07d}"
                    augs.append("id" if p == int(gi[g]) else f"aug{p - int(gi[g])}")
                names.append(tid)
                pairs.append(e - int(set_arrays.puzzle_indices[p]))
            for s in range(steps):
                acts = {}
                for h in chosen:
                    parts = h.split(".")
                    if parts[0] == "z_H":
                        st = tr.z_H[s, int(parts[1])]
                    else:
                        st = tr.z_L[s, int(parts[1]), int(parts[2])]
                    acts[h] = st[real][:, pos_lo:].reshape(-1, cfg.hidden_size).to(dtype)
                b = len(real)

                preds = tr.preds[s][real].numpy()
                index = {
                    "task_id": np.repeat(np.array(names, dtype=object), n_pos),
                    "augmentation": np.repeat(np.array(augs, dtype=object), n_pos),
                    "pair": np.repeat(np.asarray(pairs), n_pos),
                    "role": np.full(b * n_pos, role, dtype=object),
                    "row": _per_pos(grow, tok_idx),
                    "col": _per_pos(gcol, tok_idx),
                    "token_id": _per_pos(inputs, tok_idx),
                    "position": np.tile(seq_pos, b),
                    "sample": np.repeat(ex, n_pos),
                    "act_step": np.full(b * n_pos, s + 1, dtype=np.int16),
                    "split": np.full(b * n_pos, split, dtype=object),
                    "puzzle_identifier": np.repeat(set_arrays.puzzle_identifiers[pz], n_pos),
                    "label_id": _per_pos(labels, tok_idx),
                    "pred_id": _per_pos(preds, tok_idx),
                    "q_halt_logit": np.repeat(tr.q_halt[s][real].numpy(), n_pos),
                    "q_continue_logit": np.repeat(tr.q_continue[s][real].numpy(), n_pos),
                }
                w.add(acts, index)
                rows_written += b * n_pos
            done += len(real)
            w.commit({"examples_done": done})
            emit(progress, "examples", done, n_total)
    return {"store": str(store), "examples": done, "rows": rows_written, "hooks": chosen, "steps": steps}
