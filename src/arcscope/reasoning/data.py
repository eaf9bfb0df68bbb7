"""Batches from a dataset in the HRM layout, sampled as sapientinc/HRM ``puzzle_dataset.py`` does.

Training: groups are visited in a random order (a fresh permutation per epoch, epochs back to back), one
random puzzle of each group is taken, and as many of its examples (drawn without replacement) as still
fit the batch. Every batch is full; under DDP each process takes its slice of the global batch. Unlike
the original, a batch may span the end of an epoch rather than the last partial batch being dropped,
so datasets smaller than one batch still train.

Evaluation: examples in file order, ``global_batch_size`` at a time, the last batch padded (inputs with
``pad_id``, labels ignored, identifiers blank); :class:`Batch` keeps which examples are real.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from arcscope.puzzles.layout import PuzzleSplit
from arcscope.reasoning.losses import IGNORE_LABEL_ID

__all__ = ["Batch", "TrainStream", "collate", "train_batches", "eval_batches"]


@dataclass
class Batch:
    """One local batch: tensors for the model and, per row, the example and puzzle index (-1 for padding)."""

    set_name: str
    tensors: dict[str, torch.Tensor]
    examples: np.ndarray
    puzzles: np.ndarray
    global_size: int
    """Real (unpadded) examples in the global batch."""
    epoch: float = 0.0
    """Fractional epochs consumed when this batch was drawn (training)."""

    def to(self, device: torch.device | str) -> dict[str, torch.Tensor]:
        """The tensors moved to ``device``."""
        return {k: v.to(device, non_blocking=True) for k, v in self.tensors.items()}


def collate(
    split: PuzzleSplit, set_name: str, examples: np.ndarray, puzzles: np.ndarray, size: int
) -> dict[str, torch.Tensor]:
    """int32 tensors ``inputs``, ``labels`` (ignore id -> -100) and ``puzzle_identifiers``, padded to ``size`` rows."""
    meta = split.metadata
    s = split.sets[set_name]
    n = len(examples)
    inputs = np.full((size, meta.seq_len), meta.pad_id, dtype=np.int32)
    labels = np.full((size, meta.seq_len), IGNORE_LABEL_ID, dtype=np.int32)
    ids = np.full(size, meta.blank_identifier_id, dtype=np.int32)
    if n:
        order = np.argsort(examples, kind="stable")  # sorted reads are faster on memory-mapped files
        rows = examples[order]
        inputs[order] = s.inputs[rows]
        lab = np.asarray(s.labels[rows], dtype=np.int32)
        if meta.ignore_label_id is not None:
            lab[lab == meta.ignore_label_id] = IGNORE_LABEL_ID
        labels[order] = lab
        ids[:n] = s.puzzle_identifiers[puzzles]
    return {
        "inputs": torch.from_numpy(inputs),
        "labels": torch.from_numpy(labels),
        "puzzle_identifiers": torch.from_numpy(ids),
    }


class TrainStream:
    """The endless training stream as an explicit state machine, so a checkpoint can save its position.

    :meth:`state` returns the position (JSON plus the current group order as an array) and
    :meth:`load_state` puts a fresh stream back there, so a resumed run draws the very batches an
    uninterrupted one would, without replaying the stream from the start.
    """

    def __init__(
        self, split: PuzzleSplit, global_batch_size: int, *, seed: int = 0, rank: int = 0, world_size: int = 1
    ):
        if global_batch_size % world_size:
            raise ValueError(
                f"global batch size {global_batch_size} is not a multiple of the {world_size} processes"
            )
        self.split, self.global_batch_size, self.seed = split, global_batch_size, seed
        self.rank, self.local = rank, global_batch_size // world_size
        self.sets = [(name, s) for name, s in split.sets.items() if s.n_groups > 0]
        if not self.sets:
            raise ValueError(f"{split.path}: the split has no groups to train on")
        self.set_index, self.epoch, self.pos = 0, 0, 0
        self.order: np.ndarray | None = None
        """The group order being walked; None at the start of a pass over the current set."""
        self.rng = self._rng(0)

    def _rng(self, epoch: int) -> np.random.Generator:
        return np.random.Generator(np.random.Philox(seed=[self.seed, epoch]))

    def __iter__(self) -> TrainStream:
        return self

    def __next__(self) -> Batch:
        gbs = self.global_batch_size
        while True:
            name, s = self.sets[self.set_index]
            if self.order is None:
                self.rng = self._rng(self.epoch)
                self.order, self.pos = self.rng.permutation(s.n_groups), 0
            if self.pos < len(self.order):
                break
            # This pass ended exactly at a batch boundary: the next set (or the next epoch of this one).
            self.epoch += 1
            self.set_index = (self.set_index + 1) % len(self.sets)
            self.order = None
        gi, pi = np.asarray(s.group_indices), np.asarray(s.puzzle_indices)
        ex, pz = [], []
        size = 0
        while size < gbs:
            if self.pos >= len(self.order):
                # Carry the batch over into the next epoch's order instead of dropping it.
                self.epoch += 1
                self.rng = self._rng(self.epoch)
                self.order = np.concatenate([self.order[self.pos :], self.rng.permutation(s.n_groups)])
                self.pos = 0
            g = int(self.order[self.pos])
            self.pos += 1
            p = int(self.rng.integers(gi[g], gi[g + 1]))
            start, count = int(pi[p]), int(pi[p + 1] - pi[p])
            take = min(count, gbs - size)
            ex.append(start + self.rng.choice(count, take, replace=False))
            pz.append(np.full(take, p, dtype=np.int64))
            size += take
        lo, hi = self.rank * self.local, (self.rank + 1) * self.local
        examples, puzzles = np.concatenate(ex)[lo:hi], np.concatenate(pz)[lo:hi]
        return Batch(
            name,
            collate(self.split, name, examples, puzzles, self.local),
            examples,
            puzzles,
            gbs,
            self.epoch + self.pos / max(1, len(self.order)),
        )

    def state(self) -> tuple[dict, dict[str, np.ndarray]]:
        """The position: a JSON-able dict and the arrays to store beside it (the current group order)."""
        meta = {
            "set_index": self.set_index,
            "epoch": self.epoch,
            "pos": self.pos,
            "rng": _to_json(self.rng.bit_generator.state),
        }
        arrays = {} if self.order is None else {"order": np.asarray(self.order, dtype=np.int64)}
        return meta, arrays

    def load_state(self, meta: dict, arrays: dict[str, np.ndarray]) -> None:
        """Put the stream at a position saved by :meth:`state`."""
        self.set_index, self.epoch, self.pos = int(meta["set_index"]), int(meta["epoch"]), int(meta["pos"])
        if not 0 <= self.set_index < len(self.sets):
            raise ValueError(
                f"saved stream position names set {self.set_index}, the split has {len(self.sets)}"
            )
        order = arrays.get("order")
        self.order = None if order is None else np.asarray(order, dtype=np.int64)
        self.rng = self._rng(self.epoch)
        self.rng.bit_generator.state = _from_json(meta["rng"])


def _to_json(obj):
    # Philox's state holds uint64 arrays and numpy ints; JSON keeps Python ints exactly.
    if isinstance(obj, dict):
        return {k: _to_json(v) for k, v in obj.items()}
    if isinstance(obj, np.ndarray):
        return {"__uint64__": [int(x) for x in obj.tolist()]}
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def _from_json(obj):
    if isinstance(obj, dict):
        if set(obj) == {"__uint64__"}:
            return np.array(obj["__uint64__"], dtype=np.uint64)
        return {k: _from_json(v) for k, v in obj.items()}
    return obj


def train_batches(
    split: PuzzleSplit,
    global_batch_size: int,
    *,
    seed: int = 0,
    rank: int = 0,
    world_size: int = 1,
) -> Iterator[Batch]:
    """An endless stream of training batches (the local slice for ``rank``); see the module docstring."""
    return TrainStream(split, global_batch_size, seed=seed, rank=rank, world_size=world_size)


def eval_batches(
    split: PuzzleSplit,
    global_batch_size: int,
    *,
    rank: int = 0,
    world_size: int = 1,
    max_batches: int | None = None,
) -> Iterator[Batch]:
    """Every example once, in order, in padded batches (the local slice for ``rank``)."""
    if global_batch_size % world_size:
        raise ValueError(
            f"global batch size {global_batch_size} is not a multiple of the {world_size} processes"
        )
    local = global_batch_size // world_size
    done = 0
    for name, s in split.sets.items():
        owner = s.puzzle_of_examples()
        for start in range(0, s.n_examples, global_batch_size):
            if max_batches is not None and done >= max_batches:
                return
            end = min(s.n_examples, start + global_batch_size)
            lo, hi = start + rank * local, min(start + (rank + 1) * local, end)
            examples = np.arange(lo, max(lo, hi), dtype=np.int64)
            puzzles = owner[examples]
            tensors = collate(split, name, examples, puzzles, local)
            pad = local - len(examples)
            yield Batch(
                name,
                tensors,
                np.concatenate([examples, np.full(pad, -1, np.int64)]),
                np.concatenate([puzzles, np.full(pad, -1, np.int64)]),
                end - start,
            )
            done += 1
