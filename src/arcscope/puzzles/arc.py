"""ARC puzzles in the HRM layout, from any task source.

Follows sapientinc/HRM ``dataset/build_arc_dataset.py``:

- every grid becomes a 30x30 canvas of tokens (``arcscope.tasks.hrm``: PAD 0, EOS 1, colour + 2);
- each task gives a *group*: the task itself plus up to ``num_aug`` distinct augmentations (a dihedral
  transform and a permutation of colours 1..9, black kept), each augmented task its own puzzle identifier;
- in the train split every example but one (drawn per puzzle) is translated to a random offset, input and
  output by the same amount; the test split is never translated;
- the split rule: all pairs of *training* sources go to ``train``; of *evaluation* sources, the
  demonstration pairs go to ``train`` and the test pairs to ``test`` under the same identifiers, so the
  puzzle embedding learnt from the demonstrations is the one used on the test inputs.

Identifier names follow HRM too: the task id alone for the original, ``ID_t{k}_{colours}`` for an augmented
copy (``k`` the dihedral number, ``colours`` the 10 new colours of 0..9), so HRM's evaluation notebook can
invert them; :func:`parse_puzzle_name` turns a name back into the task id and an arcscope augmentation.
"""

from __future__ import annotations

import os
import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from arcscope.config import make_config
from arcscope.errors import ArcscopeError
from arcscope.progress import ProgressFn, emit
from arcscope.puzzles.config import ArcBuildConfig
from arcscope.puzzles.layout import BLANK, DatasetWriter
from arcscope.tasks.augment import (
    Augmentation,
    ColourPermutation,
    Compose,
    Dihedral,
    Identity,
    augment_task,
)
from arcscope.tasks.core import MAX_SIDE, Task, TaskSet
from arcscope.tasks.hrm import VOCAB_SIZE, hrm_encode, hrm_translation

SEQ_LEN = MAX_SIDE * MAX_SIDE
"""Tokens per ARC example: the flattened 30x30 canvas."""

_NAME_RE = re.compile(r"^(?P<task>.+)_t(?P<k>[0-7])_(?P<perm>\d{10})$")

__all__ = ["SEQ_LEN", "ArcBuildReport", "build_arc", "puzzle_name", "parse_puzzle_name"]


def puzzle_name(task_id: str, aug: Augmentation | None = None) -> str:
    """HRM's identifier name for ``task_id`` under ``aug``: the id alone, or ``ID_t{k}_{colours}``."""
    k, perm = _parts(aug)
    if k == 0 and perm == tuple(range(10)):
        return task_id
    return f"{task_id}_t{k}_{''.join(str(x) for x in perm)}"


def parse_puzzle_name(name: str) -> tuple[str, Augmentation]:
    """The task id and the augmentation (canonical form) an identifier name encodes; the inverse of :func:`puzzle_name`."""
    m = _NAME_RE.match(name)
    if m is None:
        return name, Identity()
    perm = [int(c) for c in m.group("perm")]
    if sorted(perm) != list(range(10)):
        return name, Identity()
    aug = Compose([Dihedral(int(m.group("k"))), ColourPermutation(perm)]).canonical()
    return m.group("task"), aug


def _parts(aug: Augmentation | None) -> tuple[int, tuple[int, ...]]:
    k, perm = 0, tuple(range(10))
    if aug is None:
        return k, perm
    canon = aug.canonical()
    parts = canon.parts if isinstance(canon, Compose) else (canon,)
    for p in parts:
        if isinstance(p, Dihedral):
            k = p.k
        elif isinstance(p, ColourPermutation):
            perm = p.perm
        elif not isinstance(p, Identity):
            raise ArcscopeError(
                f"HRM puzzle names encode a dihedral transform and colours only, not {p.name}"
            )
    return k, perm


@dataclass
class ArcBuildReport:
    """What :func:`build_arc` wrote."""

    path: Path
    tasks: int = 0
    puzzles: dict[str, int] = field(default_factory=dict)
    examples: dict[str, int] = field(default_factory=dict)
    groups: dict[str, int] = field(default_factory=dict)
    identifiers: int = 0
    short_augmentations: list[tuple[str, int]] = field(default_factory=list)
    """Tasks with fewer distinct augmentations than asked: (task id, how many were found)."""
    skipped_pairs: list[tuple[str, str]] = field(default_factory=list)
    """(task id, why) for pairs left out: training-source test pairs with no known output."""
    skipped_tasks: list[tuple[str, str]] = field(default_factory=list)
    """Invalid tasks skipped with ``on_error='skip'``: (where, why)."""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary."""
        return {
            "path": str(self.path),
            "tasks": self.tasks,
            "puzzles": self.puzzles,
            "examples": self.examples,
            "groups": self.groups,
            "identifiers": self.identifiers,
            "short_augmentations": len(self.short_augmentations),
            "skipped_pairs": len(self.skipped_pairs),
            "skipped_tasks": len(self.skipped_tasks),
        }


def _task_seed(seed: int, task_id: str) -> np.random.SeedSequence:
    # Per-task streams keyed by id: a task's puzzles do not change when other tasks are added or reordered.
    return np.random.SeedSequence([seed, zlib.crc32(task_id.encode("utf-8"))])


def _encode_pairs(
    pairs: Sequence[tuple[np.ndarray, np.ndarray | None]], rng: np.random.Generator, translate: bool
) -> tuple[np.ndarray, np.ndarray]:
    keep = int(rng.integers(len(pairs)))  # HRM leaves one example per puzzle untranslated
    inputs, labels = [], []
    for i, (inp, out) in enumerate(pairs):
        shapes = [inp.shape] + ([out.shape] if out is not None else [])
        offset = hrm_translation(shapes, rng) if translate and i != keep else (0, 0)
        inputs.append(hrm_encode(inp, offset=offset))
        # An unknown answer (a Kaggle test input) is all PAD, which the loss and metrics ignore.
        labels.append(hrm_encode(out, offset=offset) if out is not None else np.zeros(SEQ_LEN, np.uint8))
    return np.stack(inputs), np.stack(labels)


def build_arc(
    out: str | os.PathLike[str],
    train: Sequence[str | TaskSet] = ("arc1:training",),
    evaluation: Sequence[str | TaskSet] = ("arc1:evaluation",),
    config: ArcBuildConfig | dict[str, Any] | None = None,
    *,
    overwrite: bool = False,
    progress: ProgressFn | None = None,
    **settings: Any,
) -> ArcBuildReport:
    """Build an HRM ARC dataset from task sources; see the module docstring for the rules.

    ``train`` sources put all their pairs in the train split; ``evaluation`` sources put their demonstration
    pairs in train and their test pairs in test. ``limit`` takes the first N tasks of each source (for quick
    experiments). ``progress`` gets a "tasks" event after each task. ``config`` and keyword ``settings``
    are :class:`~arcscope.puzzles.config.ArcBuildConfig` fields.
    """
    cfg = make_config(ArcBuildConfig, config, settings)
    num_aug, seed, translate, limit, on_error = cfg.num_aug, cfg.seed, cfg.translate, cfg.limit, cfg.on_error
    retries_factor = cfg.retries_factor
    from arcscope.tasks import load

    if num_aug < 0:
        raise ArcscopeError(f"num_aug must be >= 0, got {num_aug}")
    sources: list[tuple[str, TaskSet]] = []
    report = ArcBuildReport(Path(out))
    for kind, specs in (("training", train), ("evaluation", evaluation)):
        for spec in specs:
            ts = load(spec, on_error=on_error, limit=limit)  # type: ignore[arg-type]
            report.skipped_tasks.extend(ts.skipped)
            sources.append((kind, ts))
    seen: dict[str, str] = {}
    for _, ts in sources:
        for t in ts:
            if t.id in seen:
                raise ArcscopeError(
                    f"task id {t.id!r} is in both {seen[t.id]} and {ts.name}: puzzle identifiers must be unique; "
                    "drop one source or rename the tasks"
                )
            seen[t.id] = ts.name
    total = len(seen)
    if total == 0:
        raise ArcscopeError("no tasks to build from: every source is empty")

    identifiers = [BLANK]
    done = 0
    with DatasetWriter(out, seq_len=SEQ_LEN, vocab_size=VOCAB_SIZE, overwrite=overwrite) as writer:
        for kind, ts in sources:
            for task in ts:
                rng = np.random.default_rng(_task_seed(seed, task.id))
                variants: list[tuple[Augmentation, Task]] = [(Identity(), task)]
                if num_aug:
                    extra = augment_task(
                        task,
                        num_aug,
                        seed=int(rng.integers(2**63)),
                        pair_order=False,
                        keep_background=True,
                        max_tries=retries_factor * num_aug,
                    )
                    variants += extra
                    if len(extra) < num_aug:
                        report.short_augmentations.append((task.id, len(extra)))
                group: dict[str, list[tuple[int, np.ndarray, np.ndarray]]] = {"train": [], "test": []}
                for aug, t in variants:
                    ident = len(identifiers)
                    identifiers.append(puzzle_name(task.id, aug))
                    demos = [(p.input, p.output) for p in t.train]
                    tests = [(p.input, p.output) for p in t.test]
                    if kind == "training":
                        known = [(i, o) for i, o in tests if o is not None]
                        if len(known) < len(tests) and aug is variants[0][0]:
                            report.skipped_pairs.append((task.id, "test pair without a known output"))
                        group["train"].append((ident, *_encode_pairs(demos + known, rng, translate)))
                    else:
                        group["train"].append((ident, *_encode_pairs(demos, rng, translate)))
                        group["test"].append((ident, *_encode_pairs(tests, rng, False)))
                for split, puzzles in group.items():
                    if puzzles:
                        writer.split(split).add_group(puzzles)
                done += 1
                emit(progress, "tasks", done, total)
        for split in ("train", "test"):
            b = writer.split(split)
            report.puzzles[split] = b.n_puzzles
            report.examples[split] = b.n_examples
            report.groups[split] = b.n_groups
        report.tasks = total
        report.identifiers = len(identifiers)
        info = {
            "kind": "arc",
            "format": "hrm",
            "sources": {
                "training": [ts.name for k, ts in sources if k == "training"],
                "evaluation": [ts.name for k, ts in sources if k == "evaluation"],
            },
            "num_aug": num_aug,
            "seed": seed,
            "translate": translate,
            "limit": limit,
            "canvas": MAX_SIDE,
            "tokens": {"pad": 0, "eos": 1, "colour_offset": 2},
        }
        writer.finish(identifiers, info)
    return report
