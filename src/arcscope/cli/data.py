"""`arcscope data` commands: filter, dedupe, split, lengths, enrich, export, publish, pipeline."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from arcscope.cli.app import app, console, err_console, progress_bar
from arcscope.cli.options import OnError, OnErrorOpt, QuietOpt, config_options
from arcscope.datasets.hub import ExportConfig, PublishConfig
from arcscope.datasets.llm import EnrichConfig
from arcscope.datasets.steps import DedupeConfig, SplitConfig
from arcscope.datasets.token_lengths import LengthsConfig
from arcscope.datasets.tokens import PromptSpec
from arcscope.progress import relabel

IO_HELP = (
    "INPUT is any task spec (arc1:training, dir:PATH, kaggle:..., barc:...) or a JSONL / Parquet / HF datasets "
    "folder of records (jsonl:PATH, parquet:PATH, hf:FOLDER[:SPLIT]); OUTPUT is jsonl:PATH or parquet:PATH "
    "(or dir:/kaggle: for tasks). Each step writes OUTPUT.report.json beside its output."
)

data_app = typer.Typer(
    help="Dataset pipelines over ARC tasks and generic records: filter, dedupe, split, lengths, enrich, export, "
    "publish, pipeline.\n\n" + IO_HELP,
    no_args_is_help=True,
)
app.add_typer(data_app, name="data")


InArg = Annotated[str, typer.Argument(help="Input: a task spec or a JSONL / Parquet / HF folder of records.")]
OutArg = Annotated[
    str, typer.Argument(help="Output: jsonl:PATH or parquet:PATH (a name ending .jsonl/.parquet works).")
]
LimitOpt = Annotated[
    int | None, typer.Option("--limit", "-n", min=1, help="Read at most this many records (a trial run).")
]
TokenizerOpt = Annotated[
    str | None,
    typer.Option("--tokenizer", help="'bundled' (SmolLM2), a model or tokenizer folder, or a GGUF file."),
]
EncoderOpt = Annotated[
    str, typer.Option("--encoder", help="Grid encoder for task prompts (e.g. minimal, spaced).")
]
TemplateOpt = Annotated[
    str, typer.Option("--template", help="Prompt template for task records (default, short).")
]
ChatOpt = Annotated[
    bool | None,
    typer.Option("--chat/--no-chat", help="Use the tokenizer's chat template (default: when it has one)."),
]
AnswerOpt = Annotated[
    bool, typer.Option("--answer/--no-answer", help="Include the known test output in task prompts.")
]
FieldOpt = Annotated[
    str | None, typer.Option("--field", help="Generic records: the field holding the text or chat messages.")
]


def _run(label: str, quiet: bool, fn, *args: Any, **kwargs: Any):
    """Run a library step under a progress bar (records done and their rate) labelled ``label``."""
    with progress_bar(quiet) as bar:
        return fn(*args, progress=relabel(bar, label), **kwargs)


def _summary(report) -> None:
    out = f" -> {escape(str(report.output))}" if report.output else ""
    console.print(
        f"[bold]{report.step}[/]: {report.records_in:,} in, {report.records_out:,} out, "
        f"{report.n_skipped:,} skipped ({report.seconds:.2f} s){out}",
        highlight=False,
    )
    if report.skipped:
        err_console.print(f"[yellow]skipped {report.n_skipped} record(s):[/]")
        for where, reason in report.skipped[:20]:
            err_console.print(f"  {escape(where)}: {escape(reason)}", highlight=False, soft_wrap=True)
        if report.n_skipped > 20:
            err_console.print(f"  ... and {report.n_skipped - 20} more (all in the report JSON)")


def _prompt_spec(
    encoder: str, template: str, chat: bool | None, answer: bool, field: str | None
) -> PromptSpec:
    return PromptSpec(encoder=encoder, template=template, chat=chat, include_answer=answer, field=field)


@data_app.command("filter")
def filter_cmd(
    input: InArg,
    output: OutArg,
    where: Annotated[
        list[str],
        typer.Option(
            "--where",
            "-w",
            help="Expression over fields and task properties (repeat: all must hold), e.g. "
            "'reward > 0.85', 'n_train >= 3 and max_side <= 20', 'prompt_tokens < 4096'.",
        ),
    ],
    tokenizer: TokenizerOpt = None,
    encoder: EncoderOpt = PromptSpec.encoder,
    template: TemplateOpt = PromptSpec.template,
    chat: ChatOpt = None,
    answer: AnswerOpt = PromptSpec.include_answer,
    field: FieldOpt = None,
    on_error: OnErrorOpt = OnError.raise_,
    limit: LimitOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Keep the records for which every --where expression is true.

    Task properties: n_train, n_test, n_pairs, max_side, min_side, max_height, max_width, max_cells,
    total_cells, colours, n_colours, has_test_outputs, same_shape, content_hash, prompt_tokens (needs
    --tokenizer; 'bundled' is the offline SmolLM2 tokenizer).
    """
    from arcscope.datasets.steps import filter_records

    uses_tokens = any("prompt_tokens" in w for w in where)
    report = _run(
        "filter",
        quiet,
        filter_records,
        input,
        output,
        where=where,
        tokenizer=tokenizer or ("bundled" if uses_tokens else None),
        prompt=_prompt_spec(encoder, template, chat, answer, field),
        on_error=on_error.value,
        limit=limit,
    )
    _summary(report)


@data_app.command("dedupe")
@config_options(DedupeConfig, flags={"key": ("--key", "-k"), "symmetry": ("--symmetry", "-s")})
def dedupe_cmd(
    cfg: DedupeConfig,
    input: InArg,
    output: OutArg,
    on_error: OnErrorOpt = OnError.raise_,
    limit: LimitOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Keep one record per group of duplicates (exact, or up to symmetry for tasks) and report group sizes."""
    from arcscope.datasets.steps import dedupe

    report = _run(
        "dedupe",
        quiet,
        dedupe,
        input,
        output,
        cfg,
        on_error=on_error.value,
        limit=limit,
    )
    _summary(report)
    f = report.figures
    console.print(
        f"{f['groups']:,} groups, {f['duplicates_dropped']:,} duplicates dropped; group sizes: "
        + ", ".join(f"{k}: {v:,}" for k, v in f["group_sizes"].items()),
        highlight=False,
    )
    for g in f["largest_groups"][:5]:
        console.print(f"  {g['size']:,} x {escape(g['kept'])}", highlight=False)


@data_app.command("split")
@config_options(
    SplitConfig,
    flags={
        "fractions": ("--fractions", "-f"),
        "key": ("--key", "-k"),
        "symmetry": ("--symmetry", "-s"),
        "field": "--split-field",
    },
)
def split_cmd(
    cfg: SplitConfig,
    input: InArg,
    output: Annotated[
        str, typer.Argument(help="Output; put {split} in the name to write one file per split.")
    ],
    on_error: OnErrorOpt = OnError.raise_,
    limit: LimitOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Split deterministically by hash of a group key; duplicates and augmentations land on the same side."""
    from arcscope.datasets.steps import split

    report = _run(
        "split",
        quiet,
        split,
        input,
        output,
        cfg,
        on_error=on_error.value,
        limit=limit,
    )
    _summary(report)
    f = report.figures
    console.print(
        ", ".join(f"{k}: {v:,} ({f['fractions_actual'][k]:.1%})" for k, v in f["counts"].items()),
        highlight=False,
    )


@data_app.command("lengths")
@config_options(LengthsConfig, fields=("multiple", "batch_size"))
def lengths_cmd(
    cfg: LengthsConfig,
    input: InArg,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the figures here as JSON.")] = None,
    png_out: Annotated[Path | None, typer.Option("--png", help="Write a histogram PNG here.")] = None,
    tokenizer: TokenizerOpt = "bundled",
    encoder: EncoderOpt = PromptSpec.encoder,
    template: TemplateOpt = PromptSpec.template,
    chat: ChatOpt = None,
    answer: AnswerOpt = PromptSpec.include_answer,
    field: FieldOpt = None,
    on_error: OnErrorOpt = OnError.raise_,
    limit: LimitOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Token lengths of every prompt: buckets, percentiles, the seq_len covering 99/99.5/100%, counts over limits."""
    from arcscope.datasets.token_lengths import lengths

    report = _run(
        "lengths",
        quiet,
        lengths,
        input,
        tokenizer=tokenizer,
        prompt=_prompt_spec(encoder, template, chat, answer, field),
        multiple=cfg.multiple,
        batch_size=cfg.batch_size,
        json_out=str(json_out) if json_out else None,
        png_out=str(png_out) if png_out else None,
        on_error=on_error.value,
        limit=limit,
    )
    _summary(report)
    s = report.figures
    console.print(
        f"{s['n']:,} prompts, {s['tokens_total']:,} tokens, mean {s['mean']:,.1f}, min {s['min']:,}, max {s['max']:,}"
    )
    t = Table(title="distribution")
    for h in ("tokens", "prompts", "share"):
        t.add_column(h, justify="right")
    for b in s["buckets"]:
        rng = f"{b['lo']:,}-{b['hi'] - 1:,}" if b["hi"] is not None else f"{b['lo']:,}+"
        t.add_row(rng, f"{b['count']:,}", f"{b['share']:.1%}")
    console.print(t)
    p = Table(title="percentiles")
    p.add_column("percentile", justify="right")
    p.add_column("tokens", justify="right")
    for k, v in s["percentiles"].items():
        p.add_row(f"{k}%", f"{v:,}")
    console.print(p)
    console.print("seq_len covering " + ", ".join(f"{k}%: {v:,}" for k, v in s["seq_len"].items()))
    console.print("longer than " + ", ".join(f"{k}: {v:,}" for k, v in s["over_limits"].items()))
    if json_out or png_out:
        console.print("wrote " + ", ".join(str(x) for x in (json_out, png_out) if x))


# The enrich settings with an option of their own (prompt, fields and choices are assembled below).
_ENRICH_OPTIONS = ("base_url", "api_key_env", "preset", "system", "answer", "concurrency", "max_retries")
_ENRICH_OPTIONS += ("parse_retries", "backoff", "max_backoff", "timeout", "temperature", "max_tokens")
_ENRICH_OPTIONS += ("cache", "encoder", "seed")


@data_app.command("enrich")
@config_options(
    EnrichConfig, fields=_ENRICH_OPTIONS, flags={"concurrency": ("--concurrency", "-c")}, build=False
)
def enrich_cmd(
    cfg: dict,
    input: InArg,
    output: OutArg,
    model: Annotated[str, typer.Option("--model", "-m", help="Model name sent to the endpoint.")],
    prompt: Annotated[
        str | None,
        typer.Option("--prompt", help="User message template: {field}, {a.b}, {record}, {task}, {item}."),
    ] = None,
    prompt_file: Annotated[
        Path | None, typer.Option("--prompt-file", help="Read the template from a file.")
    ] = None,
    fields: Annotated[
        str | None,
        typer.Option("--fields", help="Answer fields to add, comma-separated (from the reply's JSON)."),
    ] = None,
    choice: Annotated[
        list[str] | None,
        typer.Option("--choice", help="Allowed values of a field: FIELD=a,b,c (repeatable)."),
    ] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Do not read or write the cache.")] = False,
    on_error: OnErrorOpt = OnError.raise_,
    limit: LimitOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Ask an LLM about each record through an OpenAI-compatible endpoint and add the parsed answer as fields.

    The key is read from the environment variable --api-key-env names; it never appears in output, logs or errors.
    Replies are cached (endpoint + model + request + record hash), so a re-run resumes without paying twice.
    A run in which every record failed exits with status 2 and says how many failed.
    """
    from arcscope.datasets.llm import enrich
    from arcscope.datasets.records import DatasetError

    if prompt_file is not None:
        try:
            prompt = prompt_file.read_text(encoding="utf-8")
        except OSError as e:
            raise DatasetError(f"--prompt-file {prompt_file}: {e.strerror}") from None
    choices: dict[str, list[str]] = {}
    for c in choice or []:
        name, sep, values = c.partition("=")
        if not sep or not name:
            raise DatasetError(f"--choice {c!r}: write FIELD=value1,value2")
        choices[name.strip()] = [v.strip() for v in values.split(",") if v.strip()]
    report = _run(
        "enrich",
        quiet,
        enrich,
        input,
        output,
        {**cfg, "model": model, "fields": fields or [], "choices": choices},
        **({"prompt": prompt} if prompt is not None else {}),
        **({"cache": None} if no_cache else {}),
        on_error=on_error.value,
        limit=limit,
    )
    _summary(report)
    f = report.figures
    console.print(
        f"{f['ok']:,} ok, {f['failed']:,} failed; {f['requests']:,} requests ({f['retries']:,} retries, "
        f"{f['parse_retries']:,} parse retries), {f['cache_hits']:,} from cache; tokens: {f['prompt_tokens']:,} "
        f"prompt + {f['completion_tokens']:,} completion = {f['total_tokens']:,}",
        highlight=False,
    )


@data_app.command("export")
@config_options(ExportConfig)
def export_cmd(
    cfg: ExportConfig,
    input: InArg,
    output: Annotated[
        str,
        typer.Argument(help="hf:FOLDER (datasets folder with splits + card), jsonl:PATH or parquet:PATH."),
    ],
    on_error: OnErrorOpt = OnError.raise_,
    limit: LimitOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Write records as JSONL, Parquet, or a Hugging Face datasets folder with splits and a generated card."""
    from arcscope.datasets.hub import export

    report = _run(
        "export",
        quiet,
        export,
        input,
        output,
        cfg,
        on_error=on_error.value,
        limit=limit,
    )
    _summary(report)
    console.print(
        "splits: " + ", ".join(f"{k}: {v:,}" for k, v in report.figures["splits"].items()), highlight=False
    )


@data_app.command("publish")
@config_options(PublishConfig, exclude=("repo",), build=False)
def publish_cmd(
    cfg: dict,
    folder: Annotated[str, typer.Argument(help="A folder written by `arcscope data export hf:FOLDER`.")],
    repo: Annotated[str, typer.Argument(help="Hub dataset repo id, user/name.")],
) -> None:
    """Push an exported dataset folder to the Hugging Face Hub (Parquet per split + the dataset card)."""
    from arcscope.datasets.hub import publish

    plan = publish(folder, {**cfg, "repo": repo})
    head = "pushed" if plan.pushed else "would push"
    console.print(
        f"{head} {escape(plan.repo)} ({'private' if plan.private else 'public'}) to {escape(plan.endpoint)}:",
        highlight=False,
    )
    for path, size in plan.files:
        console.print(f"  {escape(path)}  {size:,} bytes", highlight=False)
    console.print("splits: " + ", ".join(f"{k}: {v:,}" for k, v in plan.splits.items()), highlight=False)
    if plan.url:
        console.print(f"at {escape(plan.url)}")


@data_app.command("pipeline")
def pipeline_cmd(
    file: Annotated[
        Path, typer.Argument(help="Pipeline YAML: input, workdir, steps (see `arcscope.datasets.pipeline`).")
    ],
    force: Annotated[
        bool, typer.Option("--force", help="Run every step again, even those finished before.")
    ] = False,
    quiet: QuietOpt = False,
) -> None:
    """Run a YAML list of steps end to end; finished steps are skipped on a re-run, an interrupted one resumes."""
    from arcscope.datasets.pipeline import run_pipeline

    start = time.perf_counter()
    with progress_bar(quiet) as bar:

        def log(msg: str) -> None:
            if not quiet:
                err_console.print(escape(msg), highlight=False)

        outcomes = run_pipeline(file, force=force, progress=bar, log=log)
    t = Table(title=f"{file} ({time.perf_counter() - start:.1f} s)")
    for h in ("#", "step", "status", "in", "out", "skipped", "output"):
        t.add_column(h, justify="right" if h in ("#", "in", "out", "skipped") else "left")
    for o in outcomes:
        r = o.report
        t.add_row(
            str(o.index),
            o.name,
            o.status,
            f"{r.get('records_in', ''):,}" if "records_in" in r else "",
            f"{r.get('records_out', ''):,}" if "records_out" in r else "",
            str(r.get("n_skipped", "")),
            escape(str(o.output or "")),
        )
    console.print(t)


__all__ = ["data_app"]
