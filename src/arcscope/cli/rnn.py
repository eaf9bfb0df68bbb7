"""`arcscope rnn` commands: train, zoo, regions, ablate, probe, report, standardize."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from arcscope.cli.app import app, console, progress_bar
from arcscope.cli.options import QuietOpt, config_options
from arcscope.rnn.config import TrainConfig as RnnTrainConfig

rnn_app = typer.Typer(
    name="rnn",
    help=(
        "Tiny ReLU RNNs with known algorithms (AlgZoo's M_{H,T}): train them, list the bundled zoo, and analyse "
        "them exactly (linear regions, their maps, ablations, neuron probes, an HTML report).\n\n"
        "MODEL is a .safetensors file, an AlgZoo .pth state dict, or a zoo name such as second-argmax-h4-t3."
    ),
    no_args_is_help=True,
)
app.add_typer(rnn_app, name="rnn")

ModelArg = Annotated[
    str,
    typer.Argument(help="A .safetensors or AlgZoo .pth checkpoint, or a zoo name (see `arcscope rnn zoo`)."),
]
SeqLenOpt = Annotated[
    int | None, typer.Option("--seq-len", help="Sequence length T, for checkpoints without a card.", min=1)
]
TaskOpt = Annotated[
    str | None,
    typer.Option(
        "--task", help="Task (second-argmax, argmax, argmedian, median), for checkpoints without a card."
    ),
]
SeedOpt = Annotated[int, typer.Option("--seed", help="Seed of the sampled inputs.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]


def _load(model: str, seq_len: int | None, task: str | None):
    from arcscope.rnn import load

    return load(model, seq_len=seq_len, task=task)


def _print_json(obj: object) -> None:
    console.print_json(json.dumps(obj))


@rnn_app.command("train")
@config_options(RnnTrainConfig, flags={"hidden_size": ("--hidden", "--hidden-size")})
def train_cmd(
    cfg: RnnTrainConfig,
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Folder for NAME.safetensors and NAME.json.")
    ] = Path("."),
    name: Annotated[str | None, typer.Option("--name", help="File name stem (default TASK-hH-tT).")] = None,
    quiet: QuietOpt = False,
) -> None:
    """Train M_{H,T} on a task (best of N seeds) and write a safetensors checkpoint with a JSON card."""
    from arcscope.rnn import save, train

    start = time.perf_counter()
    with progress_bar(quiet) as bar:
        result = train(cfg, progress=bar)
    stem = name or result.card["name"]
    path = save(result.model, out / f"{stem}.safetensors", result.card)
    card = result.card
    metric = card["metric"]
    vals = ", ".join(f"seed {s}: {v:.4f}" for s, v in result.val_scores.items())
    console.print(f"validation {metric}: {vals}")
    console.print(
        f"[bold]{escape(stem)}[/]: seed {card['seed']}, held-out {metric} [bold]{card[metric]:.4f}[/] on "
        f"{card['test_samples']:,} sequences, {card['train_samples']:,} training sequences per seed, "
        f"{time.perf_counter() - start:.1f}s"
    )
    console.print(f"wrote {escape(str(path))} and {escape(str(path.with_suffix('.json')))}")


@rnn_app.command("zoo")
def zoo_cmd(as_json: JsonOpt = False) -> None:
    """List the bundled trained models with their held-out accuracy (RMSE for median)."""
    from arcscope.rnn import zoo

    entries = zoo()
    if as_json:
        _print_json([{"name": e.name, "path": str(e.path), **e.card} for e in entries])
        return
    table = Table("name", "H", "T", "params", "metric", "held-out", "train seqs", "seed", box=None)
    table.columns[0].no_wrap = True
    for e in entries:
        c = e.card
        table.add_row(
            escape(e.name),
            str(c["hidden_size"]),
            str(c["seq_len"]),
            str(c.get("params", "")),
            c["metric"],
            f"{e.score:.4f}",
            f"{c.get('train_samples', 0):,}",
            str(c.get("seed", "")),
        )
    console.print(table)
    console.print(f"{len(entries)} models; load one with arcscope.rnn.load('NAME') or pass NAME as MODEL")


@rnn_app.command("regions")
def regions_cmd(
    model: ModelArg,
    inputs: Annotated[
        int, typer.Option("--inputs", "-n", help="Standard-normal inputs to classify.", min=1)
    ] = 100_000,
    seed: SeedOpt = 0,
    top: Annotated[int, typer.Option("--top", help="Regions to list.", min=0)] = 10,
    maps: Annotated[bool, typer.Option("--maps", help="Print each listed region's linear map A.")] = False,
    check: Annotated[
        bool,
        typer.Option("--check/--no-check", help="Check A @ x equals the forward output on listed regions."),
    ] = True,
    exhaustive: Annotated[
        bool, typer.Option("--exhaustive", help="Also enumerate every realisable region exactly (LP).")
    ] = False,
    max_slots: Annotated[int, typer.Option("--max-slots", help="Refuse --exhaustive above this H*T.")] = 24,
    seq_len: SeqLenOpt = None,
    task: TaskOpt = None,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Classify sampled inputs into linear regions (counts, patterns, exact linear maps); optionally enumerate all."""
    import numpy as np

    from arcscope.rnn import (
        check_regions,
        classify_regions,
        enumerate_regions,
        region_linear_map,
        sample_inputs,
    )

    m = _load(model, seq_len, task)
    steps = m.require_seq_len()
    x = sample_inputs(inputs, steps, seed=seed)
    t0 = time.perf_counter()
    rm = classify_regions(m, x)
    dt = time.perf_counter() - t0
    result = rm.summary(top)
    result["model"] = m.name
    result["seconds"] = dt
    checks = check_regions(m, rm, top=top) if check and top else []
    if checks:
        result["check"] = {
            "regions": len(checks),
            "max_abs_error": max(c.max_abs_error for c in checks),
            "max_rel_error": max(c.max_rel_error for c in checks),
            "ok": all(c.ok for c in checks),
        }
    if maps or as_json:
        for r in result["top"]:
            r["linear_map"] = region_linear_map(m, rm.pattern(r["index"])).tolist()
    enum = None
    if exhaustive:
        with progress_bar(quiet) as bar:
            enum = enumerate_regions(m, max_slots=max_slots, seed=seed, progress=bar)
        sampled = {rm.pattern(i).bits for i in range(len(rm))}
        result["exhaustive"] = enum.summary() | {"hit_by_sampling": sum(p.bits in sampled for p in enum)}
    if as_json:
        _print_json(result)
        return
    hid = m.hidden_size
    console.print(
        f"[bold]{escape(m.name)}[/]: {len(rm):,} regions among {rm.total_inputs:,} inputs "
        f"(of 2^{hid * steps} patterns), classified in {dt:.2f}s ({rm.total_inputs / max(dt, 1e-9):,.0f} inputs/s)"
    )
    if top:
        table = Table(
            "rank",
            "inputs",
            "share",
            "cum.",
            "active/step",
            "pattern (1 = active; | between steps)",
            box=None,
        )
        cum = 0.0
        for r in result["top"]:
            cum += r["fraction"]
            table.add_row(
                str(r["index"]),
                f"{r['count']:,}",
                f"{r['fraction']:.2%}",
                f"{cum:.1%}",
                ",".join(map(str, r["active_per_timestep"])),
                r["pattern"],
            )
        console.print(table)
    if maps:
        with np.printoptions(precision=4, suppress=True, linewidth=160):
            for r in result["top"]:
                console.print(f"region {r['index']}: output = A @ x with A =")
                console.print(escape(str(np.array(r["linear_map"]))))
    if checks:
        c = result["check"]
        style = "green" if c["ok"] else "red"
        console.print(
            f"[{style}]linear maps {'reproduce' if c['ok'] else 'DO NOT reproduce'} the forward output[/] on the "
            f"inputs of the top {c['regions']} regions (max abs error {c['max_abs_error']:.2e}, "
            f"max rel error {c['max_rel_error']:.2e})"
        )
    if enum is not None:
        e = result["exhaustive"]
        console.print(
            f"exhaustive: [bold]{e['realisable']:,}[/] realisable regions of {e['candidates']:,} = 2^{hid * steps} "
            f"candidate patterns ({e['fraction']:.3%}); sampling {inputs:,} inputs hit {e['hit_by_sampling']:,}; "
            f"{e['lp_solves']:,} LPs, {e['seconds']:.2f}s"
        )


@rnn_app.command("ablate")
def ablate_cmd(
    model: ModelArg,
    inputs: Annotated[
        int, typer.Option("--inputs", "-n", help="Standard-normal inputs to score on.", min=1)
    ] = 100_000,
    seed: SeedOpt = 0,
    pairs: Annotated[
        bool, typer.Option("--pairs/--no-pairs", help="Also ablate every pair of neurons.")
    ] = True,
    top_pairs: Annotated[int, typer.Option("--top-pairs", help="Pairs to list.", min=0)] = 10,
    seq_len: SeqLenOpt = None,
    task: TaskOpt = None,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Zero each neuron (and each pair) at every step and report the drop in accuracy (RMSE rise for median)."""
    from arcscope.rnn import ablate

    m = _load(model, seq_len, task)
    with progress_bar(quiet) as bar:
        rep = ablate(m, task=task, n=inputs, seed=seed, pairs=pairs, progress=bar)
    if as_json:
        _print_json(rep.to_dict())
        return
    console.print(
        f"[bold]{escape(m.name)}[/] ({rep.task}): baseline {rep.metric} {rep.baseline:.4f} on {rep.n_inputs:,} inputs"
    )
    table = Table("neuron", rep.metric, "drop", box=None)
    for a in rep.singles:
        table.add_row(str(a.neurons[0]), f"{a.score:.4f}", f"{a.drop:+.4f}")
    console.print(table)
    if rep.pairs and top_pairs:
        table = Table("pair", rep.metric, "drop", "interaction", box=None)
        for a in rep.pairs[:top_pairs]:
            table.add_row(
                f"{a.neurons[0]},{a.neurons[1]}", f"{a.score:.4f}", f"{a.drop:+.4f}", f"{a.interaction:+.4f}"
            )
        console.print(
            f"most damaging pairs (of {len(rep.pairs)}); interaction = drop(pair) - drop(a) - drop(b)"
        )
        console.print(table)


@rnn_app.command("probe")
def probe_cmd(
    model: ModelArg,
    inputs: Annotated[
        int, typer.Option("--inputs", "-n", help="Standard-normal inputs to probe with.", min=2)
    ] = 20_000,
    seed: SeedOpt = 0,
    threshold: Annotated[float, typer.Option("--threshold", help="Minimum |r| to name a role.")] = 0.8,
    seq_len: SeqLenOpt = None,
    task: TaskOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Name what each neuron tracks (running max, running min, recent input, comparator, ...) with its |r|."""
    from arcscope.rnn import probe

    m = _load(model, seq_len, task)
    rep = probe(m, n=inputs, seed=seed, threshold=threshold)
    if as_json:
        _print_json(rep.to_dict())
        return
    console.print(
        f"[bold]{escape(m.name)}[/]: probes on {rep.n_inputs:,} inputs (|r| >= {threshold} names a role)"
    )
    table = Table("neuron", "role", "best feature", "r", "active", "runner-up (other role)", box=None)
    for p in rep.neurons:
        ru = f"{p.runner_up[0]} ({p.runner_up[1]:+.3f})" if p.runner_up else ""
        table.add_row(
            str(p.neuron),
            p.role,
            escape(p.feature),
            f"{p.correlation:+.3f}",
            f"{p.active_fraction:.0%}",
            escape(ru),
        )
    console.print(table)


@rnn_app.command("report")
def report_cmd(
    model: ModelArg,
    out: Annotated[Path, typer.Option("--out", "-o", help="HTML file to write.")] = Path("rnn_report.html"),
    inputs: Annotated[
        int, typer.Option("--inputs", "-n", help="Standard-normal inputs to classify.", min=1)
    ] = 100_000,
    seed: SeedOpt = 0,
    top: Annotated[int, typer.Option("--top", help="Top regions to draw.", min=1)] = 8,
    samples: Annotated[
        int, typer.Option("--samples", help="Sample inputs whose neuron traces are drawn.", min=1)
    ] = 4,
    seq_len: SeqLenOpt = None,
    task: TaskOpt = None,
) -> None:
    """Write an HTML page: region histogram, top regions' linear maps as heat maps, neuron traces, probes, ablations."""
    from arcscope.rnn import write_report

    m = _load(model, seq_len, task)
    path = write_report(m, out, n=inputs, seed=seed, top=top, samples=samples, task=task)
    console.print(f"wrote {escape(str(path))}")


@rnn_app.command("standardize")
def standardize_cmd(
    model: ModelArg,
    out: Annotated[Path, typer.Option("--out", "-o", help="Where to write the standardised .safetensors.")],
    seq_len: SeqLenOpt = None,
    task: TaskOpt = None,
) -> None:
    """Rescale every neuron so |W_ih[j]| = 1 (the function is unchanged) and save the result."""
    import numpy as np

    from arcscope.rnn import forward, sample_inputs, save, standardize

    m = _load(model, seq_len, task)
    s = standardize(m)
    x = sample_inputs(10_000, m.require_seq_len(), seed=0)
    diff = float(np.abs(forward(m, x) - forward(s, x)).max())
    path = save(s, out)
    console.print(f"wrote {escape(str(path))}; scales {np.round(s.card['scales'], 4).tolist()}")
    console.print(
        f"max |output difference| on 10,000 inputs: {diff:.2e} (float32 rounding of the rescaled weights)"
    )
