"""Activation patching vs attribution patching on the bundled model, over layers x input cells and heads.

One ARC task (by default the bundled ARC-AGI-1 evaluation task with the shortest prompt) on SmolLM2-135M
(30 layers, 9 heads, float32, CPU), metric log-probability of the correct colour over all answer cells,
clean activations patched into the corrupted run. Two corruptions:

* ``cell``: one cell of the test input recoloured (the first one, colour drawn from seed 0). Every layer x
  every cell of the train pairs and the test input is swept; the entries before the changed token are
  exactly zero (their activations are identical) and are not run, the rest are.
* ``colours``: a colour permutation of the prompt (colour 0 kept), so tokens differ from the first train
  grid on and nearly every entry has to be run (``--colour-layers`` restricts it where that is too slow).

For each: exact :func:`patch_sweep` (``blocks.*.hook_resid_pre`` x cells) and :func:`head_sweep`, their
:func:`attribution_patching` estimates (one forward + backward each), and the agreement (Pearson, Spearman,
top-k overlap) over every entry and over the entries actually run. The fast path (a batch starts at its
layer and reuses the corrupted run's keys and values before its first position) is checked against full
forward passes on ``--check-layers`` of the cell sweep: seconds side by side and the largest difference.

    python bench/bench_patching.py [--task ID] [--batch-size 32] [--colour-layers all] [--update-docs]
"""

from __future__ import annotations

import argparse
import subprocess
import time
from datetime import date

import numpy as np
import torch

from _doc import machine, write_section

START, END = "<!-- bench_patching:start -->", "<!-- bench_patching:end -->"


def lscpu() -> str:
    """``lscpu``'s model name and CPU count, or the /proc/cpuinfo line where lscpu is missing."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return machine()
    fields = dict(
        (k.strip(), v.strip()) for k, v in (line.split(":", 1) for line in out.splitlines() if ":" in line)
    )
    return f"{fields.get('Model name', '?')}, {fields.get('CPU(s)', '?')} cores"


def shortest(loaded, source: str, candidates: int = 12):
    """The task of ``source`` with the shortest prompt (answer included), among the smallest by cells."""
    from arcscope.analysis.subject import Subject
    from arcscope.tasks import load

    tasks = [t for t in load(source) if t.test[0].output is not None]

    def cells(t):
        return (
            sum(p.input.size + p.output.size for p in t.train) + t.test[0].input.size + t.test[0].output.size
        )

    pool = sorted(tasks, key=cells)[:candidates]
    return min(pool, key=lambda t: len(Subject.from_task(loaded, t)))


def timed(fn, *a, **kw):
    t = time.perf_counter()
    out = fn(*a, **kw)
    return out, time.perf_counter() - t


def sweep(clean, bad, layers: list[int], batch_size: int) -> dict:
    """Exact and attribution patching over resid_pre x cells and layers x heads on ``layers``."""
    from arcscope.analysis.patching import agreement, attribution_patching, head_sweep, patch_sweep

    sites = "blocks.{" + ",".join(map(str, layers)) + "}.hook_resid_pre"
    out = {"layers": layers}
    out["approx"], out["t_approx"] = timed(attribution_patching, clean, bad, sites=sites)
    out["exact"], out["t_exact"] = timed(patch_sweep, clean, bad, sites=sites, batch_size=batch_size)
    out["approx_h"], out["t_approx_h"] = timed(attribution_patching, clean, bad, heads=True, layers=layers)
    out["exact_h"], out["t_exact_h"] = timed(head_sweep, clean, bad, layers=layers, batch_size=batch_size)
    for key, e, a in (("", out["exact"], out["approx"]), ("_h", out["exact_h"], out["approx_h"])):
        run = e.raw != 0  # entries run (the rest are exactly zero in both methods)
        out["ag" + key] = agreement(e, a, k=10)
        out["ag_run" + key] = agreement(e.raw[run], a.raw[run], k=10)
    out["ag30"] = agreement(out["exact"], out["approx"], k=30)
    return out


def table(name: str, r: dict) -> list[str]:
    """Markdown rows of one corruption's results."""
    lines = []
    for sweep_name, key in (("resid_pre x cells", ""), ("layers x heads", "_h")):
        e = r["exact" + key]
        ag, agr = r["ag" + key], r["ag_run" + key]
        lines.append(
            f"| {name} | {sweep_name} | {len(r['layers'])} x {e.raw.shape[1]} = {e.raw.size:,} | "
            f"{e.raw.size - e.settings['skipped_exact_zero']:,} | {e.settings['forward_passes']} | "
            f"{r['t_exact' + key]:.1f} | {r['t_approx' + key]:.1f} | {ag.pearson:.3f} / {ag.spearman:.3f} | "
            f"{agr.pearson:.3f} / {agr.spearman:.3f} | {ag.top_k_overlap:.1f} |"
        )
    return lines


HEAD = [
    "| corruption | sweep | entries | run | forward passes | exact s | attribution s | Pearson / Spearman (all) "
    "| Pearson / Spearman (run) | top-10 overlap |",
    "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tasks", default="arc1:evaluation")
    ap.add_argument("--task", default=None, help="task id (default: the shortest prompt of the source)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--cell-layers", default="", help="layers of the cell sweep (default: all)")
    ap.add_argument("--colour-layers", default="all", help="layers of the colours sweep ('' skips it)")
    ap.add_argument(
        "--check-layers", default="0,29", help="cell-sweep layers re-run with full forwards ('' skips)"
    )
    ap.add_argument("--update-docs", action="store_true", help="write the results into docs/benchmarks.md")
    args = ap.parse_args()

    from arcscope.analysis.corrupt import corrupt_subject
    from arcscope.analysis.patching import patch_sweep
    from arcscope.analysis.subject import Subject
    from arcscope.models import load_model
    from arcscope.tasks import load

    t_start = time.perf_counter()
    loaded = load_model(None, device="cpu", dtype="float32")
    task = load(args.tasks)[args.task] if args.task else shortest(loaded, args.tasks)
    clean = Subject.from_task(loaded, task)
    n_cells = len(clean.cells(["train_input", "train_output", "test_input"]))
    n_layers = loaded.model.config.num_hidden_layers
    print(f"task {task.id}: {len(clean)} tokens, {n_cells} input cells, {len(clean.answer)} answer cells")

    results = {}
    cell = corrupt_subject(clean, "cell:0,0", seed=0)
    cell_layers = [int(x) for x in args.cell_layers.split(",") if x.strip()] or list(range(n_layers))
    results[cell.task.meta["corruption"]] = sweep(clean, cell, cell_layers, args.batch_size)
    colour_layers = (
        list(range(n_layers))
        if args.colour_layers == "all"
        else [int(x) for x in args.colour_layers.split(",") if x.strip()]
    )
    if colour_layers:
        col = corrupt_subject(clean, "colours", seed=0)
        results[col.task.meta["corruption"]] = sweep(clean, col, colour_layers, args.batch_size)

    check = [int(x) for x in args.check_layers.split(",") if x.strip()]
    check_line = ""
    if check:
        sites = "blocks.{" + ",".join(map(str, check)) + "}.hook_resid_pre"
        fast, t_fast = timed(patch_sweep, clean, cell, sites=sites, batch_size=args.batch_size)
        full, t_full = timed(patch_sweep, clean, cell, sites=sites, batch_size=args.batch_size, fast=False)
        diff = float(np.abs(fast.raw - full.raw).max())
        check_line = (
            f"Fast path check (cell corruption, layers {', '.join(map(str, check))}, {fast.raw.size} entries, "
            f"{fast.settings['forward_passes']} forward passes each): {t_fast:.1f} s with the fast path vs "
            f"{t_full:.1f} s with full forward passes ({t_full / t_fast:.1f}x); largest difference {diff:.1e}."
        )

    lines = list(HEAD)
    for name, r in results.items():
        lines += table(name, r)
    notes = []
    for name, r in results.items():
        e = r["exact"]
        top = e.top(1)[0]
        notes.append(
            f"`{name}`: clean {e.clean_metric:.4f}, corrupted {e.corrupt_metric:.4f}; resid_pre top-30 overlap "
            f"{r['ag30'].top_k_overlap:.2f}; largest exact effect at layer {top['layer']}, {top['role']} cell "
            f"({top['row']}, {top['col']}): raw {top['raw']:+.4f}, effect {top['effect']:+.2f}."
        )
    total = time.perf_counter() - t_start
    print("\n".join(lines))
    print("\n".join(notes))
    print(check_line)
    print(f"total {total:.0f} s")

    if args.update_docs:
        machine_line = f"{lscpu()}, torch {torch.__version__}, {torch.get_num_threads()} threads"
        text = (
            f"{START}\n## bench_patching: activation vs attribution patching (CPU, bundled model)\n\n"
            f"`bench/bench_patching.py`, {date.today().isoformat()}, {machine_line} (shared with other work "
            "while it ran, so treat the seconds as rough).\n\n"
            f"SmolLM2-135M (30 layers, 9 heads, d=576, float32) on `{args.tasks}` task `{task.id}`"
            + ("" if args.task else ", the bundled task with the shortest prompt")
            + f" ({len(clean)} tokens, {n_cells} cells in the train pairs and the test input, "
            f"{len(clean.answer)} answer cells). Metric: log-probability of the correct colour, mean over the "
            f"answer cells; clean activations patched into the corrupted run, {args.batch_size} patched runs "
            "per forward pass, fast path on. Sweeps: `blocks.*.hook_resid_pre` x every cell of the train pairs "
            "and the test input, and layers x heads (one head's slice of `attn.hook_z` at every position). "
            f"Layers swept: {len(cell_layers)} of {n_layers} for the cell corruption, {len(colour_layers)} of "
            f"{n_layers} for the colour permutation (which makes nearly every entry run). *run*: entries not "
            "skipped as exactly zero (identical activations); agreement *(all)* counts the skipped zeros too, *(run)* "
            "only the entries run. Attribution: (clean - corrupt) . gradient at the corrupted run, one forward "
            "and backward pass per sweep.\n\n"
            + "\n".join(lines)
            + "\n\n"
            + "\n".join(f"- {n}" for n in notes)
            + (f"\n- {check_line}" if check_line else "")
            + f"\n- Whole benchmark: {total:.0f} s.\n\n{END}"
        )
        write_section(text, START, END)
        print("docs/benchmarks.md updated")


if __name__ == "__main__":
    main()
