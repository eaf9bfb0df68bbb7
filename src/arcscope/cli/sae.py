"""`arcscope sae` commands: train, eval, dashboard, query, info, config."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from arcscope.cli.app import app, console, err_console, progress_bar
from arcscope.cli.options import NoResumeOpt, QuietOpt, RunOverwriteOpt, StorageOptionsOpt, config_options
from arcscope.config import config_help
from arcscope.files import atomic_write_text
from arcscope.sae.config import DashboardConfig, EvalConfig, SAEError, TrainConfig

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


def _load(path: Path):
    from arcscope.sae import load_sae

    return load_sae(path)


# The settings with an option of their own; every other one is a KEY=VALUE argument.
_TRAIN_OPTIONS = ("arch", "k", "latents", "expansion", "batch_size", "tokens", "epochs", "lr", "seed")
_TRAIN_OPTIONS += ("device", "dtype", "on_damaged", "verify")


@sae_app.command("train")
@config_options(TrainConfig, fields=_TRAIN_OPTIONS, config_file=True)
def train_cmd(
    cfg: TrainConfig,
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
    storage_options: StorageOptionsOpt = None,
    no_resume: NoResumeOpt = False,
    overwrite: RunOverwriteOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Train an SAE on a hook of a store (or on the fly from a model), with checkpoints and resume."""
    from arcscope.sae import train_sae

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

    where = store or f"{model} x {tasks}"
    err_console.print(f"arcscope sae train: {cfg.arch} on {hook} of {where} -> {out}", highlight=False)
    with progress_bar(quiet) as bar:
        res = train_sae(
            cfg,
            out,
            store=store,
            hook=hook,
            storage_options=storage_options,
            source=source,
            resume=not no_resume,
            overwrite=overwrite,
            progress=bar,
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
@config_options(EvalConfig, exclude=("batch_size",))
def eval_cmd(
    cfg: EvalConfig,
    sae: SaeArg,
    store: StoreOpt,
    hook: HookOpt = None,
    model: Annotated[
        str | None, typer.Option("--model", help="Model for the downstream loss (default: the store's).")
    ] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write the metrics as JSON here.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the metrics as JSON.")] = False,
    storage_options: StorageOptionsOpt = None,
) -> None:
    """Reconstruction (L0, FVU, MSE, cosine), dead/dense latents, density histogram, downstream CE and KL."""
    from arcscope.sae.evaluate import evaluate
    from arcscope.store import open_store

    s = _load(sae)
    st = open_store(store, storage_options)
    m = evaluate(s, st, hook, cfg, model=model)
    text = json.dumps(m, indent=1)
    if output:
        output.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(output, text)
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
@config_options(DashboardConfig)
def dashboard_cmd(
    cfg: DashboardConfig,
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
    storage_options: StorageOptionsOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Write a static HTML site: a searchable index of latents and one page per latent with ARC grids."""
    from arcscope.sae.dashboard import make_dashboard
    from arcscope.store import open_store

    s = _load(sae)
    st = open_store(store, storage_options)
    with progress_bar(quiet) as bar:
        index = make_dashboard(
            s,
            st,
            out,
            cfg,
            hook=hook,
            tasks=tasks,
            model=model,
            progress=bar,
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
    storage_options: StorageOptionsOpt = None,
) -> None:
    """Latents that fire mostly on a colour, a role or border cells, ranked by their share of activation mass."""
    from arcscope.sae.features import latent_stats, load_tasks_for, rank_latents
    from arcscope.store import open_store

    s = _load(sae)
    st = open_store(store, storage_options)
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
    for name, default, text in config_help(TrainConfig):
        t.add_row(name, escape(default), escape(text))
    console.print(t)
