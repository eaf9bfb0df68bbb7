"""Export records as JSONL, Parquet or a Hugging Face ``datasets`` folder with splits and a dataset card;
publish such a folder to the Hub.

The HF folder is what ``DatasetDict.save_to_disk`` writes (``datasets.load_from_disk`` and the ``hf:`` task
source read it), plus ``README.md``: a dataset card generated from the records (splits, fields, examples) and
from the reports of the steps that made them (what was filtered, deduplicated, enriched, split).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from arcscope.datasets.records import (
    DatasetError,
    OnError,
    Rec,
    RecordWriter,
    Skipped,
    _ParquetSink,
    dumps,
    infer_schema,
    read_records,
)
from arcscope.datasets.step_report import StepReport, config_dict, report_path
from arcscope.datasets.steps import _finish, make_config
from arcscope.errors import ArcscopeError
from arcscope.files import replace_dir
from arcscope.progress import ProgressFn, Ticker
from arcscope.tasks.sources import split_kind

CARD_NAME = "README.md"
SIDE_NAME = "arcscope.json"
"""Beside the HF folder's data: which columns hold JSON text, and the card's inputs."""


class PublishError(ArcscopeError):
    """A dataset folder cannot be pushed: no token, no network, the Hub refused it."""


@dataclass
class ExportConfig:
    """Settings of the export step."""

    format: str | None = None
    """'jsonl', 'parquet' or 'hf' (None: from the output spec: jsonl:, parquet:, hf: or the file name)."""
    split_field: str = "split"
    """Field naming each record's split (HF folders); records without it go to `default_split`."""
    default_split: str = "train"
    """Split of records that have no `split_field`."""
    name: str | None = None
    """Dataset name for the card (None: the output folder's name)."""
    description: str = ""
    """A paragraph for the card."""
    license: str | None = None
    """License id for the card's metadata (e.g. 'apache-2.0', 'cc-by-4.0')."""
    tags: list[str] = field(default_factory=lambda: ["arc", "arcscope"])
    """Tags for the card's metadata."""
    row_group_size: int = 1000
    """Records per Parquet row group (also how many records the column types are taken from)."""


def _resolve(out: str, fmt: str | None) -> tuple[str, Path]:
    kind, rest = split_kind(out)
    path = Path(rest).expanduser()
    if kind is None and out.startswith("hf:"):
        kind = "hf"
    if fmt is None:
        if kind is not None:
            fmt = kind
        else:
            name = path.name.lower()
            fmt = (
                "jsonl"
                if name.endswith((".jsonl", ".jsonl.gz"))
                else "parquet"
                if name.endswith(".parquet")
                else "hf"
            )
    if fmt not in ("jsonl", "parquet", "hf"):
        raise DatasetError(f"export: unknown format {fmt!r}; choose jsonl, parquet or hf")
    return fmt, path


def _field_types(rows: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    names: list[str] = []
    for r in rows:
        for k in r:
            if k not in names:
                names.append(k)
    out = []
    for n in names:
        vals = [r.get(n) for r in rows if r.get(n) is not None]
        kinds = sorted({type(v).__name__ for v in vals}) or ["null"]
        example = dumps(vals[0]) if vals else "null"
        if len(example) > 60:
            example = example[:57] + "..."
        out.append((n, " / ".join(kinds), example))
    return out


def lineage(source: str) -> list[StepReport]:
    """The reports of the steps that made ``source``, oldest first (followed through each report's input)."""
    chain: list[StepReport] = []
    seen: set[str] = set()
    cur = source
    while cur not in seen and len(chain) < 50:
        seen.add(cur)
        p = report_path(cur)
        if not p.is_file():
            break
        try:
            rep = StepReport.load(p)
        except (OSError, ValueError, TypeError):
            break
        chain.append(rep)
        cur = rep.input
    return list(reversed(chain))


def _summary(rep: StepReport) -> str:
    c = rep.config
    if rep.step == "filter":
        what = " and ".join(f"`{w}`" for w in c.get("where", []))
    elif rep.step == "dedupe":
        by = ", ".join(c["key"]) if c.get("key") else f"task content, symmetry {c.get('symmetry')}"
        what = f"by {by}; kept {'best ' + c['best'] if c.get('best') else 'first'}"
    elif rep.step == "split":
        what = (
            ", ".join(f"{k} {v:g}" for k, v in (c.get("fractions") or {}).items())
            + f" (seed {c.get('seed')})"
        )
    elif rep.step == "enrich":
        what = f"model `{c.get('model')}`, fields {c.get('fields')}; {rep.figures.get('ok', 0)} ok, {rep.figures.get('failed', 0)} failed"
    elif rep.step == "lengths":
        what = f"seq_len 99%: {rep.figures.get('seq_len', {}).get('99')}"
    else:
        what = ""
    return f"| {rep.step} | {what} | {rep.records_in:,} | {rep.records_out:,} | {rep.n_skipped:,} |"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("`", "'")


def dataset_card(
    name: str,
    splits: dict[str, int],
    fields_: list[tuple[str, str, str]],
    cfg: ExportConfig,
    steps: list[StepReport],
) -> str:
    """The README.md of an exported dataset: YAML metadata for the Hub, then splits, fields and provenance."""
    meta = ["---", f"pretty_name: {json.dumps(name)}"]
    if cfg.license:
        meta.append(f"license: {cfg.license}")
    if cfg.tags:
        meta.append("tags:")
        meta += [f"- {t}" for t in cfg.tags]
    meta += ["configs:", "- config_name: default", "  data_files:"]
    for s in splits:
        meta += [f"  - split: {s}", f"    path: data/{s}-*"]
    meta += ["dataset_info:", "  splits:"]
    for s, n in splits.items():
        meta += [f"  - name: {s}", f"    num_examples: {n}"]
    meta.append("---")
    total = sum(splits.values())
    lines = [*meta, "", f"# {name}", ""]
    if cfg.description:
        lines += [cfg.description.strip(), ""]
    lines += [f"{total:,} records, written by arcscope (`arcscope data export`).", "", "## Splits", ""]
    lines += (
        ["| split | records |", "| --- | ---: |"] + [f"| {s} | {n:,} |" for s, n in splits.items()] + [""]
    )
    lines += ["## Fields", "", "| field | type | example |", "| --- | --- | --- |"]
    lines += [f"| `{n}` | {t} | `{_cell(e)}` |" for n, t, e in fields_] + [""]
    if steps:
        lines += [
            "## How it was made",
            "",
            "| step | settings | in | out | skipped |",
            "| --- | --- | ---: | ---: | ---: |",
        ]
        lines += [_summary(r) for r in steps]
        lines += ["", f"Source: `{steps[0].input}`.", ""]
    lines += [
        "## Loading",
        "",
        "```python",
        "import datasets",
        f'ds = datasets.load_from_disk("{name}")  # this folder; or load_dataset("USER/{name}") once published',
        "```",
        "",
    ]
    return "\n".join(lines)


def _quiet_datasets():
    import datasets

    # arcscope draws its own progress; datasets' per-split bars would interleave with it.
    datasets.disable_progress_bars()
    return datasets


def _export_hf(src: str, path: Path, cfg: ExportConfig, recs, report: StepReport, ticker: Ticker) -> None:
    datasets = _quiet_datasets()

    path.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        head: list[Rec] = []
        it = iter(recs)
        for rec in it:
            head.append(rec)
            if len(head) >= cfg.row_group_size:
                break
        if not head:
            raise DatasetError(f"export: {src} has no records to export")
        schema, json_cols = infer_schema([r.data for r in head])
        sinks: dict[str, _ParquetSink] = {}
        counts: dict[str, int] = defaultdict(int)

        def put(rec: Rec) -> None:
            s = rec.data.get(cfg.split_field, cfg.default_split)
            if not isinstance(s, str) or not s.replace("-", "_").isidentifier():
                raise DatasetError(
                    f"{rec.where}: split name {s!r} in field '{cfg.split_field}' is not a plain name"
                )
            if s not in sinks:
                sinks[s] = _ParquetSink(work / f"{s}.parquet", cfg.row_group_size, schema, json_cols)
            sinks[s].write(rec.data, rec.where)
            counts[s] += 1
            report.records_out += 1
            ticker.tick()

        for rec in head:
            report.records_in += 1
            put(rec)
        for rec in it:
            report.records_in += 1
            put(rec)
        for s in sinks.values():
            s.close()
        order = sorted(
            counts,
            key=lambda s: (
                ["train", "validation", "test"].index(s) if s in ("train", "validation", "test") else 3,
                s,
            ),
        )
        dd = datasets.DatasetDict(
            {
                s: datasets.Dataset.from_parquet(str(work / f"{s}.parquet"), cache_dir=str(work / "cache"))
                for s in order
            }
        )
        if path.exists() and not (path / "dataset_dict.json").exists() and any(path.iterdir()):
            raise DatasetError(f"export: {path} exists and is not a dataset folder; refusing to replace it")
        with replace_dir(path) as staged:
            dd.save_to_disk(str(staged))
            name = cfg.name or path.name
            card = dataset_card(
                name, {s: counts[s] for s in order}, _field_types([r.data for r in head]), cfg, lineage(src)
            )
            (staged / CARD_NAME).write_text(card, encoding="utf-8")
            (staged / SIDE_NAME).write_text(
                json.dumps({"json_columns": json_cols, "name": name}, indent=2), encoding="utf-8"
            )
            del dd
        report.figures = {
            "splits": {s: counts[s] for s in order},
            "json_columns": json_cols,
            "card": str(path / CARD_NAME),
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)


def export(
    source: str | os.PathLike[str],
    out: str | os.PathLike[str],
    config: ExportConfig | dict[str, Any] | None = None,
    *,
    on_error: OnError = "raise",
    limit: int | None = None,
    progress: ProgressFn | None = None,
    **options: Any,
) -> StepReport:
    """Write records as JSONL, Parquet, or an HF ``datasets`` folder (one split per value of ``split_field``)."""
    cfg = make_config(ExportConfig, config, options)
    src, dst = os.fspath(source), os.fspath(out)
    fmt, path = _resolve(dst, cfg.format)
    report = StepReport("export", src, str(path), config_dict(cfg))
    skipped: Skipped = []
    ticker = Ticker(progress, "export")
    recs = read_records(src, on_error, skipped, limit=limit)
    if fmt == "hf":
        _export_hf(src, path, cfg, recs, report, ticker)
    else:
        counts: dict[str, int] = defaultdict(int)
        with RecordWriter(f"{fmt}:{path}", row_group_size=cfg.row_group_size) as w:
            for rec in recs:
                report.records_in += 1
                w.write(rec)
                report.records_out += 1
                s = rec.data.get(cfg.split_field)
                counts[s if isinstance(s, str) else "(none)"] += 1
                ticker.tick()
        report.figures = {"splits": dict(counts)}
    return _finish(report, skipped, ticker, str(path))


# ----------------------------------------------------------------------------------------------- publish


@dataclass
class PublishConfig:
    """Settings of the publish step."""

    repo: str = ""
    """Hub dataset repo id, 'user/name'."""
    private: bool = False
    """Create the repo as private."""
    token_env: str = "HF_TOKEN"
    """Environment variable holding the Hub token (else the token saved by `hf auth login`)."""
    endpoint: str | None = None
    """Hub URL (None: HF_ENDPOINT or https://huggingface.co)."""
    dry_run: bool = False
    """Show what would be pushed and stop; needs no token and no network."""
    message: str = "Upload dataset with arcscope"
    """Commit message."""

    def __post_init__(self) -> None:
        if not self.repo or self.repo.count("/") != 1 or any(not p for p in self.repo.split("/")):
            raise DatasetError(f"publish: repo must be 'user/name', got {self.repo!r}")


@dataclass
class PublishPlan:
    """What publish sends: the repo, the files (path in repo, bytes) and the rows per split."""

    repo: str
    endpoint: str
    private: bool
    files: list[tuple[str, int]]
    splits: dict[str, int]
    pushed: bool = False
    url: str | None = None

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            k: getattr(self, k) for k in ("repo", "endpoint", "private", "files", "splits", "pushed", "url")
        }


def _stage(folder: Path, staging: Path) -> dict[str, int]:
    datasets = _quiet_datasets()

    if not (folder / "dataset_dict.json").is_file():
        raise PublishError(
            f"publish: {folder} is not a dataset folder written by `arcscope data export` (no dataset_dict.json)"
        )
    dd = datasets.load_from_disk(str(folder))
    (staging / "data").mkdir(parents=True)
    splits = {}
    for s, ds in dd.items():
        ds.to_parquet(str(staging / "data" / f"{s}-00000-of-00001.parquet"))
        splits[s] = len(ds)
    card = folder / CARD_NAME
    if card.is_file():
        shutil.copy(card, staging / CARD_NAME)
    return splits


def publish(
    folder: str | os.PathLike[str],
    config: PublishConfig | dict[str, Any] | None = None,
    **options: Any,
) -> PublishPlan:
    """Push an exported dataset folder to the Hub as Parquet shards plus its card; ``dry_run`` only plans."""
    cfg = make_config(PublishConfig, config, options)
    path = Path(split_kind(os.fspath(folder))[1]).expanduser()
    if not path.is_dir():
        raise PublishError(f"publish: no such dataset folder: {path}")
    endpoint = (cfg.endpoint or os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")
    staging = Path(tempfile.mkdtemp(prefix=".publish-"))
    try:
        splits = _stage(path, staging)
        files = sorted(
            (str(p.relative_to(staging)), p.stat().st_size) for p in staging.rglob("*") if p.is_file()
        )
        plan = PublishPlan(cfg.repo, endpoint, cfg.private, files, splits)
        if cfg.dry_run:
            return plan
        token = os.environ.get(cfg.token_env) or None
        if token is None:
            try:
                from huggingface_hub import get_token

                token = get_token()
            except ImportError:
                token = None
        if not token:
            raise PublishError(
                f"publish: no Hugging Face token: set ${cfg.token_env} (or run `hf auth login`); "
                f"--dry-run shows what would be pushed without one"
            )

        def clean(text: str) -> str:
            return text.replace(token, "***") if token else text

        try:
            import huggingface_hub.constants as hc
            from huggingface_hub import HfApi
        except ImportError:
            raise PublishError(
                "publish needs the huggingface_hub package (pip install huggingface_hub)"
            ) from None
        if getattr(hc, "HF_HUB_OFFLINE", False):
            raise PublishError(
                "publish: the Hub is switched off here (HF_HUB_OFFLINE=1); unset it to publish"
            )
        api = HfApi(endpoint=endpoint, token=token)
        try:
            api.create_repo(cfg.repo, repo_type="dataset", private=cfg.private, exist_ok=True)
            info = api.upload_folder(
                folder_path=str(staging), repo_id=cfg.repo, repo_type="dataset", commit_message=cfg.message
            )
        except Exception as e:  # network and Hub errors come in many types; report them in one clear way
            raise PublishError(
                clean(
                    f"publish: could not push to {cfg.repo} at {endpoint}: {type(e).__name__}: {str(e)[:300]}. "
                    f"Check the network, the token in ${cfg.token_env} and the repo name; --dry-run works offline"
                )
            ) from None
        plan.pushed = True
        plan.url = str(getattr(info, "repo_url", None) or f"{endpoint}/datasets/{cfg.repo}")
        return plan
    finally:
        shutil.rmtree(staging, ignore_errors=True)


__all__ = [
    "ExportConfig",
    "PublishConfig",
    "PublishError",
    "PublishPlan",
    "dataset_card",
    "export",
    "lineage",
    "publish",
]
