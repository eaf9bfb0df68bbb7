"""Token lengths of every prompt: distribution, percentiles, the ``seq_len`` that covers a share, JSON + PNG.

Task records give one prompt per test pair (train pairs, test input and, by default, the known answer, as a
training sequence holds it), through an encoder, a template and the tokenizer's chat template. Generic records
give the text (or chat messages) of one field. Prompts are tokenized in batches by the fast tokenizer.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from arcscope.datasets.records import DatasetError, OnError, Skipped, read_records
from arcscope.datasets.step_report import StepReport, config_dict
from arcscope.datasets.steps import _chunks, _fail_or_skip, make_config
from arcscope.datasets.tokens import PromptSpec, load_tokenizer_spec, prompt_token_counts
from arcscope.files import atomic_path, atomic_write_json
from arcscope.progress import ProgressFn, Ticker

PERCENTILES = (50, 75, 90, 95, 99, 99.5, 99.9, 100)
COVERAGE = (99, 99.5, 100)
LIMITS = (512, 1024, 2048, 4096, 8192, 16384, 32768)
BUCKETS = (0, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768)


@dataclass
class LengthStats:
    """The length figures of a set of prompts."""

    n: int
    tokens_total: int
    mean: float
    min: int
    max: int
    percentiles: dict[str, int]
    """Percentile -> length (the smallest length with at least that share of prompts at or under it)."""
    seq_len: dict[str, int]
    """Coverage -> the seq_len that fits that share of prompts, rounded up to a multiple of `multiple`."""
    multiple: int
    buckets: list[dict[str, Any]]
    """Prompts per length bucket: {lo, hi, count, share} (hi None for the open last bucket)."""
    over_limits: dict[str, int]
    """Common context limit -> prompts longer than it."""

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)


def _key(p: float) -> str:
    return f"{p:g}"


def length_stats(lengths: Any, *, multiple: int = 1) -> LengthStats:
    """Percentiles, coverage seq_lens, buckets and over-limit counts of an array of token lengths."""
    a = np.asarray(lengths, dtype=np.int64)
    if a.size == 0:
        raise DatasetError("no prompts to measure: the input had no usable records")
    multiple = max(1, int(multiple))
    pct = {_key(p): int(np.percentile(a, p, method="inverted_cdf")) for p in PERCENTILES}
    seq = {_key(c): int(math.ceil(pct[_key(c)] / multiple) * multiple) for c in COVERAGE}
    buckets = []
    edges = [*BUCKETS, None]
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        count = int(((a >= lo) & (a < hi)).sum()) if hi is not None else int((a >= lo).sum())
        buckets.append({"lo": lo, "hi": hi, "count": count, "share": round(count / a.size, 6)})
    over = {str(lim): int((a > lim).sum()) for lim in LIMITS}
    return LengthStats(
        n=int(a.size),
        tokens_total=int(a.sum()),
        mean=round(float(a.mean()), 2),
        min=int(a.min()),
        max=int(a.max()),
        percentiles=pct,
        seq_len=seq,
        multiple=multiple,
        buckets=buckets,
        over_limits=over,
    )


def write_histogram(lengths: Any, stats: LengthStats, path: str | os.PathLike[str], title: str = "") -> Path:
    """A PNG histogram of the lengths with the 99%/99.5%/100% seq_len lines."""
    try:
        import matplotlib
    except ImportError:
        raise DatasetError(
            "the histogram PNG needs matplotlib (pip install matplotlib); the JSON is written"
        ) from None
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    a = np.asarray(lengths)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    bins = min(80, max(10, int(np.sqrt(a.size))))
    ax.hist(a, bins=bins, color="#4c72b0", edgecolor="white", linewidth=0.3)
    for cov, colour in zip(COVERAGE, ("#dd8452", "#c44e52", "#55a868"), strict=True):
        x = stats.percentiles[_key(cov)]
        ax.axvline(x, color=colour, linestyle="--", linewidth=1.2, label=f"{cov:g}%: {x:,} tokens")
    ax.set_xlabel("tokens per prompt")
    ax.set_ylabel("prompts")
    ax.set_title(title or f"{stats.n:,} prompts, median {stats.percentiles['50']:,} tokens")
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        # Fixed metadata: the same lengths give the same bytes.
        fig.savefig(tmp, format="png", metadata={"Software": None})
    plt.close(fig)
    return path


@dataclass
class LengthsConfig:
    """Settings of the lengths step."""

    tokenizer: Any = "bundled"
    """'bundled' (SmolLM2), a model / tokenizer folder, a GGUF file, or a tokenizer object."""
    prompt: PromptSpec = field(default_factory=PromptSpec)
    """How a record becomes text (encoder, template, chat, answer; or a field of generic records)."""
    batch_size: int = 256
    """Records tokenized per call."""
    multiple: int = 1
    """Round the suggested seq_len values up to a multiple of this."""
    json_out: str | None = None
    """Where to write the figures as JSON (None: not written)."""
    png_out: str | None = None
    """Where to write the histogram PNG (None: not written)."""

    def __post_init__(self) -> None:
        if isinstance(self.prompt, dict):
            self.prompt = PromptSpec(**self.prompt)
        if self.batch_size < 1:
            raise DatasetError(f"lengths: batch_size must be >= 1, got {self.batch_size}")


def lengths(
    source: str | os.PathLike[str],
    config: LengthsConfig | dict[str, Any] | None = None,
    *,
    on_error: OnError = "raise",
    limit: int | None = None,
    progress: ProgressFn | None = None,
    **options: Any,
) -> StepReport:
    """Tokenize every prompt of ``source``; ``figures`` holds the :class:`LengthStats` (written as JSON/PNG)."""
    cfg = make_config(LengthsConfig, config, options)
    tok = cfg.tokenizer
    if tok is None or isinstance(tok, (str, os.PathLike)):
        tok = load_tokenizer_spec(tok)
    src = os.fspath(source)
    cfg_d = config_dict(cfg)
    if not isinstance(cfg.tokenizer, (str, os.PathLike, type(None))):
        cfg_d["tokenizer"] = getattr(tok, "name_or_path", type(tok).__name__)
    report = StepReport("lengths", src, cfg.json_out, cfg_d)
    skipped: Skipped = []
    ticker = Ticker(progress, "lengths")
    out: list[int] = []
    for chunk in _chunks(read_records(src, on_error, skipped, limit=limit), cfg.batch_size):
        for counts in prompt_token_counts(chunk, tok, cfg.prompt):
            report.records_in += 1
            if isinstance(counts, Exception):
                _fail_or_skip(counts, on_error, skipped)  # type: ignore[arg-type]
                continue
            out.extend(counts)
            report.records_out += 1
        ticker.tick(len(chunk))
    arr = np.asarray(out, dtype=np.int64)
    stats = length_stats(arr, multiple=cfg.multiple)
    report.figures = stats.to_json()
    report.skipped = skipped
    report.n_skipped = len(skipped)
    report.seconds = round(ticker.done(), 3)
    if cfg.png_out:
        write_histogram(arr, stats, cfg.png_out, title=f"{src}: {stats.n:,} prompts")
        report.figures["png"] = str(cfg.png_out)
    if cfg.json_out:
        p = Path(cfg.json_out)
        p.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(p, report.to_json(), indent=2, default=str, newline=True)
    return report


__all__ = [
    "COVERAGE",
    "LIMITS",
    "PERCENTILES",
    "LengthStats",
    "LengthsConfig",
    "length_stats",
    "lengths",
    "write_histogram",
]
