"""The bundled zoo: small trained checkpoints (safetensors + JSON card) shipped inside the package.

This module only names and finds zoo models; loading lives beside ``model.load`` (``load_zoo``) and the
builder that trains and writes the zoo is ``bench/build_rnn_zoo.py``, so nothing here imports the model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from arcscope.rnn.errors import CheckpointError
from arcscope.rnn.tasks import get_task

ZOO_DIR = Path(__file__).parent / "zoo"


class ZooSpec(NamedTuple):
    """One bundled model to train: task, H (hidden size) and T (sequence length)."""

    task: str
    hidden_size: int
    seq_len: int


# The bundled models: `arcscope rnn train --task TASK --hidden H --seq-len T --seeds 3 --steps 8192` for each
# (bench/build_rnn_zoo.py runs exactly that; each card's "command" field repeats it).
ZOO_SPEC: list[ZooSpec] = (
    [ZooSpec("second-argmax", h, t) for h in (2, 4, 8, 16) for t in (2, 3, 5, 10)]
    + [ZooSpec("second-argmax", 3, 3)]
    + [ZooSpec("argmedian", h, t) for h in (4, 8) for t in (3, 5)]
    + [ZooSpec("median", h, t) for h in (4, 8) for t in (3, 5)]
)


@dataclass(frozen=True)
class ZooEntry:
    """One bundled model: its name, checkpoint path and card."""

    name: str
    path: Path
    card: dict

    @property
    def task(self) -> str:
        """Task name."""
        return self.card["task"]

    @property
    def score(self) -> float:
        """The held-out metric recorded in the card (accuracy, or RMSE for median)."""
        return float(self.card[self.card["metric"]])


def zoo_name(task: str, hidden_size: int, seq_len: int) -> str:
    """The canonical name of a model: ``second-argmax-h4-t3``."""
    return f"{get_task(task).name}-h{hidden_size}-t{seq_len}"


def zoo(folder: str | Path | None = None) -> list[ZooEntry]:
    """The bundled models (or those in ``folder``), sorted by task, H, T."""
    root = Path(folder) if folder else ZOO_DIR
    entries = []
    for card_file in sorted(root.glob("*.json")):
        try:
            card = json.loads(card_file.read_text())
        except ValueError as e:
            raise CheckpointError(f"{card_file}: the model card is not valid JSON ({e})") from e
        if not isinstance(card, dict) or "task" not in card:
            continue
        weights = card_file.with_suffix(".safetensors")
        if weights.exists():
            entries.append(ZooEntry(card.get("name", card_file.stem), weights, card))
    return sorted(entries, key=lambda e: (e.task, e.card["hidden_size"], e.card["seq_len"]))


def zoo_path(name: str) -> Path | None:
    """The checkpoint of zoo model ``name`` (``second-argmax-h4-t3``, ``zoo:`` prefix allowed), or None."""
    key = name.removeprefix("zoo:")
    p = ZOO_DIR / f"{key}.safetensors"
    return p if p.exists() else None


def zoo_model_path(task: str, hidden_size: int, seq_len: int) -> Path:
    """The checkpoint of the bundled model for ``task`` at H, T; a clear error naming what exists if none."""
    name = zoo_name(task, hidden_size, seq_len)
    p = zoo_path(name)
    if p is None:
        task_name = get_task(task).name
        have = ", ".join(
            f"h{e.card['hidden_size']}-t{e.card['seq_len']}" for e in zoo() if e.task == task_name
        )
        raise CheckpointError(f"no bundled model {name}; the zoo has for {task_name}: {have or 'none'}")
    return p
