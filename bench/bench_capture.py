"""Capture throughput on CPU with the bundled model, side by side with a plain forward over the same batches.

Columns, all over the same length-bucketed batches of ARC-AGI-1 evaluation prompts (teacher-forced prefill):
  plain forward     model(input_ids, attention_mask, logits_to_keep=1): what the model costs anyway
  capture           run_prefill with the hooks, keeping the chosen positions, copied out of the hooks
  engine + store    the whole job (LocalRunner): capture, index rows, safetensors shards, manifest commits

Also: peak RSS of the engine on N and 4N tasks (tiny model, subprocesses) to show memory does not grow with
the number of tasks. Results go to docs/benchmarks.md between the bench_capture markers.

    python bench/bench_capture.py [--tasks 12] [--hooks 'blocks.{0,10,20,29}.hook_resid_post']
"""

from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import sys
import tempfile
import time

import torch

from _doc import machine, write_section

START, END = "<!-- bench_capture:start -->", "<!-- bench_capture:end -->"


def best_of(fn, repeat: int) -> float:
    """Best wall time of ``repeat`` runs."""
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def throughput(n_tasks: int, hooks: str, positions: str, repeat: int) -> dict:
    """Tokens/s of plain forward, capture, and the whole engine over the same batches."""
    from arcscope.capture import pad_items, resolve_hooks, run_prefill
    from arcscope.engine import JobConfig, LocalRunner
    from arcscope.models import load_model

    loaded = load_model(device="cpu", dtype="float32")
    with tempfile.TemporaryDirectory() as tmp:
        cfg = JobConfig(
            mode="prefill",
            hooks=hooks,
            positions=positions,
            max_tasks=n_tasks,
            max_batch=4,
            out=f"{tmp}/store",
        ).validate()
        runner = LocalRunner(cfg, loaded=loaded)
        _, _, plan = runner._load()
        sites = resolve_hooks(loaded.model, cfg.hooks)
        pad = loaded.tokenizer.pad_token_id
        batches = []
        for b in plan.batches:
            ids, attn, mask, _ = pad_items(b.items, pad, cfg.positions)
            pos = (attn.cumsum(-1) - 1).clamp(min=0)
            batches.append((ids, attn, pos, torch.as_tensor(mask)))
        tokens = sum(int(a.sum()) for _, a, _, _ in batches)
        rows = sum(int(m.sum()) for *_, m in batches)

        def plain():
            with torch.no_grad():
                for ids, attn, pos, _ in batches:
                    loaded.model(input_ids=ids, attention_mask=attn, position_ids=pos, logits_to_keep=1)

        def capture():
            with torch.no_grad():
                for ids, attn, _, mask in batches:
                    run_prefill(loaded.model, ids, attn, sites, position_mask=mask)

        n = 0

        def engine():
            nonlocal n
            n += 1
            c = JobConfig(**{**cfg.to_dict(), "out": f"{tmp}/engine{n}"}).validate()
            LocalRunner(c, loaded=loaded).run()

        plain()  # warm-up: first calls allocate and pick kernels
        # interleaved rounds, best of each: load from other processes hits all three alike
        t_plain, t_cap, t_eng = [], [], []
        for _ in range(repeat):
            t_plain.append(best_of(plain, 1))
            t_cap.append(best_of(capture, 1))
            t_eng.append(best_of(engine, 1))
        t_plain, t_cap, t_eng = min(t_plain), min(t_cap), min(t_eng)
        d = loaded.model.config.hidden_size
        return {
            "tasks": n_tasks,
            "items": len(plan.items),
            "batches": len(plan.batches),
            "padding": plan.padding_fraction,
            "tokens": tokens,
            "rows": rows,
            "hooks": len(sites),
            "mb_captured": rows * d * 4 * len(sites) / 1e6,
            "plain_tok_s": tokens / t_plain,
            "capture_tok_s": tokens / t_cap,
            "engine_tok_s": tokens / t_eng,
        }


RSS_CHILD = r"""
import json, resource, sys, tempfile
from arcscope.engine import JobConfig, LocalRunner
n, model = int(sys.argv[1]), sys.argv[2]
with tempfile.TemporaryDirectory() as tmp:
    cfg = JobConfig(model=model, mode="prefill", hooks="blocks.*.hook_resid_post", positions="all",
                    max_tasks=n, out=tmp + "/s", shard_rows=4096, max_batch=4).validate()
    res = LocalRunner(cfg).run()
print(json.dumps({"tasks": n, "rows": res.rows, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def peak_rss(counts: list[int]) -> list[dict]:
    """Peak RSS of whole engine runs (tiny 2-layer model, real tokenizer) over different task counts."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from arcscope.models import load_tokenizer

    out = []
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        cfg = LlamaConfig(
            vocab_size=49152,
            hidden_size=256,
            intermediate_size=512,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=8192,
        )
        LlamaForCausalLM(cfg).save_pretrained(tmp, safe_serialization=True)
        load_tokenizer().save_pretrained(tmp)
        for n in counts:
            p = subprocess.run(
                [sys.executable, "-c", RSS_CHILD, str(n), tmp], capture_output=True, text=True, check=True
            )
            out.append(json.loads(p.stdout.strip().splitlines()[-1]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", type=int, default=12)
    ap.add_argument("--hooks", default="blocks.{0,10,20,29}.hook_resid_post")
    ap.add_argument("--positions", default="all")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--rss", default="10,40")
    ap.add_argument("--no-doc", action="store_true")
    args = ap.parse_args()

    r = throughput(args.tasks, args.hooks, args.positions, args.repeat)
    rss = peak_rss([int(x) for x in args.rss.split(",")])
    date = datetime.date.today().isoformat()
    host = machine(f"torch {torch.__version__}", f"{torch.get_num_threads()} threads", fallback="unknown cpu")
    lines = [
        "## Capture throughput (CPU, bundled model)",
        "",
        f"{date}, {host}. `python bench/bench_capture.py` (best of {args.repeat}).",
        "",
        f"SmolLM2-135M-Instruct (float32), {r['tasks']} shortest ARC-AGI-1 evaluation tasks, teacher-forced "
        f"prefill, {r['items']} prompts in {r['batches']} length-bucketed batches (padding "
        f"{r['padding']:.1%}), {r['tokens']:,} tokens; hooks `{args.hooks}` ({r['hooks']}), positions "
        f"`{args.positions}`: {r['rows']:,} rows, {r['mb_captured']:.0f} MB of float32 activations.",
        "",
        "| path | tokens/s | vs plain forward |",
        "| --- | ---: | ---: |",
        f"| plain forward (`logits_to_keep=1`) | {r['plain_tok_s']:,.0f} | 1.00 |",
        f"| capture (`run_prefill`, rows copied out) | {r['capture_tok_s']:,.0f} | "
        f"{r['capture_tok_s'] / r['plain_tok_s']:.2f} |",
        f"| engine + store (index, shards, commits) | {r['engine_tok_s']:,.0f} | "
        f"{r['engine_tok_s'] / r['plain_tok_s']:.2f} |",
        "",
        "Peak RSS of whole engine runs (2-layer d=256 model with the real tokenizer, every layer's residual at "
        "every position, 4,096-row shards), by number of tasks:",
        "",
        "| tasks | rows stored | peak RSS (MB) |",
        "| ---: | ---: | ---: |",
        *[f"| {x['tasks']} | {x['rows']:,} | {x['peak_rss_mb']:.0f} |" for x in rss],
    ]
    section = "\n".join(lines)
    print(section)
    if not args.no_doc:
        write_section(f"{START}\n{section.rstrip()}\n{END}", START, END)


if __name__ == "__main__":
    main()
