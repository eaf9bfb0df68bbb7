"""Per-primitive profiles of DSL calls: cProfile statistics folded into {calls, self_s, total_s} per primitive."""

from __future__ import annotations

import bisect
import os
import re
from pathlib import Path

_DEF_LINES: dict[str, tuple[list[int], list[str]]] = {}


def _enclosing(filename: str, lineno: int) -> str:
    """The name of the top-level function around a line of a DSL module (names the primitive of a lambda)."""
    table = _DEF_LINES.get(filename)
    if table is None:
        lines, names = [], []
        try:
            for n, text in enumerate(Path(filename).read_text().splitlines(), 1):
                m = re.match(r"def (\w+)\(", text)
                if m:
                    lines.append(n)
                    names.append(m.group(1))
        except OSError:
            pass
        table = _DEF_LINES[filename] = (lines, names)
    k = bisect.bisect_right(table[0], lineno) - 1
    return table[1][k] if k >= 0 else "?"


def _profile_stats(prof) -> dict[str, dict[str, float]]:
    """Per-primitive calls, self and total seconds from a cProfile run (DSL functions only)."""
    import pstats

    dsl_dir = str(Path(__file__).parents[1])
    # The runner's own frames (its timing loop around each call) are not primitives.
    runner_dir = str(Path(__file__).parent) + os.sep
    out: dict[str, dict[str, float]] = {}
    for (filename, lineno, func), (_cc, nc, tt, ct, _callers) in pstats.Stats(prof).stats.items():
        if not filename.startswith(dsl_dir) or filename.startswith(runner_dir):
            continue
        # A lambda is named after the combinator that made it (compose.<lambda>, rbind.<lambda>, ...).
        name = f"{_enclosing(filename, lineno)}.{func}" if func.startswith("<") else func
        slot = out.setdefault(name, {"calls": 0, "self_s": 0.0, "total_s": 0.0})
        slot["calls"] += nc
        slot["self_s"] += tt
        slot["total_s"] += ct
    return out


def _merge_profiles(into: dict, more: dict | None) -> None:
    for name, s in (more or {}).items():
        slot = into.setdefault(name, {"calls": 0, "self_s": 0.0, "total_s": 0.0})
        for k in slot:
            slot[k] += s[k]
