"""Run a YAML list of steps end to end; each step's output is kept, so a re-run skips finished steps.

    input: arc1:training           # any task spec or JSONL / Parquet / HF folder of records
    workdir: runs/arc-small        # default: beside the YAML file, named after it
    on_error: skip                 # default for every step (raise | skip)
    steps:
      - filter: {where: "n_train >= 3 and max_side <= 20"}
      - dedupe: {symmetry: all, pair_order: true}
      - enrich: {base_url: "http://127.0.0.1:8000/v1", model: m, preset: difficulty, concurrency: 16}
      - split: {fractions: {train: 0.9, validation: 0.1}}
      - lengths: {tokenizer: bundled, multiple: 64}
      - export: {out: arc-small-dataset, name: arc-small}
      - publish: {repo: me/arc-small, dry_run: true}

A step writes ``NN-STEP.jsonl`` (records), ``NN-lengths.json``/``.png`` or its export folder in the workdir,
with ``NN-STEP.done.json`` once it has finished. The done file holds a fingerprint of the step's settings and
of everything before it; a re-run skips a step whose fingerprint matches and whose output is there, and runs
the rest. An interrupted step has no done file and runs again, after removing the temporary files it left;
enrich then takes what it already paid for from its cache (``workdir/enrich-cache.sqlite`` unless set), the
others are cheap to repeat.

Per step, ``on_error``, ``limit`` and ``out`` (where the output goes) may be set beside the step's settings.
``workdir`` and ``out`` are relative to the pipeline file's folder; ``input`` is a spec as on the command line
(relative to the current folder).
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from arcscope.datasets.records import DatasetError, dumps, remove_stale_temps
from arcscope.datasets.step_report import StepReport, report_path
from arcscope.files import atomic_write_json
from arcscope.progress import ProgressFn, relabel

RUN_KEYS = ("on_error", "limit", "out")


def _steps() -> dict[str, tuple[Callable[..., Any], type, str]]:
    from arcscope.datasets.hub import ExportConfig, PublishConfig, export, publish
    from arcscope.datasets.llm import EnrichConfig, enrich
    from arcscope.datasets.steps import DedupeConfig, FilterConfig, SplitConfig, dedupe, filter_records, split
    from arcscope.datasets.token_lengths import LengthsConfig, lengths

    return {
        "filter": (filter_records, FilterConfig, "records"),
        "dedupe": (dedupe, DedupeConfig, "records"),
        "split": (split, SplitConfig, "records"),
        "enrich": (enrich, EnrichConfig, "records"),
        "lengths": (lengths, LengthsConfig, "analysis"),
        "export": (export, ExportConfig, "export"),
        "publish": (publish, PublishConfig, "publish"),
    }


STEPS = ("filter", "dedupe", "split", "enrich", "lengths", "export", "publish")
"""Step names a pipeline may use."""


@dataclass
class PipelineStep:
    """One step of a pipeline file: its name, settings and run options."""

    name: str
    settings: dict[str, Any]
    on_error: str = "raise"
    limit: int | None = None
    out: str | None = None


@dataclass
class Pipeline:
    """A parsed pipeline file."""

    input: str
    workdir: Path
    steps: list[PipelineStep]
    source: str = "pipeline"


@dataclass
class StepOutcome:
    """What happened to one step in a run: 'ran' or 'skipped' (finished before), with its report."""

    index: int
    name: str
    status: str
    output: str | None
    report: dict[str, Any] = field(default_factory=dict)


def load_pipeline(path: str | os.PathLike[str]) -> Pipeline:
    """Read and check a pipeline YAML file; errors name the file, the step and the setting."""
    import yaml

    p = Path(path)
    label = str(p)
    try:
        doc = yaml.safe_load(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DatasetError(f"{label}: no such pipeline file") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise DatasetError(f"{label}{where}: not valid YAML ({getattr(e, 'problem', e)})") from None
    if not isinstance(doc, dict):
        raise DatasetError(f"{label}: a pipeline is a mapping with 'input' and 'steps'")
    unknown = sorted(set(doc) - {"input", "workdir", "on_error", "limit", "steps"})
    if unknown:
        raise DatasetError(
            f"{label}: unknown top-level key(s) {unknown}; allowed: input, workdir, on_error, limit, steps"
        )
    if not isinstance(doc.get("input"), str) or not doc["input"]:
        raise DatasetError(f"{label}: 'input' must name a task spec or a records file")
    raw_steps = doc.get("steps")
    if not isinstance(raw_steps, list) or not raw_steps:
        raise DatasetError(f"{label}: 'steps' must be a non-empty list")
    default_on_error = doc.get("on_error", "raise")
    steps: list[PipelineStep] = []
    registry = _steps()
    for i, item in enumerate(raw_steps, 1):
        where = f"{label} step {i}"
        if isinstance(item, str):
            name, settings = item, {}
        elif isinstance(item, dict) and len(item) == 1:
            name, settings = next(iter(item.items()))
            settings = settings or {}
        elif isinstance(item, dict) and "step" in item:
            name = item["step"]
            settings = {k: v for k, v in item.items() if k != "step"}
        else:
            raise DatasetError(f"{where}: write a step as '- NAME: {{settings}}'")
        if name not in registry:
            close = difflib.get_close_matches(str(name), STEPS, 1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise DatasetError(f"{where}: unknown step {name!r}{hint}; steps: {', '.join(STEPS)}")
        if not isinstance(settings, dict):
            raise DatasetError(f"{where} ({name}): settings must be a mapping, got {type(settings).__name__}")
        run = {k: settings.pop(k) for k in RUN_KEYS if k in settings}
        on_error = run.get("on_error", default_on_error)
        if on_error not in ("raise", "skip"):
            raise DatasetError(f"{where} ({name}): on_error must be 'raise' or 'skip', got {on_error!r}")
        _, cfg_cls, _ = registry[name]
        from arcscope.datasets.steps import make_config

        try:
            make_config(cfg_cls, settings, {})
        except DatasetError as e:
            raise DatasetError(f"{where} ({name}): {e}") from None
        except TypeError as e:
            raise DatasetError(f"{where} ({name}): {e}") from None
        out = run.get("out")
        if out is not None:
            kind, _, rest = (
                str(out).partition(":")
                if str(out).startswith(("jsonl:", "parquet:", "hf:"))
                else ("", "", str(out))
            )
            if not Path(rest).is_absolute():
                rest = str(p.parent / rest)  # like workdir, relative to the pipeline file
            out = f"{kind}:{rest}" if kind else rest
        steps.append(PipelineStep(name, settings, on_error, run.get("limit", doc.get("limit")), out))
    workdir = Path(doc["workdir"]) if doc.get("workdir") else p.with_name(p.stem + ".work")
    if not workdir.is_absolute():
        workdir = p.parent / workdir
    return Pipeline(doc["input"], workdir, steps, label)


def _input_fingerprint(spec: str) -> str:
    from arcscope.tasks.sources import split_kind

    _, rest = split_kind(spec)
    p = Path(rest.split("?")[0]).expanduser()
    parts = [spec]
    if p.is_file():
        st = p.stat()
        parts.append(f"{st.st_size}:{st.st_mtime_ns}")
    elif p.is_dir():
        for f in sorted(p.rglob("*")):
            if f.is_file():
                st = f.stat()
                parts.append(f"{f.relative_to(p)}:{st.st_size}:{st.st_mtime_ns}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def _write_json(path: Path, obj: Any) -> None:
    atomic_write_json(path, json.loads(dumps(obj)), indent=2, newline=True)


def run_pipeline(
    pipeline: Pipeline | str | os.PathLike[str],
    *,
    force: bool = False,
    progress: ProgressFn | None = None,
    log: Callable[[str], None] | None = None,
) -> list[StepOutcome]:
    """Run every step in order, skipping those finished with the same settings and input (unless ``force``)."""
    pl = pipeline if isinstance(pipeline, Pipeline) else load_pipeline(pipeline)
    registry = _steps()
    pl.workdir.mkdir(parents=True, exist_ok=True)
    current = pl.input
    fp = _input_fingerprint(pl.input)
    outcomes: list[StepOutcome] = []
    for i, st in enumerate(pl.steps, 1):
        fn, _, kind = registry[st.name]
        stem = f"{i:02d}-{st.name}"
        settings = dict(st.settings)
        if st.name == "enrich" and "cache" not in settings:
            settings["cache"] = str(pl.workdir / "enrich-cache.sqlite")
        if kind == "records":
            out = st.out or str(pl.workdir / f"{stem}.jsonl")
        elif kind == "analysis":
            out = st.out or str(pl.workdir / f"{stem}.json")
            settings.setdefault("json_out", out)
            settings.setdefault("png_out", str(Path(out).with_suffix(".png")))
        elif kind == "export":
            out = st.out or str(pl.workdir / stem)
        else:
            out = str(pl.workdir / f"{stem}.json")
        fp = hashlib.sha256(
            dumps(
                {
                    "prev": fp,
                    "step": st.name,
                    "settings": settings,
                    "on_error": st.on_error,
                    "limit": st.limit,
                    "out": out,
                }
            ).encode()
        ).hexdigest()
        done = pl.workdir / f"{stem}.done.json"
        out_path = Path(out.split(":", 1)[1] if out.startswith(("jsonl:", "parquet:", "hf:")) else out)
        if not force and done.is_file() and out_path.exists():
            try:
                prev = json.loads(done.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError):
                prev = {}
            if prev.get("fingerprint") == fp:
                if log:
                    log(f"step {i} {st.name}: finished before, skipped ({out})")
                outcomes.append(StepOutcome(i, st.name, "skipped", out, prev.get("report", {})))
                if kind == "records":
                    current = out
                continue
        done.unlink(missing_ok=True)
        # A step killed mid-write left hidden temporary siblings of its files; they go before it runs again.
        leftovers = [done, out_path, report_path(out)]
        leftovers += [Path(settings[k]) for k in ("json_out", "png_out") if settings.get(k)]
        for f in leftovers:
            remove_stale_temps(f)
        if log:
            log(f"step {i} {st.name}: running -> {out}")
        cb = relabel(progress, f"step {i} {st.name}")
        if kind == "publish":
            export_out = next((o.output for o in reversed(outcomes) if registry[o.name][2] == "export"), None)
            if export_out is None:
                raise DatasetError(f"{pl.source} step {i} (publish): needs an export step before it")
            plan = fn(export_out, settings)
            rep: dict[str, Any] = plan.to_json()
            _write_json(Path(out), rep)
        elif kind == "analysis":
            report: StepReport = fn(current, settings, on_error=st.on_error, limit=st.limit, progress=cb)
            rep = report.to_json()
        else:
            report = fn(current, out, settings, on_error=st.on_error, limit=st.limit, progress=cb)
            rep = report.to_json()
        _write_json(done, {"fingerprint": fp, "step": st.name, "output": out, "report": rep})
        outcomes.append(StepOutcome(i, st.name, "ran", out, rep))
        if kind == "records":
            current = out
    return outcomes


__all__ = ["STEPS", "Pipeline", "PipelineStep", "StepOutcome", "load_pipeline", "run_pipeline"]
