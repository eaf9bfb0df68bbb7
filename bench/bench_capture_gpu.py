"""GPU capture benchmark: a Qwen2-0.5B-shaped model (random bf16 weights) over 16 x 2048-token batches.

Side by side in one run:
  forward (logits_to_keep=1)    the model alone, no capture
  forward (full logits)         a plain HF forward that also builds the [B, T, vocab] logits
  store write                   the store's sustained write rate for rows of this shape (writers=1 and N)
  capture -> store              three layers' residual streams at every position, streamed into a local store

It reports tokens/s, MFU (dense bf16 peak of the GPU) and GB/s written, and which bound limits capture:
min(forward rate, store write rate / bytes per token). Without CUDA it exits with a message (CI has no GPU);
``--tiny --device cpu`` runs a miniature of the same code path as a smoke test.

    python bench/bench_capture_gpu.py [--batches 8] [--writers 4] [--out /tmp/bench-store]
"""

from __future__ import annotations

import argparse
import datetime
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

from _doc import write_section

START, END = "<!-- bench_capture_gpu:start -->", "<!-- bench_capture_gpu:end -->"
PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12}  # dense bf16 FLOP/s (SXM)


def make_model(tiny: bool, device: str):
    """Qwen2-0.5B shape (24 layers, hidden 896, 14 heads, 2 KV heads) with random bf16 weights."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    if tiny:
        cfg = Qwen2Config(
            vocab_size=1024,
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=4,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=4096,
        )
    else:
        cfg = Qwen2Config(
            vocab_size=151936,
            hidden_size=896,
            intermediate_size=4864,
            num_hidden_layers=24,
            num_attention_heads=14,
            num_key_value_heads=2,
            max_position_embeddings=32768,
            tie_word_embeddings=True,
            rope_theta=1e6,
        )
    cfg._attn_implementation = "sdpa"
    torch.manual_seed(0)
    with torch.device(device):
        model = Qwen2ForCausalLM(cfg).to(torch.bfloat16)
    return model.eval()


def flops_per_token(cfg, seq: int) -> float:
    """Forward FLOPs per token: 2 x non-embedding params plus causal attention scores and values."""
    d, layers, inter = cfg.hidden_size, cfg.num_hidden_layers, cfg.intermediate_size
    kv = cfg.num_key_value_heads * (d // cfg.num_attention_heads)
    params = layers * (d * d * 2 + d * kv * 2 + 3 * d * inter)
    attn = layers * 2 * 2 * d * seq / 2  # QK^T and AV, half the positions on average (causal)
    return 2 * params + attn


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn, device: str, iters: int) -> float:
    """Seconds per call, after one warm-up call."""
    fn()
    sync(device)
    t = time.perf_counter()
    for _ in range(iters):
        fn()
    sync(device)
    return (time.perf_counter() - t) / iters


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batches", type=int, default=8)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq", type=int, default=2048)
    ap.add_argument("--layers", default="blocks.{5,11,17}.hook_resid_post")
    ap.add_argument("--writers", type=int, default=4)
    ap.add_argument("--out", default=None, help="store folder (default: a temp folder on local disk)")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--tiny", action="store_true", help="a miniature model (smoke test on CPU)")
    ap.add_argument("--no-doc", action="store_true")
    args = ap.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("no CUDA device: this benchmark needs a GPU (use --tiny --device cpu for a smoke test)")
        sys.exit(0)

    from arcscope.capture import resolve_hooks, run_prefill
    from arcscope.store import StoreWriter

    dev = args.device
    model = make_model(args.tiny, dev)
    cfg = model.config
    if args.tiny:
        args.seq, args.batch = min(args.seq, 256), min(args.batch, 4)
    gen = torch.Generator(device="cpu").manual_seed(0)
    ids = torch.randint(0, cfg.vocab_size, (args.batch, args.seq), generator=gen).to(dev)
    attn = torch.ones_like(ids)
    tokens = ids.numel()
    sites = resolve_hooks(model, args.layers)
    bytes_per_token = sum(s.d for s in sites) * 2

    with torch.inference_mode():
        t_fwd = timed(lambda: model(input_ids=ids, attention_mask=attn, logits_to_keep=1), dev, args.batches)
        t_full = timed(lambda: model(input_ids=ids, attention_mask=attn), dev, max(2, args.batches // 4))

    tmp_root = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="arcscope-gpu-bench-"))
    rows = {s.name: torch.randn(tokens, s.d, dtype=torch.bfloat16) for s in sites}
    index = {
        "task_id": ["t"] * tokens,
        "augmentation": ["id"] * tokens,
        "pair": torch.zeros(tokens, dtype=torch.int16).numpy(),
        "role": ["none"] * tokens,
        "row": torch.full((tokens,), -1, dtype=torch.int8).numpy(),
        "col": torch.full((tokens,), -1, dtype=torch.int8).numpy(),
        "token_id": ids.flatten().cpu().int().numpy(),
        "position": torch.arange(tokens).int().numpy(),
        "sample": torch.zeros(tokens, dtype=torch.int64).numpy(),
    }

    def write_rate(writers: int) -> float:
        url = tmp_root / f"write-{writers}"
        shutil.rmtree(url, ignore_errors=True)
        t = time.perf_counter()
        with StoreWriter(str(url), shard_rows=tokens, writers=writers) as w:
            for _ in range(args.batches):
                w.add(rows, index)
            w.commit({})
        return args.batches * tokens * bytes_per_token / (time.perf_counter() - t)

    wr = {n: write_rate(n) for n in sorted({1, args.writers})}

    def capture_run() -> float:
        url = tmp_root / "capture"
        shutil.rmtree(url, ignore_errors=True)
        sync(dev)
        t = time.perf_counter()
        with torch.inference_mode(), StoreWriter(str(url), shard_rows=tokens, writers=args.writers) as w:
            for _ in range(args.batches):
                res = run_prefill(model, ids, attn, sites)
                w.add(res.acts, index)
            w.commit({})
        return args.batches * tokens / (time.perf_counter() - t)

    capture_run()  # warm-up
    cap = capture_run()
    shutil.rmtree(tmp_root, ignore_errors=True) if not args.out else None

    fpt = flops_per_token(cfg, args.seq)
    name = torch.cuda.get_device_name() if dev.startswith("cuda") else "cpu"
    peak = next((v for k, v in PEAK_BF16.items() if k in name), None)
    fwd_rate, full_rate = tokens / t_fwd, tokens / t_full
    best_w = max(wr.values())
    bound = min(fwd_rate, best_w / bytes_per_token)
    which = "forward" if fwd_rate <= best_w / bytes_per_token else "store write"

    def mfu(rate: float) -> str:
        return f"{rate * fpt / peak:.0%}" if peak else "n/a"

    date = datetime.date.today().isoformat()
    lines = [
        "## Capture on GPU (Qwen2-0.5B shape, random bf16)",
        "",
        f"{date}, {name}, torch {torch.__version__}. `python bench/bench_capture_gpu.py"
        f"{' --tiny --device cpu' if args.tiny else ''}`; {args.batches} batches of {args.batch} x {args.seq} "
        f"tokens; hooks `{args.layers}` = {bytes_per_token:,} bytes/token.",
        "",
        "| path | tokens/s | MFU | GB/s written |",
        "| --- | ---: | ---: | ---: |",
        f"| forward, logits_to_keep=1 | {fwd_rate:,.0f} | {mfu(fwd_rate)} | |",
        f"| forward, full logits | {full_rate:,.0f} | {mfu(full_rate)} | |",
        *[
            f"| store write only, writers={n} | {r / bytes_per_token:,.0f} | | {r / 1e9:.2f} |"
            for n, r in wr.items()
        ],
        f"| capture -> store, writers={args.writers} | {cap:,.0f} | {mfu(cap)} | {cap * bytes_per_token / 1e9:.2f} |",
        "",
        f"Bound: min(forward, write rate / bytes per token) = {bound:,.0f} tokens/s ({which} limits); capture "
        f"reaches {cap / bound:.0%} of it (target >= 90%).",
    ]
    section = "\n".join(lines)
    print(section)
    if not args.no_doc and not args.tiny:
        write_section(f"{START}\n{section}\n{END}", START, END)


if __name__ == "__main__":
    main()
