"""Benchmark the DSL: fast vs reference ``objects``, the program runner's engines, and batched labelling.

Run: ``.venv/bin/python bench/bench_dsl.py [--repeat 2] [--no-write] [--quick]``. Prints three tables and
replaces the ``bench_dsl`` section of docs/benchmarks.md with them, the date and the machine.

1. ``objects`` in all 8 flag combinations over every grid of the bundled ARC-AGI-1 tasks (training +
   evaluation), reference and fast side by side in one run, one core; results are checked equal.
2. The bundled example programs (``arcscope.dsl.corpus``) repeated as distinct jobs, sequential vs the
   process engine on every core (start-up of the worker processes included).
3. Batched labelling (labels only, no DSL objects) at batch sizes 1..N: the per-grid kernel in a loop, the
   numba batch over all cores, torch on CPU (one thread), and torch on CUDA when a GPU is present.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import itertools
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

from _doc import DOC, cpu_model, write_section

START, END = "<!-- bench_dsl:start -->", "<!-- bench_dsl:end -->"
FLAGS = list(itertools.product((True, False), repeat=3))


def best_of(fn, repeat: int) -> float:
    """Fastest of ``repeat`` runs in seconds (the least disturbed by other load)."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def interleaved(fns, repeat: int) -> list[float]:
    """Best-of times of each function, run in turn, so a burst of outside load hits all alike."""
    times = [[] for _ in fns]
    for _ in range(repeat):
        for fn, out in zip(fns, times, strict=True):
            t0 = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t0)
    return [min(t) for t in times]


def arc1_grids() -> list[tuple]:
    """Every input and output grid of the bundled ARC-AGI-1 tasks, as DSL tuples."""
    from arcscope.tasks import load

    return [
        tuple(tuple(row) for row in g.tolist())
        for split in ("arc1:training", "arc1:evaluation")
        for t in load(split)
        for p in t.pairs
        for g in (p.input, p.output)
        if g is not None
    ]


def bench_objects(grids: list[tuple], repeat: int) -> tuple[list[str], str, str]:
    """Table rows: per flag combination, reference / exact / fast seconds, ratios, and equality checks."""
    from arcscope.dsl import fast
    from arcscope.dsl import reference as R

    def run(mode, flags):
        fast.set_object_order(mode)
        return [fast.objects(g, *flags) for g in grids]

    fast.warm_up()
    for mode in fast.ORDERS:  # fill the per-shape caches (seed order, replay tables), as a long run has them
        run(mode, (True, True, True))
        run(mode, (True, False, True))
    rows, tot = [], [0.0, 0.0, 0.0]
    n = len(grids)
    for flags in FLAGS:
        ref = [R.objects(g, *flags) for g in grids]
        got = {mode: run(mode, flags) for mode in fast.ORDERS}
        checks = []
        for mode in fast.ORDERS:
            pairs = list(zip(ref, got[mode], strict=True))
            equal = sum(a == b for a, b in pairs)
            outer = sum(tuple(a) == tuple(b) for a, b in pairs)
            inner = sum(all(tuple(x) == tuple(y) for x, y in zip(a, b, strict=True)) for a, b in pairs)
            checks.append(f"{equal}/{n} | {outer}/{n} | {inner}/{n}")
        n_obj = sum(len(a) for a in ref)
        # Drop the checked results before timing: millions of live objects would make every GC pass slow.
        del ref, got
        gc.collect()
        t_ref, t_exact, t_fast = interleaved(
            [
                lambda flags=flags: [R.objects(g, *flags) for g in grids],
                lambda flags=flags: run("exact", flags),
                lambda flags=flags: run("fast", flags),
            ],
            repeat,
        )
        for k, t in enumerate((t_ref, t_exact, t_fast)):
            tot[k] += t
        name = "objects(I, {}, {}, {})".format(*("T" if f else "F" for f in flags))
        rows.append(
            f"| {name} | {n_obj:,} | {t_ref:.3f} | {t_exact:.3f} | {t_ref / t_exact:.1f}x | {t_fast:.3f} | "
            f"{t_ref / t_fast:.1f}x | {checks[0]} | {checks[1]} |"
        )
        print(rows[-1], flush=True)
    fast.set_object_order("exact")
    r_exact, r_fast = f"{tot[0] / tot[1]:.1f}x", f"{tot[0] / tot[2]:.1f}x"
    rows.append(
        f"| **all 8** | | {tot[0]:.3f} | {tot[1]:.3f} | **{r_exact}** | {tot[2]:.3f} | **{r_fast}** | | | | | | |"
    )
    return rows, r_exact, r_fast


def bench_runner(copies: int, repeat: int) -> list[str]:
    """Table rows: the example corpus run ``copies`` times, sequential vs the process engine (best of repeat)."""
    import arcscope.dsl.corpus as corpus
    from arcscope.dsl.runner import ProgramSource, run_programs
    from arcscope.tasks import load

    tasks = load("arc1:training")
    text = Path(corpus.__file__).read_text()
    sources = [ProgramSource(f"corpus-copy-{k}.py", text) for k in range(copies)]
    engines = (("sequential", 1), ("process", os.cpu_count() or 1))
    run_programs(sources[:1], tasks, engine="sequential")  # warm: kernels, caches, imports
    best = {e: float("inf") for e, _ in engines}
    solved = {}
    for _ in range(repeat):  # alternate the engines, so a burst of outside load hits both alike
        for engine, workers in engines:
            t0 = time.perf_counter()
            report = run_programs(sources, tasks, engine=engine, workers=workers)
            best[engine] = min(best[engine], time.perf_counter() - t0)
            solved[engine] = (report.counts()["solved"], len(report.results))
    rows = []
    base = None
    for engine, workers in engines:
        ok, n = solved[engine]
        rate = n / best[engine]
        base = base or rate
        rows.append(
            f"| {engine} | {workers} | {n} | {ok} | {best[engine]:.2f} | {rate:,.1f} | {rate / base:.2f}x |"
        )
        print(rows[-1], flush=True)
    return rows


def bench_batch(grids: list[tuple], sizes: list[int], repeat: int) -> list[str]:
    """Table rows: grids/s for per-grid labelling and the batch backends at each batch size."""
    import torch

    from arcscope.dsl import _kernels as K
    from arcscope.dsl import fast
    from arcscope.dsl.batch import batch_objects, pack_grids

    torch.set_num_threads(1)  # torch's thread pool spins badly on a shared machine; see the notes
    has_cuda = torch.cuda.is_available()
    rows = []
    for size in sizes:
        batch = [grids[k % len(grids)] for k in range(size)]
        packed = pack_grids(batch)
        arrays = [fast.as_array(g) for g in batch]
        shapes = [(len(g), len(g[0])) for g in batch]

        def per_grid(arrays=arrays, shapes=shapes):
            for a, (h, w) in zip(arrays, shapes, strict=True):
                bg = K.tie_colour(a, h * w, True)
                K.label_grid(a, h, w, True, False, bg, np.empty(h * w, np.int32))

        reps = repeat if size >= 1000 else max(repeat, 5)
        t_loop = best_of(per_grid, reps)
        t_numba = best_of(lambda packed=packed: batch_objects(packed, True, False, True, parallel=True), reps)
        t_serial = best_of(
            lambda packed=packed: batch_objects(packed, True, False, True, parallel=False), reps
        )
        t_torch = best_of(
            lambda packed=packed: batch_objects(packed, True, False, True, backend="torch", device="cpu"),
            reps,
        )
        cols = [size / t_loop, size / t_serial, size / t_numba, size / t_torch]
        if has_cuda:

            def on_gpu(packed=packed):
                batch_objects(packed, True, False, True, backend="torch", device="cuda")
                torch.cuda.synchronize()

            on_gpu()
            cols.append(size / best_of(on_gpu, reps))
        rows.append(
            f"| {size:,} | " + " | ".join(f"{c:,.0f}" for c in cols) + (" |" if has_cuda else " | n/a |")
        )
        print(rows[-1], flush=True)
    return rows


def crossover(rows: list[str]) -> str:
    """A sentence on where each batch backend overtakes the per-grid loop, from the table rows."""
    parsed = []
    for r in rows:
        cells = [c.strip().replace(",", "") for c in r.strip("|").split("|")]
        parsed.append((int(cells[0]), *(float(c) if c != "n/a" else None for c in cells[1:])))
    out = []
    for col, name in (
        (2, "the one-thread numba batch"),
        (3, "the all-core numba batch"),
        (4, "torch on CPU"),
        (5, "torch on CUDA"),
    ):
        wins = [p[0] for p in parsed if p[col] is not None and p[col] > p[1]]
        if any(p[col] is not None for p in parsed):
            out.append(
                f"{name} overtakes the per-grid loop from batch {wins[0]:,}"
                if wins
                else f"{name} never overtakes the per-grid loop here"
            )
    return "; ".join(out) + "."


def main() -> None:
    """Run the benchmarks, print the tables and record them in docs/benchmarks.md."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--copies", type=int, default=40, help="How many times the example corpus is run.")
    ap.add_argument("--quick", action="store_true", help="A tenth of the grids (a smoke run).")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    grids = arc1_grids()
    if args.quick:
        grids = grids[::10]
    print(f"{len(grids)} ARC-AGI-1 grids", flush=True)
    # The runner goes first: with torch not yet imported, its process engine may fork (fast start).
    run_rows = bench_runner(2 if args.quick else args.copies, args.repeat)
    obj_rows, ratio_exact, ratio_fast = bench_objects(grids, max(args.repeat, 5))
    import numba
    import torch

    sizes = [1, 10, 100, 1_000, 10_000] if not args.quick else [1, 10, 100]
    batch_rows = bench_batch(grids, sizes, args.repeat)
    cells = sum(len(g) * len(g[0]) for g in grids)
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    text = f"""{START}
## bench_dsl: the ARC DSL (`objects` fast vs reference, program runner, batched labelling)

`bench/bench_dsl.py`, {dt.date.today().isoformat()}, {cpu_model(fallback="unknown")}, {os.cpu_count()} cores (shared with other work while it
ran, so treat figures as rough), Python {platform.python_version()}, numpy {np.__version__}, numba {numba.__version__},
torch {torch.__version__}{", GPU " + gpu if gpu else ", no GPU"}; best of {max(args.repeat, 5)} interleaved runs for
`objects`, {args.repeat} for the rest.

### `objects`: reference vs the two fast modes, one core

{len(grids):,} grids ({cells:,} cells): every input and output of the bundled ARC-AGI-1 training and evaluation
tasks, all three timed in the same run. `exact` is the default mode (`ARCSCOPE_DSL_ORDER=exact`): the
reference's breadth-first search replayed on CPython's set tables, so every object iterates cell for cell as
arc-dsl's does. `fast` (`ARCSCOPE_DSL_ORDER=fast`) labels the grid and builds each object row-major: equal
values, the set of objects in the reference's order, the cells inside an object not. The checks count grids
whose result equals the reference's (`eq`), whose set of objects iterates in the same order (`outer`), and
where every object does too (`inner`). The per-shape tables are filled before timing; the grid-to-array
cache holds 256 grids, so with grids visited in order every call converts its grid afresh.

| call | objects | reference s | exact s | exact ratio | fast s | fast ratio | exact: eq | outer | inner | fast: eq | outer | inner |
| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |
{chr(10).join(obj_rows)}

### Program runner: the example corpus, sequential vs all cores

The {42} bundled example programs (`arcscope.dsl.corpus`) loaded {2 if args.quick else args.copies} times as
distinct programs files, each program run on its task's train and test pairs and verified. The process
engine's wall time includes starting its worker processes (forked, they inherit the loaded programs). The programs
are cheap (about 0.2 ms each), so start-up, the pipe round trips and the parent's own share of the two
cores outweigh the parallel work here; programs that run longer per task gain from the workers.

| engine | workers | programs | solved | wall s | programs/s | vs sequential |
| --- | ---: | ---: | ---: | ---: | ---: | ---: |
{chr(10).join(run_rows)}

### Batched labelling: grids/s by batch size (labels only)

`objects(I, T, F, T)` labels for batches cycling through the ARC-AGI-1 grids: the compiled per-grid kernel
called in a Python loop (one core), `batch_objects(backend="numba")` on one thread (`parallel=False`)
and on all cores (numba's thread pool), and
`batch_objects(backend="torch")` on CPU with one torch thread. GPU: {("measured on " + gpu) if gpu else "not measured: no GPU was available to this run; the torch path runs on CUDA unchanged (`device='cuda'`) and its test is skipped without one"}.

| batch | per-grid loop | numba batch, 1 thread | numba batch, all cores | torch CPU | torch CUDA |
| ---: | ---: | ---: | ---: | ---: | ---: |
{chr(10).join(batch_rows)}

Crossover in this run (first batch size where it is ahead; on this shared machine the all-core figures
swing widely from run to run): {crossover(batch_rows)}

{END}"""
    print(text)
    if not args.no_write:
        write_section(text, START, END)
        print(f"recorded in {DOC}", file=sys.stderr)
    print(f"objects overall: exact order {ratio_exact}, fast order {ratio_fast}")


if __name__ == "__main__":
    main()
