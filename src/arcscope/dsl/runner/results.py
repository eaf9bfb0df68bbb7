"""What a run produces: a result per pair, per program, and the run's report; the one rule that sums pairs up."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

STATUSES = ("solved", "wrong", "invalid", "raised", "timeout")
"""Program statuses, best first."""
_SEVERITY = {"timeout": 4, "raised": 3, "invalid": 2, "wrong": 1, "correct": 0, "unknown": 0, "skipped": 0}


@dataclass
class PairResult:
    """One call of a program on one input."""

    split: str
    """``train`` or ``test``."""
    index: int
    status: str
    """correct, wrong, invalid, raised, timeout, unknown (no known output) or skipped (after a timeout)."""
    seconds: float = 0.0
    error: str | None = None


@dataclass
class ProgramResult:
    """A program's run on its task."""

    source: str
    program: str
    task_id: str
    status: str
    pairs: list[PairResult] = field(default_factory=list)
    seconds: float = 0.0
    error: str | None = None

    def outcome(self) -> tuple:
        """Everything but the timings: equal across engines for the same programs and tasks."""
        return (
            self.source,
            self.program,
            self.task_id,
            self.status,
            tuple((p.split, p.index, p.status, p.error) for p in self.pairs),
            self.error,
        )


@dataclass
class RunReport:
    """Results of a run, with the engine, wall time and (on request) a per-primitive profile."""

    results: list[ProgramResult]
    engine: str
    workers: int
    wall_seconds: float
    tasks: int
    no_task: list[tuple[str, str]] = field(default_factory=list)
    """(source, program) pairs whose task id is not in the task source."""
    skipped: list[tuple[str, str]] = field(default_factory=list)
    """Bad items passed over with ``on_error="skip"``: (where, reason)."""
    profile: dict[str, dict[str, float]] | None = None
    """Primitive -> {calls, self_s, total_s}, summed over all calls (None unless asked for)."""
    order: str = "exact"
    """How ``objects`` built its objects: ``exact`` (arc-dsl's iteration order) or ``fast``."""

    def counts(self) -> dict[str, int]:
        """Number of programs per status."""
        out = dict.fromkeys(STATUSES, 0)
        for r in self.results:
            out[r.status] = out.get(r.status, 0) + 1
        return out

    def slowest(self, n: int = 10) -> list[ProgramResult]:
        """The n programs that took longest."""
        return sorted(self.results, key=lambda r: -r.seconds)[:n]

    def top_primitives(self, n: int = 15) -> list[tuple[str, dict[str, float]]]:
        """The n primitives with the most self time (empty without a profile)."""
        if not self.profile:
            return []
        return sorted(self.profile.items(), key=lambda kv: -kv[1]["self_s"])[:n]

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict of the whole report."""
        return {
            "engine": self.engine,
            "workers": self.workers,
            "order": self.order,
            "wall_seconds": self.wall_seconds,
            "tasks": self.tasks,
            "counts": self.counts(),
            "results": [asdict(r) for r in self.results],
            "no_task": [list(x) for x in self.no_task],
            "skipped": [list(x) for x in self.skipped],
            "profile": self.profile,
        }


def _summarise(source: str, name: str, task_id: str, pairs: list[PairResult]) -> ProgramResult:
    worst = max(pairs, key=lambda p: _SEVERITY[p.status], default=None)
    if worst is None or _SEVERITY[worst.status] == 0:
        status = "solved"
    else:
        status = worst.status
    error = next((p.error for p in pairs if p.error), None)
    return ProgramResult(source, name, task_id, status, pairs, sum(p.seconds for p in pairs), error)
