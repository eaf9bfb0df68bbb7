"""Store write throughput next to one plain file write of the same bytes, as a ratio.

Run: .venv/bin/python bench/bench_store.py [--mib 256] [--repeat 3]
Prints a table and records it in docs/benchmarks.md under "## Store write throughput".
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch

from _doc import DOC, cpu_model, write_section
from arcscope.store import StoreWriter, open_store

SECTION = "## Store write throughput"
START, END = "<!-- bench_store:start -->", "<!-- bench_store:end -->"
HOOKS = {f"blocks.{i}.hook_resid_post": 1024 for i in range(4)}
BATCH_ROWS = 512  # rows per add(), as one engine batch
COMMIT_EVERY = 8  # adds per commit


def make_batches(total_rows: int) -> list[tuple[dict[str, torch.Tensor], dict]]:
    """Engine-like batches: float32 activations and their index columns (made before any timing)."""
    g = torch.Generator().manual_seed(0)
    out = []
    for start in range(0, total_rows, BATCH_ROWS):
        n = min(BATCH_ROWS, total_rows - start)
        pos = np.arange(start, start + n)
        index = {
            "task_id": [f"task{p // 2000:04d}" for p in pos],
            "augmentation": ["identity"] * n,
            "pair": (pos // 500) % 4,
            "role": ["test_input"] * n,
            "row": pos % 30,
            "col": pos % 29,
            "token_id": pos % 50000,
            "position": pos % 2048,
            "sample": pos // 2048,
        }
        out.append(({h: torch.randn(n, d, generator=g) for h, d in HOOKS.items()}, index))
    return out


def write_store(folder: str, batches, writers: int, shard_rows: int) -> tuple[float, int]:
    """Seconds to write and commit the whole store, and the bytes it holds."""
    t0 = time.perf_counter()
    with StoreWriter(folder, shard_rows=shard_rows, writers=writers, overwrite=True) as w:
        for i, (acts, index) in enumerate(batches):
            w.add(acts, index)
            if (i + 1) % COMMIT_EVERY == 0:
                w.commit({"batches": i + 1})
    dt = time.perf_counter() - t0
    return dt, open_store(folder).nbytes


def write_plain(path: str, data: bytes, fsync: bool) -> float:
    """Seconds for one open().write() of ``data`` (optionally fsync'd)."""
    t0 = time.perf_counter()
    with open(path, "wb") as f:
        f.write(data)
        if fsync:
            f.flush()
            os.fsync(f.fileno())
    return time.perf_counter() - t0


def record(table: str, meta: str) -> Path:
    """Put this benchmark's section into docs/benchmarks.md, replacing an older one, keeping the rest."""
    # An unmarked section (older runs) is found by its heading; it ends at the next heading or section marker.
    section = f"{START}\n{SECTION}\n\n{meta}\n\n{table}\n{END}"
    write_section(section, START, END, heading=SECTION, trim_end=True)
    return DOC


def main() -> None:
    """Run the comparison and record it."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mib", type=int, default=256, help="activation MiB to write per run")
    ap.add_argument("--shard-mib", type=int, default=32, help="MiB per shard")
    ap.add_argument("--repeat", type=int, default=3, help="runs per method; the best is kept")
    ap.add_argument("--no-record", action="store_true", help="print only; leave docs/benchmarks.md alone")
    args = ap.parse_args()

    row_bytes = sum(HOOKS.values()) * 4
    total_rows = args.mib * 2**20 // row_bytes
    shard_rows = args.shard_mib * 2**20 // row_bytes
    batches = make_batches(total_rows)
    tmp = tempfile.mkdtemp(prefix="arcscope-bench-store-")
    try:
        _, nbytes = write_store(os.path.join(tmp, "warm"), batches, 1, shard_rows)
        payload = os.urandom(1 << 20) * (nbytes // (1 << 20)) + os.urandom(nbytes % (1 << 20))
        results: dict[str, float] = {}
        for _ in range(args.repeat):
            # Interleaved runs, so that a noisy neighbour on the shared machine hits every method alike.
            for label, fn in (
                (
                    "plain write (open().write)",
                    lambda: write_plain(os.path.join(tmp, "plain.bin"), payload, False),
                ),
                ("plain write + fsync", lambda: write_plain(os.path.join(tmp, "plain.bin"), payload, True)),
                ("store, writers=1", lambda: write_store(os.path.join(tmp, "s1"), batches, 1, shard_rows)[0]),
                ("store, writers=4", lambda: write_store(os.path.join(tmp, "s4"), batches, 4, shard_rows)[0]),
            ):
                dt = fn()
                results[label] = min(results.get(label, float("inf")), dt)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    base = nbytes / results["plain write (open().write)"]
    lines = [
        "| method | MB/s | ratio vs plain write |",
        "| --- | ---: | ---: |",
    ]
    for label, dt in results.items():
        rate = nbytes / dt
        lines.append(f"| {label} | {rate / 1e6:,.0f} | {rate / base:.2f} |")
    table = "\n".join(lines)
    meta = (
        f"`bench/bench_store.py`, {date.today().isoformat()}, {cpu_model()}, {os.cpu_count()} cores (shared with "
        f"other work while it ran, so treat figures as rough), Python {platform.python_version()}, local tmp dir "
        f"({tempfile.gettempdir()}); best of {args.repeat} interleaved runs.\n\n"
        f"{nbytes / 1e6:,.0f} MB per run: {len(HOOKS)} float32 hooks x d=1024, {total_rows:,} rows in "
        f"{shard_rows:,}-row shards, add() of {BATCH_ROWS} rows, commit every {COMMIT_EVERY} adds. The store "
        "copies rows on add(), writes safetensors + Parquet, sha256-hashes every byte (on a second thread, "
        "overlapping the write) and fsyncs each file before the manifest commit; the plain write hands bytes "
        "already in memory to the page cache once. `ratio` = store MB/s / plain write MB/s."
    )
    print(meta)
    print(table)
    if not args.no_record:
        print(f"recorded in {record(table, meta)}")


if __name__ == "__main__":
    main()
