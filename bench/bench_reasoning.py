"""HRM / TRM and their datasets: builder throughput, training throughput, SDPA vs plain attention, and on a GPU
HRM at its default size on 9x9 Sudoku (bf16: examples/s, MFU, accuracy over a time budget).

Run:
    .venv/bin/python bench/bench_reasoning.py                       # CPU parts (about 3 minutes)
    .venv/bin/python bench/bench_reasoning.py --bundled-run DIR     # also summarise a sudoku-tiny training run
    .venv/bin/python bench/bench_reasoning.py --gpu --minutes 8     # GPU part (skips with a message without CUDA)
Prints tables and records them in docs/benchmarks.md between the bench_reasoning markers (other sections untouched).
Every comparison is measured side by side in one run and reported as a ratio.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import tempfile
import time
from datetime import date
from pathlib import Path

import torch
import torch.nn.functional as F

from _doc import machine, write_section
from arcscope.puzzles import build_arc, build_maze, build_sudoku, open_dataset
from arcscope.puzzles.maze import generate_maze
from arcscope.puzzles.sudoku import generate
from arcscope.reasoning.config import HRMConfig, TrainConfig, apply_overrides, preset
from arcscope.reasoning.layers import swiglu_width
from arcscope.tasks import load

START, END = "<!-- bench_reasoning:start -->", "<!-- bench_reasoning:end -->"
PEAK_BF16_TFLOPS = {"H100": 989.4, "H200": 989.4, "A100": 312.0, "L40S": 362.0, "A10G": 125.0}
"""Dense bf16 tensor-core peaks (TFLOP/s) from the vendors' data sheets, by GPU name fragment."""


# ------------------------------------------------------------------------------------------------ builders


def bench_builders(tmp: Path) -> list[dict]:
    """Puzzles per second of each builder, and ARC's build next to a plain load of the same tasks."""
    rows = []
    t = time.perf_counter()
    tasks = load("arc1:training")
    t_load = time.perf_counter() - t
    t = time.perf_counter()
    rep = build_arc(tmp / "arc", ["arc1:training"], [], num_aug=8, seed=0)
    t_arc = time.perf_counter() - t
    rows.append(
        {
            "what": f"ARC build, {len(tasks)} arc1 training tasks x (1 + 8 augmentations)",
            "items": rep.puzzles["train"],
            "seconds": t_arc,
            "rate": rep.puzzles["train"] / t_arc,
            "note": f"{t_arc / t_load:.1f}x the plain load of the tasks ({t_load:.2f} s); {rep.examples['train']} examples",
        }
    )
    for n, count in ((4, 400), (6, 200), (9, 50)):
        t = time.perf_counter()
        for s in range(count):
            generate(n, seed=s)
        dt = time.perf_counter() - t
        rows.append(
            {
                "what": f"Sudoku {n}x{n} generator (default givens, unique)",
                "items": count,
                "seconds": dt,
                "rate": count / dt,
                "note": "",
            }
        )
    t = time.perf_counter()
    for s in range(100):
        generate_maze(30, seed=s)
    dt = time.perf_counter() - t
    rows.append(
        {
            "what": "Maze 30x30 generator (unique shortest path >= 60)",
            "items": 100,
            "seconds": dt,
            "rate": 100 / dt,
            "note": "",
        }
    )
    t = time.perf_counter()
    build_sudoku(tmp / "s9", n=9, train=100, test=10, num_aug=9, seed=0)
    dt = time.perf_counter() - t
    rows.append(
        {
            "what": "Sudoku 9x9 dataset, 100 puzzles x (1 + 9 augmentations)",
            "items": 1010,
            "seconds": dt,
            "rate": 1010 / dt,
            "note": "",
        }
    )
    t = time.perf_counter()
    build_maze(tmp / "m", size=30, train=100, test=10, aug=True, seed=0)
    dt = time.perf_counter() - t
    rows.append(
        {
            "what": "Maze 30x30 dataset, 100 mazes x 8 dihedral",
            "items": 810,
            "seconds": dt,
            "rate": 810 / dt,
            "note": "",
        }
    )
    return rows


# ------------------------------------------------------------------------------------------------ training


def small(arch: str) -> TrainConfig:
    """A small CPU config of ``arch`` (hidden 128, 2+2 layers) for throughput comparisons."""
    base = preset(arch)
    ov = [
        "arch.hidden_size=128",
        "arch.num_heads=4",
        "arch.expansion=2",
        "arch.halt_max_steps=4",
        "arch.forward_dtype=float32",
    ]
    ov += (
        ["arch.H_layers=2", "arch.L_layers=2"]
        if arch == "hrm"
        else ["arch.L_layers=2", "arch.H_cycles=2", "arch.L_cycles=3"]
    )
    return apply_overrides(base, ov)


def bench_train(tmp: Path, steps: int = 30) -> list[dict]:
    """Training examples/s of small HRM and TRM on 9x9 Sudoku, side by side, one thread each."""
    from arcscope.reasoning.train import train

    data = tmp / "s9"
    rows = []
    for arch in ("hrm", "trm"):
        cfg = apply_overrides(
            small(arch),
            [
                f"data_path={data}",
                f"checkpoint_path={tmp / arch}",
                f"max_steps={steps}",
                "global_batch_size=32",
                "eval_interval=null",
                "eval_max_batches=1",
                "threads=1",
                "tensorboard=false",
                "log_every=1000",
            ],
        )
        res = train(cfg)
        n_params = sum(p.numel() for p in res.model.parameters())
        rows.append(
            {
                "arch": arch,
                "params": n_params,
                "steps": steps,
                "seconds": res.seconds,
                "examples_per_s": res.examples_per_second,
            }
        )
    return rows


def naive_attention(q, k, v, is_causal=False, enable_gqa=False):
    """The original's non-flash fallback: explicit scores, softmax and weighted sum."""
    scores = (q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5
    return torch.softmax(scores, dim=-1) @ v


def bench_attention(repeat: int = 5) -> dict:
    """Forward + backward of HRM blocks with SDPA vs plain attention (same weights, same inputs)."""
    from arcscope.reasoning.checkpoint import build_model
    from arcscope.reasoning.losses import ACTLossHead

    torch.set_num_threads(1)
    cfg = HRMConfig(
        hidden_size=128,
        num_heads=4,
        H_layers=2,
        L_layers=2,
        seq_len=900,
        vocab_size=12,
        batch_size=8,
        forward_dtype="float32",
        puzzle_emb_ndim=0,
    )
    head = ACTLossHead(build_model(cfg))
    head.train()
    g = torch.Generator().manual_seed(0)
    b = {
        "inputs": torch.randint(0, 12, (8, 900), generator=g),
        "labels": torch.randint(0, 12, (8, 900), generator=g),
        "puzzle_identifiers": torch.zeros(8, dtype=torch.int32),
    }

    def step() -> float:
        t = time.perf_counter()
        carry = head.initial_carry(b)
        _, loss, *_ = head(carry, b)
        loss.backward()
        return time.perf_counter() - t

    out = {}
    orig = F.scaled_dot_product_attention
    for name in ("sdpa", "plain", "sdpa", "plain"):
        F.scaled_dot_product_attention = orig if name == "sdpa" else naive_attention  # type: ignore[assignment]
        try:
            times = [step() for _ in range(repeat)]
        finally:
            F.scaled_dot_product_attention = orig  # type: ignore[assignment]
        out[name] = min(out.get(name, math.inf), min(times))
    return {"seq_len": 900, "batch": 8, **out, "ratio": out["plain"] / out["sdpa"]}


def summarize_run(run: Path) -> dict:
    """Time to each evaluation, accuracy and halting of a training run folder (metrics.jsonl + config)."""
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    cfg = json.loads((run / "config.json").read_text())
    evals = [x for x in lines if "eval/accuracy" in x]
    trains = [x for x in lines if "train/examples_per_s" in x]
    batch = cfg["train"]["global_batch_size"]
    for e in evals:
        if "elapsed_s" not in e:
            # Older logs: the running examples/s of the next train line gives the wall time since the start.
            nxt = next((t for t in trains if t["step"] >= e["step"]), trains[-1])
            e["elapsed_s"] = nxt["step"] * batch / nxt["train/examples_per_s"]
        e["minutes"] = e["elapsed_s"] / 60
    return {
        "run": str(run),
        "arch": cfg["arch"],
        "train": cfg["train"],
        "evals": evals,
        "examples_per_s": trains[-1]["train/examples_per_s"] if trains else None,
    }


# ------------------------------------------------------------------------------------------------ GPU


def hrm_step_flops(cfg: HRMConfig, batch: int) -> float:
    """Matmul FLOPs of one HRM training step: every block pass forward, the last L and H pass backward (2x),
    and HRM's second inner forward for the Q target."""
    d, inter = cfg.hidden_size, swiglu_width(cfg.hidden_size, cfg.expansion)
    s = cfg.seq_len + cfg.puzzle_emb_positions
    per_token_block = 2 * (4 * d * d + 3 * d * inter) + 4 * s * d
    fwd_passes = cfg.H_cycles * cfg.L_cycles * cfg.L_layers + cfg.H_cycles * cfg.H_layers
    bwd_passes = cfg.L_layers + cfg.H_layers
    heads = 2 * d * cfg.vocab_size
    per_token = (2 * fwd_passes + 2 * bwd_passes) * per_token_block + 3 * heads
    return per_token * s * batch


def bench_gpu(tmp: Path, minutes: float, batch: int) -> dict | None:
    """HRM at its default size (hidden 512, 4+4 layers) on generated 9x9 Sudoku in bf16 for a time budget."""
    if not torch.cuda.is_available():
        print("no CUDA GPU here: the GPU part is skipped")
        return None
    from arcscope.reasoning.train import train

    data = tmp / "sudoku9"
    t = time.perf_counter()
    build_sudoku(data, n=9, train=1000, test=500, num_aug=100, givens=24, seed=0)
    t_build = time.perf_counter() - t
    cfg = apply_overrides(
        preset("hrm"),
        [
            f"data_path={data}",
            f"checkpoint_path={tmp / 'hrm9'}",
            f"global_batch_size={batch}",
            "lr=7e-5",
            "puzzle_emb_lr=7e-5",
            "weight_decay=1.0",
            "puzzle_emb_weight_decay=1.0",
            "lr_warmup_steps=500",
            "eval_interval=null",
            "eval_max_batches=2",
            "log_every=50",
            "arch.forward_dtype=bfloat16",
            "compile=true",
            "tensorboard=false",
        ],
    )
    name = torch.cuda.get_device_name()
    peak = next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)
    deadline = time.perf_counter() + minutes * 60
    curve = []
    # Probe the step rate with a short run, then size max_steps to the budget; evaluate at 8 points.
    probe = train(apply_overrides(cfg, ["max_steps=60", f"checkpoint_path={tmp / 'probe'}"]))
    step_s = probe.seconds / 60
    budget_steps = max(100, int((deadline - time.perf_counter()) / step_s * 0.8))
    steps_per_epoch = open_dataset(data)["train"].metadata.total_groups / batch
    cfg = apply_overrides(
        cfg, [f"max_steps={budget_steps}", f"eval_interval={budget_steps / 8 / steps_per_epoch:.6f}"]
    )
    t0 = time.perf_counter()
    res = train(cfg, on_eval=lambda r: curve.append({"minutes": (time.perf_counter() - t0) / 60, **r}))
    flops = hrm_step_flops(res.model.config, batch) * res.steps / res.seconds
    return {
        "gpu": name,
        "params": sum(p.numel() for p in res.model.parameters()),
        "batch": batch,
        "steps": res.steps,
        "seconds": res.seconds,
        "examples_per_s": res.examples_per_second,
        "tflops": flops / 1e12,
        "mfu": flops / 1e12 / peak if peak else None,
        "build_seconds": t_build,
        "curve": curve,
    }


# ------------------------------------------------------------------------------------------------ report


def render(builders, training, attention, bundled, gpu) -> str:
    """The markdown section."""
    cuda = [torch.cuda.get_device_name()] if torch.cuda.is_available() else []
    host = machine(*cuda, f"Python {platform.python_version()}", f"torch {torch.__version__}")
    out = [START, "## bench_reasoning: HRM / TRM datasets, training and attention", ""]
    out.append(
        f"`bench/bench_reasoning.py`, {date.today().isoformat()}, {host}. The CPU is shared with other work, so treat CPU figures as rough; ratios are measured side by side in one run."
    )
    out.append("")
    if builders:
        out += [
            "### Dataset builders (HRM layout)",
            "",
            "| what | items | seconds | items/s | note |",
            "| --- | ---: | ---: | ---: | --- |",
        ]
        out += [
            f"| {r['what']} | {r['items']:,} | {r['seconds']:.2f} | {r['rate']:,.0f} | {r['note']} |"
            for r in builders
        ]
        out.append("")
    if training:
        out += [
            "### Training throughput on CPU (9x9 Sudoku, batch 32, one thread, float32)",
            "",
            "| model | parameters | steps | examples/s |",
            "| --- | ---: | ---: | ---: |",
        ]
        out += [
            f"| {r['arch']} (hidden 128, 2 layers per module) | {r['params']:,} | {r['steps']} | {r['examples_per_s']:.0f} |"
            for r in training
        ]
        if len(training) == 2:
            out.append("")
            out.append(
                f"TRM / HRM examples/s ratio: {training[1]['examples_per_s'] / training[0]['examples_per_s']:.2f} (TRM here runs 2 x (3 + 1) passes of its 2-block network per ACT step, HRM 2 x 2 L + 2 H passes of 2-block modules plus its Q-target forward)."
            )
        out.append("")
    if attention:
        out += ["### SDPA vs the original's plain-attention fallback (CPU)", ""]
        out.append(
            f"One HRM training step (hidden 128, 2+2 layers, batch {attention['batch']}, {attention['seq_len']} tokens, one thread), best of 10: SDPA {attention['sdpa'] * 1000:.0f} ms, plain attention {attention['plain'] * 1000:.0f} ms, ratio plain / SDPA = {attention['ratio']:.2f}."
        )
        out.append("")
    if bundled:
        a, tr = bundled["arch"], bundled["train"]
        out += ["### The bundled reasoning model (CPU training, generated 4x4 Sudoku)", ""]
        out.append(
            f"TRM, hidden {a['hidden_size']}, {a['L_layers']} layers, H_cycles {a['H_cycles']} x L_cycles {a['L_cycles']}, up to {a['halt_max_steps']} ACT steps, "
            f"no puzzle embedding, EMA {tr['ema_rate']}; batch {tr['global_batch_size']}, lr {tr['lr']}, {tr['epochs']} epochs of 3000 train puzzles; "
            f"held-out: 500 test puzzles never seen in training. One CPU thread, {bundled['examples_per_s']:.0f} examples/s at the end."
        )
        out += [
            "",
            "| step | epoch | minutes | test token acc | test exact acc | exact acc at the halting step | mean halting step |",
            "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for e in bundled["evals"]:
            out.append(
                f"| {e['step']} | {e['epoch']:.0f} | {e.get('minutes', float('nan')):.1f} | {e['eval/accuracy']:.4f} | {e['eval/exact_accuracy']:.4f} | "
                f"{e['eval/adaptive_exact_accuracy']:.4f} | {e['eval/steps']:.2f} |"
            )
        out.append("")
        out.append(
            "Reproduce: `arcscope puzzles build sudoku data/sudoku4 --size 4 --train 3000 --test 500 --seed 0` then `arcscope reasoning train --preset sudoku-tiny --data data/sudoku4 --out runs/trm-sudoku4`; evaluate with `arcscope reasoning eval bundled --data data/sudoku4`."
        )
        out.append("")
    out += ["### HRM at its default size on a GPU (9x9 Sudoku, bf16)", ""]
    if gpu:
        out.append(
            f"{gpu['gpu']}: {gpu['params']:,} parameters, global batch {gpu['batch']}, {gpu['steps']} steps in {gpu['seconds'] / 60:.1f} min: "
            f"{gpu['examples_per_s']:,.0f} examples/s, {gpu['tflops']:.1f} TFLOP/s executed"
            + (f", MFU {gpu['mfu'] * 100:.1f}% of the dense bf16 peak." if gpu["mfu"] else ".")
        )
        out += ["", "| minutes | step | test token acc | test exact acc |", "| ---: | ---: | ---: | ---: |"]
        out += [
            f"| {c['minutes']:.1f} | {c['step']} | {c['eval/accuracy']:.4f} | {c['eval/exact_accuracy']:.4f} |"
            for c in gpu["curve"]
        ]
    else:
        out.append(
            "Not measured: no GPU was available to this benchmark's runs. `bench/bench_reasoning.py --gpu --minutes 8` runs it (HRM hidden 512, 4+4 layers, about 27M parameters, generated 9x9 Sudoku with 24 givens, 1000 puzzles x 100 augmentations, bf16, torch.compile) and fills this table with examples/s, MFU and the accuracy curve."
        )
    out += ["", END]
    return "\n".join(out)


def main() -> None:
    """Run the parts asked for, print, record."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gpu", action="store_true", help="run the GPU part (skipped without CUDA)")
    ap.add_argument("--minutes", type=float, default=8.0, help="GPU training budget")
    ap.add_argument("--batch", type=int, default=384, help="GPU global batch size")
    ap.add_argument("--skip-cpu", action="store_true", help="only the GPU part / summaries")
    ap.add_argument(
        "--bundled-run", type=Path, default=None, help="a sudoku-tiny training run folder to summarise"
    )
    ap.add_argument("--no-record", action="store_true", help="print only")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        builders = training = attention = None
        if not args.skip_cpu:
            builders = bench_builders(tmp)
            for r in builders:
                print(f"{r['what']:<60} {r['rate']:>10,.0f}/s  {r['note']}")
            training = bench_train(tmp)
            for r in training:
                print(f"train {r['arch']}: {r['examples_per_s']:.0f} examples/s ({r['params']:,} params)")
            attention = bench_attention()
            print(
                f"attention: sdpa {attention['sdpa']:.3f}s plain {attention['plain']:.3f}s ratio {attention['ratio']:.2f}"
            )
        bundled = summarize_run(args.bundled_run) if args.bundled_run else None
        gpu = bench_gpu(tmp, args.minutes, args.batch) if args.gpu else None
        if gpu:
            print(json.dumps({k: v for k, v in gpu.items() if k != "curve"}, indent=1))
    section = render(builders, training, attention, bundled, gpu)
    print(section)
    if not args.no_record:
        write_section(section, START, END)


if __name__ == "__main__":
    main()
