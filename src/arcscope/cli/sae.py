"""`arcscope sae` commands: train, eval, dashboard, query, info, config."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from arcscope.cli.app import app, console, err_console, progress
from arcscope.cli.app import storage_options as _storage_options
from arcscope.sae.config import SAEError, TrainConfig, config_help, field_help

sae_app = typer.Typer(
    name="sae",
    help="Sparse autoencoders on captured activations: train, evaluate, explore latents on ARC grids.",
    no_args_is_help=True,
)
app.add_typer(sae_app, name="sae")

SaeArg = Annotated[
    Path, typer.Argument(help="SAE folder (cfg.json + sae_weights.safetensors; arcscope or SAELens).")
]
StoreOpt = Annotated[str, typer.Option("--store", help="Activation store folder or fsspec URL.")]
HookOpt = Annotated[
    str | None, typer.Option("--hook", help="Hook in the store (default: the SAE's own hook).")
]
OptsOpt = Annotated[
    str | None, typer.Option("--storage-options", help="fsspec storage options for the store, as JSON.")
]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")]


def _load(path: Path):
    from arcscope.sae import load_sae

    return load_sae(path)


@sae_app.command("train")
def train_cmd(
    overrides: Annotated[
        list[str] | None,
        typer.Argument(
            help="More settings as KEY=VALUE (see `arcscope sae config`), e.g. aux_coefficient=0.05."
        ),
    ] = None,
    store: Annotated[
        str | None, typer.Option("--store", help="Activation store folder or fsspec URL.")
    ] = None,
    hook: Annotated[
        str | None, typer.Option("--hook", help="Hook to train on (a TransformerLens-style name).")
    ] = None,
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Output folder for the SAE and checkpoints.")
    ] = Path("runs/sae"),
    arch: Annotated[str | None, typer.Option("--arch", help=field_help("arch"))] = None,
    k: Annotated[int | None, typer.Option("--k", help=field_help("k"))] = None,
    latents: Annotated[int | None, typer.Option("--latents", help=field_help("latents"))] = None,
    expansion: Annotated[int | None, typer.Option("--expansion", help=field_help("expansion"))] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", help=field_help("batch_size"))] = None,
    tokens: Annotated[int | None, typer.Option("--tokens", help=field_help("tokens"))] = None,
    epochs: Annotated[float | None, typer.Option("--epochs", help=field_help("epochs"))] = None,
    lr: Annotated[float | None, typer.Option("--lr", help=field_help("lr"))] = None,
    seed: Annotated[int | None, typer.Option("--seed", help=field_help("seed"))] = None,
    device: Annotated[str | None, typer.Option("--device", help=field_help("device"))] = None,
    dtype: Annotated[str | None, typer.Option("--dtype", help=field_help("dtype"))] = None,
    on_damaged: Annotated[str | None, typer.Option("--on-damaged", help=field_help("on_damaged"))] = None,
    verify: Annotated[str | None, typer.Option("--verify", help=field_help("verify"))] = None,
    config: Annotated[
        Path | None, typer.Option("--config", help="YAML file of settings; options override it.")
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            "--model", help="Train on the fly from this model (HF folder, GGUF, 'bundled'); no store."
        ),
    ] = None,
    tasks: Annotated[str | None, typer.Option("--tasks", help="With --model: the task source spec.")] = None,
    positions: Annotated[str, typer.Option("--positions", help="With --model: positions to take.")] = "cells",
    max_tasks: Annotated[
        int | None, typer.Option("--max-tasks", help="With --model: use at most N tasks.")
    ] = None,
    storage_options: OptsOpt = None,
    no_resume: Annotated[
        bool, typer.Option("--no-resume", help="Fail instead of resuming a run in --out.")
    ] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Discard a run already in --out.")] = False,
    quiet: QuietOpt = False,
) -> None:
    """Train an SAE on a hook of a store (or on the fly from a model), with checkpoints and resume."""
    from arcscope.sae import train_sae

    base = TrainConfig.from_yaml(config) if config else TrainConfig()
    given = {
        "arch": arch,
        "k": k,
        "latents": latents,
        "expansion": expansion,
        "batch_size": batch_size,
        "tokens": tokens,
        "epochs": epochs,
        "lr": lr,
        "seed": seed,
        "device": device,
        "dtype": dtype,
        "on_damaged": on_damaged,
        "verify": verify,
    }
    import dataclasses

    cfg = dataclasses.replace(base, **{k2: v for k2, v in given.items() if v is not None})
    cfg = cfg.with_overrides(list(overrides or []))
    source = None
    if model is not None:
        if store is not None:
            raise SAEError("give either --store (stored activations) or --model (on the fly), not both")
        if hook is None or tasks is None:
            raise SAEError("training on the fly needs --hook and --tasks with --model")
        from arcscope.models import load_model
        from arcscope.sae import ModelSource
        from arcscope.tasks import load

        loaded = load_model(None if model == "bundled" else model, device=cfg.device)
        source = ModelSource(
            loaded,
            load(tasks),
            hook,
            positions=[p.strip() for p in positions.split(",") if p.strip()],
            seed=cfg.seed,
            max_tasks=max_tasks,
        )
    elif store is None or hook is None:
        raise SAEError("give --store and --hook (or --model, --tasks and --hook to train on the fly)")

    bar = progress(quiet)
    state: dict = {"task": None}

    def on_progress(ev) -> None:
        if state["task"] is None:
            state["task"] = bar.add_task("training", total=ev.total_steps, rate="")
        m = ev.metrics
        line = (
            f"{m.get('tokens_per_s', 0):,.0f} tok/s  loss {m['loss']:.4f}  fvu {m['fvu']:.4f}  "
            f"L0 {m['l0']:.1f}  dead {100 * m['dead_fraction']:.1f}%"
        )
        bar.update(state["task"], completed=ev.step, rate=line)

    where = store or f"{model} x {tasks}"
    err_console.print(f"arcscope sae train: {cfg.arch} on {hook} of {where} -> {out}", highlight=False)
    with bar:
        res = train_sae(
            cfg,
            out,
            store=store,
            hook=hook,
            storage_options=_storage_options(storage_options),
            source=source,
            resume=not no_resume,
            overwrite=overwrite,
            on_progress=on_progress,
        )
    if res.already_complete:
        console.print(
            f"[green]nothing to do:[/] {out} already holds this trained SAE; --overwrite trains again"
        )
        return
    if res.resumed_from:
        console.print(f"resumed from step {res.resumed_from}")
    m = res.metrics
    console.print(
        f"steps {res.steps}/{res.total_steps}  tokens this session {res.tokens:,}  time {res.seconds:.1f} s  "
        f"({res.tokens_per_s:,.0f} tok/s)  fvu {m.get('fvu', float('nan')):.4f}  L0 {m.get('l0', float('nan')):.1f}  "
        f"dead {100 * m.get('dead_fraction', 0):.1f}%"
    )
    if res.skipped_shards:
        console.print(f"[yellow]skipped {len(res.skipped_shards)} damaged shard(s):[/]")
        for f, why in res.skipped_shards.items():
            console.print(f"  {escape(f)}: {escape(why)}", highlight=False)
    console.print(f"SAE: {out}", highlight=False)


@sae_app.command("eval")
def eval_cmd(
    sae: SaeArg,
    store: StoreOpt,
    hook: HookOpt = None,
    rows: Annotated[int, typer.Option("--rows", help="Rows to measure reconstruction on (0: all).")] = 65536,
    downstream: Annotated[
        bool,
        typer.Option("--downstream/--no-downstream", help="Also splice the SAE into the model: CE and KL."),
    ] = True,
    model: Annotated[
        str | None, typer.Option("--model", help="Model for the downstream loss (default: the store's).")
    ] = None,
    prompts: Annotated[int, typer.Option("--prompts", help="Prompts for the downstream loss.")] = 4,
    device: Annotated[str, typer.Option("--device", help="Device for the model and SAE.")] = "auto",
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write the metrics as JSON here.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the metrics as JSON.")] = False,
    storage_options: OptsOpt = None,
) -> None:
    """Reconstruction (L0, FVU, MSE, cosine), dead/dense latents, density histogram, downstream CE and KL."""
    from arcscope.sae.evaluate import evaluate
    from arcscope.store import open_store

    s = _load(sae)
    st = open_store(store, _storage_options(storage_options))
    m = evaluate(
        s,
        st,
        hook,
        rows=None if rows == 0 else rows,
        downstream=downstream,
        model=model,
        prompts=prompts,
        device=device,
        storage_options=_storage_options(storage_options),
    )
    text = json.dumps(m, indent=1)
    if output:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(text)
    if as_json:
        console.print_json(text)
        return
    t = Table(title=f"{sae} on {m['hook']} ({m['rows']:,} rows)")
    t.add_column("metric")
    t.add_column("value", justify="right")
    for key in (
        "l0",
        "fvu",
        "explained_variance",
        "mse",
        "cosine",
        "norm_ratio",
        "dead_fraction",
        "dense_fraction",
    ):
        t.add_row(key, f"{m[key]:.5g}")
    for key, v in (m.get("downstream") or {}).items():
        if isinstance(v, float):
            t.add_row(f"downstream {key}", f"{v:.5g}")
    console.print(t)
    h = m["density_histogram"]
    console.print(
        "log10 density histogram: "
        + "  ".join(f"{e:g}:{c}" for e, c in zip(h["edges"], h["counts"], strict=False) if c)
    )
    if output:
        console.print(f"metrics: {output}", highlight=False)


@sae_app.command("dashboard")
def dashboard_cmd(
    sae: SaeArg,
    store: StoreOpt,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder for the site.")] = Path(
        "runs/sae-dashboard"
    ),
    hook: HookOpt = None,
    tasks: Annotated[str | None, typer.Option("--tasks", help="Task source (default: the store's).")] = None,
    model: Annotated[
        str | None, typer.Option("--model", help="Model for logit effects (default: the store's).")
    ] = None,
    top: Annotated[int, typer.Option("--top", help="Top rows kept per latent.")] = 32,
    examples: Annotated[int, typer.Option("--examples", help="Example grids per latent page.")] = 6,
    rows: Annotated[int, typer.Option("--rows", help="Rows to scan (0: all).")] = 0,
    max_pages: Annotated[
        int, typer.Option("--max-pages", help="Latent pages at most (0: every latent that fired).")
    ] = 0,
    logits: Annotated[bool, typer.Option("--logits/--no-logits", help="Compute logit effects.")] = True,
    storage_options: OptsOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Write a static HTML site: a searchable index of latents and one page per latent with ARC grids."""
    from arcscope.sae.dashboard import make_dashboard
    from arcscope.store import open_store

    s = _load(sae)
    st = open_store(store, _storage_options(storage_options))
    bar = progress(quiet)
    tasks_ids: dict = {}

    def on_progress(stage: str, done: int, total: int) -> None:
        if stage not in tasks_ids:
            tasks_ids[stage] = bar.add_task(stage, total=total, rate="")
        bar.update(tasks_ids[stage], completed=done)

    with bar:
        index = make_dashboard(
            s,
            st,
            out,
            hook=hook,
            tasks=tasks,
            model=model,
            top=top,
            examples=examples,
            rows=rows or None,
            max_pages=max_pages or None,
            logits=logits,
            on_progress=on_progress,
        )
    console.print(f"dashboard: {index}", highlight=False)


@sae_app.command("query")
def query_cmd(
    sae: SaeArg,
    store: StoreOpt,
    hook: HookOpt = None,
    colour: Annotated[int | None, typer.Option("--colour", help="Cell colour 0..9.")] = None,
    role: Annotated[
        str | None, typer.Option("--role", help="Grid role: train_input, train_output, test_input, answer.")
    ] = None,
    border: Annotated[
        bool | None,
        typer.Option("--border/--interior", help="Border cells (or interior cells).", show_default=False),
    ] = None,
    top: Annotated[int, typer.Option("--top", help="How many latents to list.")] = 20,
    min_count: Annotated[
        int, typer.Option("--min-count", help="Leave out latents firing on fewer rows.")
    ] = 5,
    tasks: Annotated[str | None, typer.Option("--tasks", help="Task source (default: the store's).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    storage_options: OptsOpt = None,
) -> None:
    """Latents that fire mostly on a colour, a role or border cells, ranked by their share of activation mass."""
    from arcscope.sae.features import latent_stats, load_tasks_for, rank_latents
    from arcscope.store import open_store

    s = _load(sae)
    st = open_store(store, _storage_options(storage_options))
    stats = latent_stats(s, st, hook, lookup=load_tasks_for(st, tasks))
    ranked = rank_latents(stats, colour=colour, role=role, border=border, min_count=min_count, top=top)
    if as_json:
        console.print_json(json.dumps(ranked))
        return
    t = Table(
        title=f"latents by share of activation on {', '.join(ranked[0]['properties']) if ranked else '-'}"
    )
    for c in ("latent", "share", "rows fired", "density"):
        t.add_column(c, justify="right")
    for r in ranked:
        t.add_row(str(r["latent"]), f"{100 * r['share']:.1f}%", str(r["count"]), f"{r['density']:.3g}")
    console.print(t)


@sae_app.command("info")
def info_cmd(
    sae: SaeArg, as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False
) -> None:
    """Architecture, widths, hook, model and provenance of an SAE folder."""
    s = _load(sae)
    c = s.cfg
    d = {
        "arch": c.arch,
        "d_in": c.d_in,
        "d_sae": c.d_sae,
        "k": c.k,
        "hook": c.hook,
        "model": c.model,
        "apply_b_dec_to_input": c.apply_b_dec_to_input,
        "input_norm": c.input_norm,
        "dtype": str(s.W_dec.dtype).replace("torch.", ""),
        "meta": c.meta,
    }
    if as_json:
        console.print_json(json.dumps(d, default=str))
        return
    for k2, v in d.items():
        if k2 != "meta":
            console.print(f"{k2}: {v}", highlight=False)
    src = c.meta.get("source")
    if src:
        console.print(f"trained on: {json.dumps(src)}", highlight=False)


@sae_app.command("config")
def config_cmd() -> None:
    """Every training setting with its default: use them as KEY=VALUE after `arcscope sae train`."""
    t = Table(title="arcscope sae train settings")
    t.add_column("key")
    t.add_column("default")
    t.add_column("meaning")
    for name, default, text in config_help():
        t.add_row(name, escape(default), escape(text))
    console.print(t)
