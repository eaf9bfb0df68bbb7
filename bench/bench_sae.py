"""SAE training throughput: arcscope vs SAELens on the same stored activations and config, in one run.

CPU (default): the bundled SmolLM2-135M's residual stream (``blocks.15.hook_resid_post``, d=576) over ARC
cells is captured once into a local store (cached under ``--work``). Then a TopK SAE (k=32, 16x expansion =
9216 latents, batch 4096, Adam, float32, AuxK on) trains for ``--tokens`` rows with arcscope (reading the
store through its own loader: shard checks, shuffle buffer, prefetch) and with SAELens 6
(``TopKTrainingSAE`` + ``SAETrainer``, fed batches from the store's own ``dataset()`` loader). The two
alternate for ``--repeats`` rounds; the best of each is reported with the ratio. SAELens is an optional
bench extra: ``pip install sae-lens``.

GPU (``--gpu``, when CUDA is present): a local store of d=896 bfloat16 rows (Qwen2-0.5B-shaped; random
rows, since throughput does not depend on their values), TopK k=32, 16x (14336 latents), bf16 autocast,
loader included: tokens/s and MFU against the bf16 dense peak given by ``--peak-tflops``.

    python bench/bench_sae.py [--tokens 262144] [--repeats 2] [--update-docs]
    python bench/bench_sae.py --gpu [--peak-tflops 989]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from datetime import date
from pathlib import Path

import torch

from _doc import DOC, cpu_model, write_section

ROOT = Path(__file__).resolve().parents[1]
HOOK = "blocks.15.hook_resid_post"
START, END = "<!-- bench_sae:start -->", "<!-- bench_sae:end -->"


def build_store(path: Path, rows: int) -> None:
    """Capture the bundled model's residual stream over ARC cells until the store holds ``rows`` rows."""
    from arcscope.engine import JobConfig, LocalRunner
    from arcscope.models import load_model
    from arcscope.store import open_store

    if (path / "manifest.json").exists():
        st = open_store(path)
        if st.complete and st.n_rows >= rows and HOOK in st.hooks:
            return
        shutil.rmtree(path)
    loaded = load_model(None, device="cpu", dtype="float32")
    for tasks in (96, 200, 400):
        job = JobConfig(
            tasks="arc1:evaluation",
            hooks=[HOOK],
            positions=["cells"],
            mode="prefill",
            max_tasks=tasks,
            out=str(path),
            shard_rows=16384,
            max_batch=4,
            batch_tokens=8192,
        ).validate()
        t0 = time.perf_counter()
        res = LocalRunner(job, loaded=loaded, resume=False, overwrite=True).run()
        print(
            f"  captured {res.rows:,} rows from {tasks} tasks in {time.perf_counter() - t0:.0f} s", flush=True
        )
        if res.rows >= rows:
            return


def run_arcscope(store: Path, out: Path, tokens: int, batch: int) -> float:
    from arcscope.sae import TrainConfig, train_sae

    cfg = TrainConfig(
        arch="topk",
        k=32,
        expansion=16,
        batch_size=batch,
        tokens=tokens,
        lr=2e-4,
        lr_warmup=0,
        lr_decay=0.0,
        checkpoint_every=0,
        shuffle_buffer=65536,
        init_rows=batch,
        log_every=1_000_000,
        device="cpu",
        dtype="float32",
    )
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    res = train_sae(cfg, out, store=str(store), hook=HOOK)
    seconds = time.perf_counter() - t0
    return res.steps * batch / seconds


def run_saelens(store: Path, tokens: int, batch: int) -> float:
    from sae_lens import TopKTrainingSAE, TopKTrainingSAEConfig
    from sae_lens.config import SAETrainerConfig
    from sae_lens.training.sae_trainer import SAETrainer

    from arcscope.store import open_store

    st = open_store(store)
    ds = st.dataset(HOOK, shuffle_buffer=65536, seed=0, batch_size=batch, drop_last=True)

    def provider():
        while True:
            for b in ds:
                yield b.float()

    t0 = time.perf_counter()
    cfg = TopKTrainingSAEConfig(d_in=576, d_sae=16 * 576, k=32, device="cpu", dtype="float32")
    sae = TopKTrainingSAE(cfg)
    tcfg = SAETrainerConfig(
        total_training_samples=tokens,
        train_batch_size_samples=batch,
        lr=2e-4,
        lr_end=2e-4,
        device="cpu",
        autocast=False,
        n_checkpoints=0,
        save_final_checkpoint=False,
    )
    trainer = SAETrainer(cfg=tcfg, sae=sae, data_provider=provider())
    import contextlib
    import io

    with contextlib.redirect_stderr(io.StringIO()):  # its tqdm bar
        trainer.fit()
    seconds = time.perf_counter() - t0
    return trainer.n_training_steps * batch / seconds


def cpu_bench(args) -> str:
    work = Path(args.work)
    store = work / "store"
    print(f"store: {store} (>= {args.rows:,} rows of {HOOK})", flush=True)
    build_store(store, args.rows)
    try:
        import sae_lens

        lens_version = sae_lens.__version__
    except ImportError:
        lens_version = None
        print("SAELens is not installed (pip install sae-lens): measuring arcscope alone", flush=True)
    ours, theirs = [], []
    for r in range(args.repeats):
        ours.append(run_arcscope(store, work / "sae", args.tokens, args.batch))
        print(f"  round {r + 1}: arcscope {ours[-1]:,.0f} tok/s", flush=True)
        if lens_version:
            theirs.append(run_saelens(store, args.tokens, args.batch))
            print(f"  round {r + 1}: SAELens  {theirs[-1]:,.0f} tok/s", flush=True)
    best_o = max(ours)
    lines = [
        f"| trainer | tokens/s (best of {args.repeats}) | ratio vs SAELens |",
        "| --- | ---: | ---: |",
        f"| arcscope (sparse backward, store loader) | {best_o:,.0f} | "
        + (f"{best_o / max(theirs):.2f}x |" if theirs else "- |"),
    ]
    if theirs:
        lines.append(
            f"| SAELens {lens_version} (TopKTrainingSAE + SAETrainer) | {max(theirs):,.0f} | 1.00x |"
        )
    rounds = ", ".join(
        f"{o:,.0f}" + (f" vs {t:,.0f}" if theirs else "") for o, t in zip(ours, theirs or ours, strict=True)
    )
    table = "\n".join(lines)
    print(table)
    table += (
        f"\n\nEvery round (arcscope{' vs SAELens' if theirs else ''}, tokens/s): {rounds}. arcscope's step keeps one "
        "dense matmul (the encoder); decoding and every gradient are sparse products over the k kept latents "
        "(`arcscope/sae/sparse.py`), where SAELens runs a dense decoder and dense backward matmuls. The GPU "
        "benchmark (`--gpu`: d=896, 16x, k=32, bf16, loader included, tokens/s and MFU) has not been run yet: "
        "the session that wrote it had no GPU.\n"
    )
    head = (
        f"`bench/bench_sae.py`, {date.today().isoformat()}, {cpu_model(fallback='unknown CPU')}, {os.cpu_count()} cores "
        f"(shared with other work while it ran, so treat figures as rough), torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads.\n\n"
        f"TopK SAE, k=32, 16x expansion (9216 latents) on SmolLM2-135M's `{HOOK}` (d=576) over ARC-AGI-1 "
        f"evaluation cells, {args.tokens:,} rows per run, batch {args.batch}, Adam lr 2e-4, float32, on the same "
        "local store. Each run includes setup and data loading (arcscope: sha256 shard checks, shuffle buffer, "
        "prefetch threads, input-scale/geometric-median init; SAELens: fed from the store's `dataset()` loader). "
        f"Runs alternate, {args.repeats} rounds.\n\n"
    )
    return head + table + "\n"


def gpu_bench(args) -> str:
    if not torch.cuda.is_available():
        print("no CUDA GPU here: the GPU benchmark is skipped")
        return ""
    from arcscope.sae import TrainConfig, train_sae
    from arcscope.store import StoreWriter

    d, k, S = 896, 32, 16 * 896
    work = Path(args.work) / "gpu"
    store = work / "store"
    if not (store / "manifest.json").exists():
        shutil.rmtree(store, ignore_errors=True)
        g = torch.Generator().manual_seed(0)
        with StoreWriter(store, shard_rows=65536, writers=4) as w:
            for _ in range(args.gpu_rows // 65536):
                x = (torch.randn(65536, d, generator=g) * 0.5).to(torch.bfloat16)
                import numpy as np

                z = np.zeros(65536, dtype=np.int64)
                idx = {c: z for c in ("pair", "row", "col", "token_id", "position", "sample")}
                idx.update(task_id=["t"] * 65536, augmentation=["id"] * 65536, role=["none"] * 65536)
                w.add({"resid": x}, idx)
    cfg = TrainConfig(
        arch="topk",
        k=k,
        expansion=16,
        batch_size=args.gpu_batch,
        tokens=args.gpu_tokens,
        lr_warmup=0,
        lr_decay=0.0,
        checkpoint_every=0,
        log_every=50,
        shuffle_buffer=262144,
        prefetch=8,
        verify=args.verify,
        device="cuda",
        dtype="auto",
    )
    out = work / "sae"
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    res = train_sae(cfg, out, store=str(store), hook="resid")
    torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    tps = res.steps * args.gpu_batch / seconds
    # FLOPs this trainer needs per row: the dense encoder matmul, and sparse work of order k*d
    flops = 2 * d * S + 12 * k * d
    mfu = tps * flops / (args.peak_tflops * 1e12)
    name = torch.cuda.get_device_name()
    table = (
        "| setting | tokens/s | MFU |\n| --- | ---: | ---: |\n"
        f"| d=896, 14336 latents, k=32, batch {args.gpu_batch}, bf16 autocast, verify={args.verify} | "
        f"{tps:,.0f} | {100 * mfu:.1f}% |"
    )
    print(table)
    return (
        f"\n### GPU: {name}\n\n`bench/bench_sae.py --gpu`, {date.today().isoformat()}, torch {torch.__version__}. "
        f"{args.gpu_tokens:,} rows end to end from a local bf16 store (random rows), MFU = rows/s x "
        f"(2·d·latents + 12·k·d) FLOPs / {args.peak_tflops} TFLOP/s.\n\n{table}\n"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--work", default=str(ROOT / "runs" / "bench-sae"), help="cache folder for stores and SAEs"
    )
    ap.add_argument("--rows", type=int, default=40000, help="rows in the CPU benchmark's store")
    ap.add_argument("--tokens", type=int, default=65536, help="rows trained per CPU run")
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--gpu", action="store_true", help="run the GPU benchmark instead")
    ap.add_argument("--gpu-rows", type=int, default=4 * 1048576)
    ap.add_argument("--gpu-tokens", type=int, default=16 * 1048576)
    ap.add_argument("--gpu-batch", type=int, default=8192)
    ap.add_argument("--verify", default="sha256", choices=["sha256", "size"])
    ap.add_argument("--peak-tflops", type=float, default=989.0, help="bf16 dense peak (H100 SXM: 989)")
    ap.add_argument("--update-docs", action="store_true", help="write the results into docs/benchmarks.md")
    args = ap.parse_args()
    section = gpu_bench(args) if args.gpu else cpu_bench(args)
    if args.update_docs and section:
        write_section(f"{START}\n## bench_sae: SAE training throughput\n\n{section}{END}", START, END)
        print(f"updated {DOC}")


if __name__ == "__main__":
    sys.exit(main())
