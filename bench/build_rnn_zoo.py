"""Train and write the bundled arcscope.rnn zoo (src/arcscope/rnn/zoo/): every model in ``rnn.ZOO_SPEC``.

Each model is trained exactly as `arcscope rnn train --task TASK --hidden H --seq-len T --seeds 3
--steps 8192` does (its card's "command" field repeats that line). A rebuild gives the same cards and
metrics; the weights can differ in their last bits on another CPU (float reductions are not bit-identical
across instruction sets). Not a benchmark: it lives here because it is a maintainer's script, not library
code.

Run: .venv/bin/python bench/build_rnn_zoo.py [--out FOLDER] [--steps 8192] [--seeds 3] [--only-missing]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from arcscope import rnn


def build_zoo(folder: Path, *, steps: int, seeds: int, only_missing: bool) -> list[Path]:
    """Train every ZOO_SPEC model into ``folder`` (skipping complete ones with ``only_missing``)."""
    written = []
    for spec in rnn.ZOO_SPEC:
        path = folder / f"{rnn.zoo_name(spec.task, spec.hidden_size, spec.seq_len)}.safetensors"
        if only_missing and path.exists() and path.with_suffix(".json").exists():
            continue
        cfg = rnn.TrainConfig(
            task=spec.task, hidden_size=spec.hidden_size, seq_len=spec.seq_len, steps=steps, seeds=seeds
        )
        start = time.perf_counter()
        result = rnn.train(cfg)
        written.append(rnn.save(result.model, path, result.card))
        card = result.card
        print(
            f"{path.stem:24s} {card['metric']} {card[card['metric']]:.4f}  seed {card['seed']}  "
            f"{time.perf_counter() - start:.1f}s",
            flush=True,
        )
    return written


def main() -> None:
    """Parse the options and build the zoo."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--out", type=Path, default=rnn.ZOO_DIR, help="folder to write (default: the bundled zoo)"
    )
    ap.add_argument("--steps", type=int, default=8192, help="gradient steps per seed")
    ap.add_argument("--seeds", type=int, default=3, help="seeds tried per model; the best is kept")
    ap.add_argument("--only-missing", action="store_true", help="skip models whose files already exist")
    args = ap.parse_args()
    written = build_zoo(args.out, steps=args.steps, seeds=args.seeds, only_missing=args.only_missing)
    print(f"wrote {len(written)} model(s) to {args.out}")


if __name__ == "__main__":
    main()
