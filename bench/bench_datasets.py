"""Dataset pipeline benchmarks: streaming steps on a 1,000,000-record JSONL, lengths, enrich concurrency.

1. filter, dedupe (exact) and split on generated JSONL files of 100,000 and 1,000,000 records, each run in its
   own process so its peak RSS is its own: records/s and peak RSS (memory must not follow the record count).
2. lengths over every bundled ARC-AGI-1 and -2 task with the bundled SmolLM2 tokenizer: prompts/s with
   batched tokenization vs one prompt per call, as a ratio.
3. enrich against the local OpenAI-compatible server with a fixed 50 ms latency: requests/s at concurrency
   1, 8 and 64.

    .venv/bin/python bench/bench_datasets.py [--records 1000000] [--no-write] [--skip-stream]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _doc import cpu_model, write_section

ROOT = Path(__file__).resolve().parent.parent
START, END = "<!-- bench_datasets:start -->", "<!-- bench_datasets:end -->"
NOTE_STREAM = "Memory: filter and split hold one record at a time (RSS +14 MB for 10x the records: buffers and the progress state); exact dedupe keeps a 64-bit key per record and sorts them, about 70 bytes a record at its peak, whatever the records' size. Rates are CPU-bound JSON parsing on 2 shared cores and vary with the other work on the machine between runs."
NOTE_LENGTHS = "On this 2-core machine the fast tokenizer's batch call gains almost nothing over one call per prompt: ARC prompts are long (1,750 tokens on average), so per-call overhead is small and there are no spare cores for the Rust tokenizer's parallel batch encoding; `lengths` batches anyway, so that machines with more cores can encode a batch in parallel (not measured here)."
NOTE_ENRICH = "Client threads and the test server share one Python process and 2 cores, so at concurrency 64 the GIL, not the 50 ms latency, sets the rate; the bound on requests in flight holds exactly."

STEP_CODE = """
import json, sys, time
from arcscope.datasets import filter_records, dedupe, split
step, src, out = sys.argv[1:4]
t0 = time.perf_counter()
if step == "filter":
    rep = filter_records(src, out, where="reward > 0.5 and len(text) > 40")
elif step == "dedupe":
    rep = dedupe(src, out)
else:
    rep = split(src, out, key="module_name", fractions="train=0.9,validation=0.1")
print(json.dumps({"in": rep.records_in, "out": rep.records_out, "seconds": time.perf_counter() - t0}))
"""


def generate(path: Path, n: int, seed: int = 0) -> None:
    """``n`` generic records; every 10th repeats an earlier record exactly (for exact dedupe)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    rewards = rng.random(n)
    modules = rng.integers(0, max(1, n // 4), n)
    with open(path, "w") as f:
        for i in range(n):
            j = int(rng.integers(0, i)) if i and i % 10 == 0 else i
            rec = {
                "id": j,
                "module_name": f"Module{modules[j]}",
                "reward": round(float(rewards[j]), 4),
                "text": f"class Module{modules[j]}(nn.Module): def forward(self, x): return x * {j % 97}",
            }
            f.write(json.dumps(rec) + "\n")


def run_step(step: str, src: Path, out: Path) -> dict:
    """One step in a fresh process; its own peak RSS from wait4."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.Popen(
        [sys.executable, "-c", STEP_CODE, step, str(src), str(out)], stdout=subprocess.PIPE, env=env
    )
    stdout = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{step} failed with exit code {proc.returncode}")
    res = json.loads(stdout)
    res["rss_mb"] = usage.ru_maxrss / 1024
    return res


def bench_stream(sizes: list[int], tmp: Path) -> list[dict]:
    """filter / dedupe / split at each size."""
    rows = []
    for n in sizes:
        src = tmp / f"r{n}.jsonl"
        t0 = time.perf_counter()
        generate(src, n)
        print(
            f"generated {n:,} records ({src.stat().st_size / 1e6:.0f} MB) in {time.perf_counter() - t0:.1f} s",
            flush=True,
        )
        for step in ("filter", "dedupe", "split"):
            r = run_step(step, src, tmp / f"{step}-{n}.jsonl")
            r.update(step=step, n=n, mb=src.stat().st_size / 1e6)
            print(
                f"  {step}: {r['in']:,} -> {r['out']:,} in {r['seconds']:.1f} s, peak RSS {r['rss_mb']:.0f} MB",
                flush=True,
            )
            rows.append(r)
        for p in tmp.glob(f"*-{n}.jsonl*"):
            p.unlink()
        src.unlink()
    return rows


def bench_lengths(tmp: Path) -> dict:
    """Batched vs one-at-a-time tokenization of every bundled ARC prompt."""
    from arcscope.datasets import lengths, load_tokenizer_spec, read_records
    from arcscope.datasets.records import RecordWriter

    src = tmp / "arc-all.jsonl"
    with RecordWriter(src) as w:
        for spec in ("arc1:training", "arc1:evaluation", "arc2:training", "arc2:evaluation"):
            for rec in read_records(spec):
                w.write(rec)
    tok = load_tokenizer_spec("bundled")
    out = {}
    for name, bs in (("batched (256 per call)", 256), ("one prompt per call", 1)):
        best = float("inf")
        for _ in range(2):
            t0 = time.perf_counter()
            rep = lengths(src, tokenizer=tok, batch_size=bs)
            best = min(best, time.perf_counter() - t0)
        out[name] = {"prompts": rep.figures["n"], "tokens": rep.figures["tokens_total"], "seconds": best}
        print(f"lengths {name}: {rep.figures['n']:,} prompts in {best:.2f} s", flush=True)
    # The tokenizer calls alone, on the same texts: what batching itself buys.
    from arcscope.datasets.tokens import PromptSpec, count_tokens, record_texts

    texts = [t for rec in read_records(src) for t in record_texts(rec, tok, PromptSpec())]
    for name, fn in (
        (
            "tokenize only, batched (256 per call)",
            lambda: [count_tokens(texts[i : i + 256], tok) for i in range(0, len(texts), 256)],
        ),
        ("tokenize only, one per call", lambda: [count_tokens([t], tok) for t in texts]),
    ):
        best = float("inf")
        for _ in range(3):
            t0 = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - t0)
        out[name] = {"prompts": len(texts), "seconds": best}
        print(f"{name}: {best:.2f} s", flush=True)
    return out


def bench_enrich(tmp: Path) -> list[dict]:
    """requests/s against the local server with a fixed 50 ms latency."""
    from arcscope.datasets import enrich
    from arcscope.datasets.testserver import ChatServer

    src = tmp / "q.jsonl"
    src.write_text("".join(json.dumps({"id": i, "text": f"sample {i}"}) + "\n" for i in range(1000)))
    rows = []
    with ChatServer(latency=0.05) as server:
        for conc, n in ((1, 60), (8, 400), (64, 1000)):
            before = server.requests
            t0 = time.perf_counter()
            rep = enrich(
                src,
                tmp / "e.jsonl",
                base_url=server.url,
                model="m",
                preset="difficulty",
                concurrency=conc,
                cache=None,
                limit=n,
            )
            secs = time.perf_counter() - t0
            assert rep.figures["ok"] == n and server.requests - before == n
            rows.append(
                {
                    "concurrency": conc,
                    "requests": n,
                    "seconds": secs,
                    "rps": n / secs,
                    "max_in_flight": server.max_in_flight,
                }
            )
            server.max_in_flight = 0
            print(f"enrich concurrency {conc}: {n / secs:,.1f} requests/s", flush=True)
    return rows


def section(stream: list[dict], lens: dict, enr: list[dict]) -> str:
    """The markdown section for docs/benchmarks.md."""
    import numpy as np

    lines = [
        "## bench_datasets: dataset pipelines",
        "",
        f"`bench/bench_datasets.py`, {dt.date.today()}, {cpu_model(fallback='unknown')}, {os.cpu_count()} cores (shared with other work "
        f"while it ran, so treat figures as rough), Python {platform.python_version()}, numpy {np.__version__}.",
        "",
    ]
    if stream:
        lines += [
            "### Streaming steps on generated JSONL",
            "",
            "Generic records (`id`, `module_name`, `reward`, `text`; ~150 bytes each, every 10th an exact repeat). "
            "Each step runs in a fresh process; peak RSS is that process's own (`wait4`), interpreter and imports "
            "included. filter: `reward > 0.5 and len(text) > 40`; dedupe: exact, whole-record hash, keep first "
            "(two passes; 9 bytes of numpy state per record, 17 with `best`, a few times that while sorting); split: by `module_name`, 90/10.",
            "",
            "| step | records | input MB | kept | seconds | records/s | peak RSS MB |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for r in stream:
            lines.append(
                f"| {r['step']} | {r['n']:,} | {r['mb']:.0f} | {r['out']:,} | {r['seconds']:.1f} | "
                f"{r['in'] / r['seconds']:,.0f} | {r['rss_mb']:.0f} |"
            )
        lines += ["", NOTE_STREAM, ""]
    if lens:
        b, o = lens["batched (256 per call)"], lens["one prompt per call"]
        tb, to = lens["tokenize only, batched (256 per call)"], lens["tokenize only, one per call"]
        lines += [
            "### lengths: every bundled ARC-AGI-1 and -2 task, bundled SmolLM2 tokenizer",
            "",
            f"{b['prompts']:,} prompts (one per test pair, answer included, chat template on), {b['tokens']:,} tokens. "
            "Whole step timed (reading, prompt building, tokenizing), best of 2.",
            "",
            "| what is timed | tokenization | seconds | prompts/s |",
            "| --- | --- | ---: | ---: |",
            f"| whole `lengths` step | batched (256 per call) | {b['seconds']:.2f} | {b['prompts'] / b['seconds']:,.0f} |",
            f"| whole `lengths` step | one prompt per call | {o['seconds']:.2f} | {o['prompts'] / o['seconds']:,.0f} |",
            f"| tokenizer calls only | batched (256 per call) | {tb['seconds']:.2f} | {tb['prompts'] / tb['seconds']:,.0f} |",
            f"| tokenizer calls only | one prompt per call | {to['seconds']:.2f} | {to['prompts'] / to['seconds']:,.0f} |",
            "",
            f"Batched / one at a time: **{o['seconds'] / b['seconds']:.2f}x** for the whole step, "
            f"**{to['seconds'] / tb['seconds']:.2f}x** for the tokenizer calls alone (the rest of the step is reading "
            "the tasks, building the prompts and applying the chat template, the same either way).",
            "",
            NOTE_LENGTHS,
            "",
        ]
    if enr:
        lines += [
            "### enrich against the local server (50 ms per reply)",
            "",
            "`arcscope.datasets.testserver.ChatServer` on 127.0.0.1 with a fixed 50 ms latency; difficulty preset, "
            "cache off. The ideal is concurrency / 0.05 s.",
            "",
            "| concurrency | requests | seconds | requests/s | ideal | server's max in flight |",
            "| ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for r in enr:
            lines.append(
                f"| {r['concurrency']} | {r['requests']} | {r['seconds']:.2f} | {r['rps']:,.1f} | "
                f"{r['concurrency'] / 0.05:,.0f} | {r['max_in_flight']} |"
            )
        lines += ["", NOTE_ENRICH, ""]
    return "\n".join(lines).rstrip("\n")


def main() -> None:
    """Measure, print, record."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=1_000_000, help="largest generated JSONL")
    ap.add_argument("--skip-stream", action="store_true", help="skip the streaming-step part")
    ap.add_argument("--no-write", action="store_true", help="print only, leave docs/benchmarks.md alone")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-datasets-") as d:
        tmp = Path(d)
        stream = (
            [] if args.skip_stream else bench_stream(sorted({max(1, args.records // 10), args.records}), tmp)
        )
        lens = bench_lengths(tmp)
        enr = bench_enrich(tmp)
    text = section(stream, lens, enr)
    print(text)
    if not args.no_write:
        write_section(f"{START}\n{text}\n{END}", START, END)


if __name__ == "__main__":
    main()
