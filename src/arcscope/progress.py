"""One progress event for every long-running library function; library code emits, the CLI draws.

A long-running function takes ``progress: ProgressFn | None = None`` and calls it with :class:`Progress`
events. Each ``label`` is one counter ("batches", "train puzzles", "filter" ...): ``done`` only grows
within a label, ``total`` is the end when known, and ``extra`` carries figures to show beside it (loss,
tokens per second, tasks done). Library code never draws anything itself; ``arcscope.cli.app.progress_bar``
turns the events into rich bars with rate and ETA.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace

Figure = float | int | str
"""One extra figure shown beside a bar."""


@dataclass(frozen=True)
class Progress:
    """How far one labelled piece of work has got."""

    label: str
    """What is counted; every label is its own bar."""
    done: int
    """Units done so far (never decreases within one label)."""
    total: int | None = None
    """Units in all, or None while unknown."""
    extra: Mapping[str, Figure] = field(default_factory=dict)
    """Figures to show beside the bar (``{"loss": 0.31, "tok/s": 5120.0}``)."""


ProgressFn = Callable[[Progress], None]
"""The callback a long-running function takes as ``progress=``."""


def emit(
    progress: ProgressFn | None, label: str, done: int, total: int | None = None, **extra: Figure
) -> None:
    """Send one event to ``progress``; nothing when it is None."""
    if progress is not None:
        progress(Progress(label, int(done), None if total is None else int(total), extra))


def relabel(progress: ProgressFn | None, label: str) -> ProgressFn | None:
    """A callback that forwards every event to ``progress`` under ``label`` (None stays None)."""
    if progress is None:
        return None
    return lambda ev: progress(replace(ev, label=label))


class Ticker:
    """Counts units and emits every ``every`` of them and at the end, for loops too tight to emit each time."""

    def __init__(self, progress: ProgressFn | None, label: str, total: int | None = None, every: int = 500):
        self.progress = progress
        self.label = label
        self.total = total
        self.every = max(1, every)
        self.n = 0
        self.t0 = time.perf_counter()

    def tick(self, k: int = 1, **extra: Figure) -> None:
        """Count ``k`` more units; emit when a multiple of ``every`` is crossed."""
        before = self.n
        self.n += k
        if self.n // self.every != before // self.every:
            emit(self.progress, self.label, self.n, self.total, **extra)

    def done(self, **extra: Figure) -> float:
        """Emit the final count; return seconds since the ticker was made."""
        emit(self.progress, self.label, self.n, self.total, **extra)
        return time.perf_counter() - self.t0


__all__ = ["Figure", "Progress", "ProgressFn", "Ticker", "emit", "relabel"]
