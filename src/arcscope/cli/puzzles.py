"""`arcscope puzzles` (HRM-layout datasets: build, view, info) and `arcscope reasoning` (HRM/TRM: train, eval, capture)."""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path

import typer
from rich.markup import escape

from arcscope.cli.app import app, console, err_console, progress_bar
from arcscope.cli.options import QuietOpt, config_options
from arcscope.errors import ArcscopeError
from arcscope.puzzles.config import ArcBuildConfig, MazeBuildConfig, SudokuBuildConfig
from arcscope.reasoning.config import CaptureConfig, EvalConfig

puzzles_app = typer.Typer(
    help="Puzzle datasets for recurrent reasoners (HRM layout): ARC, Sudoku, Maze.", no_args_is_help=True
)
build_app = typer.Typer(help="Build a dataset folder in the HRM layout.", no_args_is_help=True)
reasoning_app = typer.Typer(
    help="HRM and TRM: train, evaluate (ARC protocol), capture recurrent states.", no_args_is_help=True
)
puzzles_app.add_typer(build_app, name="build")
app.add_typer(puzzles_app, name="puzzles")
app.add_typer(reasoning_app, name="reasoning")


class Arch(StrEnum):
    """Model architecture."""

    hrm = "hrm"
    trm = "trm"


def _print_json(obj: object) -> None:
    console.print_json(json.dumps(obj, default=str))


# --------------------------------------------------------------------------------------------- puzzles


@build_app.command("arc")
@config_options(ArcBuildConfig)
def build_arc_cmd(
    cfg: ArcBuildConfig,
    out: Path = typer.Argument(..., help="Dataset folder to write."),
    train: list[str] = typer.Option(
        ["arc1:training"],
        "--train",
        help="Task source whose pairs all go to train (repeatable; 'none' for no such source).",
    ),
    evaluation: list[str] = typer.Option(
        ["arc1:evaluation"],
        "--eval",
        help="Task source: demonstrations to train, test pairs to test (repeatable; 'none' for no such source).",
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing dataset folder."),
    quiet: QuietOpt = False,
) -> None:
    """ARC in HRM's 30x30 encoding from any task sources (bundled ARC-AGI-1/2 included)."""
    from arcscope.puzzles import build_arc

    # "none" leaves a side empty (only training sources, or only evaluation sources).
    train = [t for t in train if t.lower() != "none"]
    evaluation = [t for t in evaluation if t.lower() != "none"]
    with progress_bar(quiet) as bar:
        report = build_arc(
            out,
            train,
            evaluation,
            cfg,
            overwrite=overwrite,
            progress=bar,
        )
    if report.skipped_tasks:
        err_console.print(f"[yellow]skipped {len(report.skipped_tasks)} invalid task(s)[/]")
    if report.short_augmentations:
        err_console.print(
            f"[yellow]{len(report.short_augmentations)} task(s) have fewer than {cfg.num_aug} distinct augmentations "
            f"(e.g. {escape(report.short_augmentations[0][0])}: {report.short_augmentations[0][1]})[/]"
        )
    if not quiet:
        _print_json(report.to_dict())


def _build(build, out: Path, cfg, overwrite: bool, quiet: bool) -> None:
    """Run a generated-puzzle builder under a progress bar and print its summary."""
    with progress_bar(quiet) as bar:
        info = build(out, cfg, overwrite=overwrite, progress=bar)
    if not quiet:
        _print_json(info)


@build_app.command("sudoku")
@config_options(SudokuBuildConfig, flags={"n": "--size"})
def build_sudoku_cmd(
    cfg: SudokuBuildConfig,
    out: Path = typer.Argument(..., help="Dataset folder to write."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing dataset folder."),
    quiet: QuietOpt = False,
) -> None:
    """Sudoku with unique solutions (generated, or read from the sudoku-extreme CSV)."""
    from arcscope.puzzles import build_sudoku

    _build(build_sudoku, out, cfg, overwrite, quiet)


@build_app.command("maze")
@config_options(MazeBuildConfig)
def build_maze_cmd(
    cfg: MazeBuildConfig,
    out: Path = typer.Argument(..., help="Dataset folder to write."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing dataset folder."),
    quiet: QuietOpt = False,
) -> None:
    """Mazes with start, goal and the unique shortest path as the label (generated, or read from HRM's CSV)."""
    from arcscope.puzzles import build_maze

    _build(build_maze, out, cfg, overwrite, quiet)


@puzzles_app.command("view")
def view_cmd(
    data: Path = typer.Argument(..., help="Dataset folder."),
    output: Path = typer.Option(Path("puzzles.html"), "--output", "-o", help="HTML file to write."),
    groups: int = typer.Option(12, "--groups", min=1, help="Groups shown per split."),
    puzzles: int = typer.Option(4, "--puzzles", min=1, help="Puzzles shown per group."),
    examples: int = typer.Option(6, "--examples", min=1, help="Examples shown per puzzle."),
    quiet: QuietOpt = False,
) -> None:
    """Write one self-contained HTML page of a dataset: groups, puzzles, inputs and labels."""
    from arcscope.puzzles import write_view

    path = write_view(data, output, max_groups=groups, max_puzzles=puzzles, max_examples=examples)
    if not quiet:
        console.print(f"wrote {path}", highlight=False, markup=False)


@puzzles_app.command("info")
def info_cmd(data: Path = typer.Argument(..., help="Dataset folder.")) -> None:
    """Check a dataset folder against the HRM layout and print its metadata and sizes."""
    from arcscope.puzzles import open_dataset

    ds = open_dataset(data)
    _print_json(
        {
            "path": str(ds.path),
            "kind": ds.kind,
            "identifiers": len(ds.identifiers) if ds.identifiers is not None else None,
            "splits": {
                n: {
                    "examples": s.n_examples,
                    "puzzles": s.n_puzzles,
                    "groups": s.n_groups,
                    **s.metadata.to_json(),
                }
                for n, s in ds.splits.items()
            },
            "info": ds.info,
        }
    )


# ------------------------------------------------------------------------------------------- reasoning


@reasoning_app.command("config")
def config_cmd(
    arch: Arch = typer.Option(Arch.hrm, "--arch", help="Architecture whose defaults to print."),
    preset: str | None = typer.Option(
        None, "--preset", help="A named preset instead: hrm, trm, sudoku-tiny."
    ),
    overrides: list[str] = typer.Argument(
        None, help="key=value overrides, e.g. arch.hidden_size=128 lr=3e-4."
    ),
) -> None:
    """Print a training config as YAML (the original defaults), ready to edit and pass with --config."""
    from arcscope.reasoning.config import apply_overrides
    from arcscope.reasoning.config import preset as get_preset

    cfg = get_preset(preset or arch.value)
    cfg = apply_overrides(cfg, overrides or [])
    console.print(cfg.to_yaml(), highlight=False, markup=False, end="")


@reasoning_app.command("train", no_args_is_help=True)
def train_cmd(
    data: Path = typer.Option(..., "--data", help="Dataset folder (arcscope puzzles build)."),
    arch: Arch | None = typer.Option(
        None, "--arch", help="hrm or trm (their original defaults; default hrm)."
    ),
    config: Path | None = typer.Option(
        None, "--config", help="YAML config (from `arcscope reasoning config`)."
    ),
    preset: str | None = typer.Option(
        None, "--preset", help="Start from a named preset: hrm, trm, sudoku-tiny."
    ),
    out: Path | None = typer.Option(
        None, "--out", help="Checkpoint folder (default runs/reasoning/ARCH-DATASET)."
    ),
    resume: bool = typer.Option(
        False, "--resume", help="Continue from the latest step_N checkpoint in --out."
    ),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Discard a run already in --out and train from scratch."
    ),
    overrides: list[str] = typer.Argument(
        None, help="key=value overrides, e.g. arch.hidden_size=128 lr=3e-4 epochs=100."
    ),
    quiet: QuietOpt = False,
) -> None:
    """Train HRM or TRM; use torchrun --nproc-per-node N -m arcscope reasoning train ... for several GPUs."""
    from arcscope.reasoning.config import apply_overrides, load_config
    from arcscope.reasoning.config import preset as get_preset
    from arcscope.reasoning.train import train

    if config is not None:
        cfg = load_config(config)
    else:
        cfg = get_preset(preset or (arch.value if arch is not None else "hrm"))
    extra = [f"data_path={data}"] + ([f"checkpoint_path={out}"] if out is not None else [])
    if arch is not None and arch.value != cfg.arch.name:
        extra.append(f"arch.name={arch.value}")
    cfg = apply_overrides(cfg, extra + list(overrides or []))

    def on_eval(rec: dict) -> None:
        err_console.print(
            f"step {rec['step']}: eval accuracy {rec.get('eval/accuracy', 0):.4f} "
            f"exact {rec.get('eval/exact_accuracy', 0):.4f} steps {rec.get('eval/steps', 0):.2f}",
            highlight=False,
        )

    with progress_bar(quiet) as bar:
        result = train(cfg, resume=resume, overwrite=overwrite, progress=bar, on_eval=on_eval)
    if not quiet:
        _print_json(
            {
                "checkpoint": str(result.checkpoint),
                "steps": result.steps,
                "seconds": round(result.seconds, 1),
                "examples_per_s": round(result.examples_per_second, 1),
                "last_eval": result.last_eval,
            }
        )


def _checkpoint_path(ckpt: str) -> Path:
    if ckpt == "bundled":
        from arcscope.reasoning.bundled import bundled_checkpoint

        return bundled_checkpoint()
    return Path(ckpt)


@reasoning_app.command("eval")
@config_options(EvalConfig, flags={"ks": "--k"})
def eval_cmd(
    cfg: EvalConfig,
    checkpoint: str = typer.Argument(
        ..., help="Checkpoint folder or file (arcscope or original), or 'bundled'."
    ),
    data: Path | None = typer.Option(
        None, "--data", help="Dataset folder (default: the one it was trained on)."
    ),
    out: Path | None = typer.Option(
        None, "--out", help="Folder for eval.json (and submission.json for ARC)."
    ),
    tasks: str | None = typer.Option(
        None, "--tasks", help="ARC: score against this task source instead of the dataset."
    ),
    seq_len: int | None = typer.Option(
        None, "--seq-len", help="Original RoPE checkpoints without a dataset: tokens per example."
    ),
) -> None:
    """Token accuracy, exact accuracy and the halting histogram; for ARC also voting, pass@k and submission.json."""
    from arcscope.models import resolve_device
    from arcscope.puzzles import open_dataset
    from arcscope.reasoning.checkpoint import load_model
    from arcscope.reasoning.evaluate import evaluate

    dev = resolve_device(cfg.device)
    split = cfg.split
    ds = None
    if data is not None:
        ds = open_dataset(data)
        seq_len = seq_len or ds[split].metadata.seq_len
    model, extra = load_model(_checkpoint_path(checkpoint), device=dev, seq_len=seq_len)
    if ds is None:
        path = extra.get("data_path")
        if not path:
            raise ArcscopeError(
                f"{checkpoint}: the checkpoint does not say which dataset it was trained on; pass --data"
            )
        ds = open_dataset(path)
    res = evaluate(
        model,
        ds,
        split=split,
        global_batch_size=cfg.batch_size,
        device=dev,
        max_batches=cfg.max_batches,
        ks=tuple(cfg.ks),
        adaptive=cfg.adaptive,
        tasks=tasks,
        out_dir=out,
    )
    _print_json(res.to_dict())


@reasoning_app.command("capture")
@config_options(CaptureConfig)
def capture_cmd(
    cfg: CaptureConfig,
    checkpoint: str = typer.Argument(..., help="Checkpoint folder or file, or 'bundled'."),
    data: Path = typer.Option(..., "--data", help="Dataset folder."),
    out: str = typer.Option(..., "--out", help="Activation store folder or URL."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing store at --out."),
    quiet: QuietOpt = False,
) -> None:
    """Write z_H / z_L of every cycle and ACT step and the halting logits into an activation store."""
    from arcscope.models import resolve_device
    from arcscope.puzzles import open_dataset
    from arcscope.reasoning.capture import capture_to_store
    from arcscope.reasoning.checkpoint import load_model

    dev = resolve_device(cfg.device)
    ds = open_dataset(data)
    split = cfg.split
    model, _ = load_model(_checkpoint_path(checkpoint), device=dev, seq_len=ds[split].metadata.seq_len)
    with progress_bar(quiet) as bar:
        summary = capture_to_store(
            model,
            ds,
            out,
            split=split,
            hooks=cfg.hooks,
            steps=cfg.steps,
            max_examples=cfg.max_examples,
            batch_size=cfg.batch_size,
            positions=cfg.positions,
            device=dev,
            overwrite=overwrite,
            progress=bar,
        )
    if not quiet:
        _print_json(summary)
