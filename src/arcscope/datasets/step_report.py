"""What a step did: counts, skipped records, timings, its own figures; saved as JSON beside its output."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, is_dataclass
from pathlib import Path
from typing import Any

from arcscope.datasets.records import Skipped, dumps
from arcscope.files import atomic_write_json

MAX_SKIPPED_LISTED = 1000
"""Skipped records listed one by one in a report; the count always covers all of them."""


@dataclass
class StepReport:
    """The outcome of one step: records in and out, what was skipped and why, and step figures."""

    step: str
    input: str
    output: str | None
    config: dict[str, Any]
    records_in: int = 0
    records_out: int = 0
    skipped: Skipped = field(default_factory=list)
    n_skipped: int = 0
    seconds: float = 0.0
    figures: dict[str, Any] = field(default_factory=dict)
    """Step-specific results (dedupe group sizes, split counts, length percentiles, token usage ...)."""

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (skipped entries capped at MAX_SKIPPED_LISTED)."""
        d = asdict(self)
        d["skipped"] = [list(s) for s in self.skipped[:MAX_SKIPPED_LISTED]]
        return d

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the report as JSON atomically."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, json.loads(dumps(self.to_json())), indent=2, newline=True)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> StepReport:
        """Read a report written by :meth:`save`."""
        d = json.loads(Path(path).read_text(encoding="utf-8"))
        d["skipped"] = [tuple(s) for s in d.get("skipped", [])]
        return cls(**d)


def report_path(output: str | os.PathLike[str]) -> Path:
    """Where the report of a step that wrote ``output`` (a path or spec) is kept: ``OUTPUT.report.json``."""
    from arcscope.tasks.sources import split_kind

    text = os.fspath(output)
    _, rest = split_kind(text)
    p = Path(rest).expanduser()
    if "{split}" in p.name:
        p = p.with_name(p.name.replace("{split}", "all"))
    return p.with_name(p.name + ".report.json")


def config_dict(cfg: Any) -> dict[str, Any]:
    """A step config as a plain dict (dataclasses and dicts)."""
    if is_dataclass(cfg):
        return asdict(cfg)
    return dict(cfg)


__all__ = ["StepReport", "config_dict", "report_path"]
