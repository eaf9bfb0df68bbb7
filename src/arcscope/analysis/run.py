"""One call per `arcscope analyze` command: load the model and the task, run the analysis, write the report.

Each ``run_*`` takes its config dataclass (:mod:`arcscope.analysis.config`, the single source of defaults;
the CLI is generated from it), returns ``(result, paths)`` where ``paths`` maps ``report`` / ``json`` /
table names to the files written under ``cfg.out``: a self-contained ``report.html``, ``result.json`` and
one Parquet file per table. ``loaded`` lets a notebook pass a model it already holds.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from arcscope.analysis.config import (
    AnalysisError,
    AttentionConfig,
    KnockoutConfig,
    LensConfig,
    PatchConfig,
    ProbeRunConfig,
    SteerConfig,
    SubjectConfig,
    TunedLensRunConfig,
    parse_cells,
    parse_ints,
)
from arcscope.analysis.subject import Metric, Subject, model_name
from arcscope.config import make_config
from arcscope.progress import ProgressFn, emit


def is_reasoning_model(model: Any) -> bool:
    """Whether ``model`` (a path, a loaded model or None) is an HRM/TRM checkpoint rather than a causal LM."""
    if model is None or hasattr(model, "tokenizer"):
        return False
    from arcscope.analysis.run_reasoning import is_reasoning_model as check

    return check(model)


def load_model_for(cfg: SubjectConfig, loaded: Any = None) -> Any:
    """The LoadedModel to analyse: ``loaded`` when given, else ``cfg.model`` (None: the bundled model)."""
    if loaded is not None:
        return loaded
    from arcscope.models import load_model

    return load_model(cfg.model, device=cfg.device, dtype=cfg.dtype)


def _task_size(task: Any, test_index: int) -> int:
    cells = sum(p.input.size + p.output.size for p in task.train)
    test = task.test[test_index] if test_index < len(task.test) else task.test[0]
    return cells + test.input.size + (test.output.size if test.output is not None else 10**6)


def pick_task(tasks: Any, task_id: str | None, test_index: int = 0) -> Any:
    """The task named ``task_id`` in ``tasks`` (a TaskSet or spec), or the one with the fewest cells."""
    from arcscope.tasks import load

    ts = load(tasks) if isinstance(tasks, str) else tasks
    items = list(ts)
    if not items:
        raise AnalysisError(f"task source {tasks!r} holds no task")
    if task_id is None:
        usable = [t for t in items if test_index < len(t.test) and t.test[test_index].output is not None]
        if not usable:
            raise AnalysisError(f"no task in {tasks!r} has a known answer for test {test_index}")
        return min(usable, key=lambda t: (_task_size(t, test_index), t.id))
    for t in items:
        if t.id == task_id:
            return t
    near = sorted(t.id for t in items if t.id.startswith(task_id[:2]))[:5]
    hint = f" (ids starting alike: {', '.join(near)})" if near else ""
    raise AnalysisError(f"task {task_id!r} is not in {tasks!r}{hint}")


def load_subject(cfg: SubjectConfig, loaded: Any = None) -> Subject:
    """The Subject of ``cfg``: its task of its task source through its model."""
    cfg.validate()
    loaded = load_model_for(cfg, loaded)
    task = pick_task(cfg.tasks, cfg.task, cfg.test_index)
    return Subject.from_task(
        loaded,
        task,
        test_index=cfg.test_index,
        encoder=cfg.encoder,
        template=cfg.template,
    )


def metric_of(cfg: SubjectConfig) -> Metric:
    """The answer metric a config asks for."""
    return Metric(cfg.metric, parse_cells(cfg.cells))


def _header(subject: Subject, cfg: Any, loaded: Any, metric: str) -> dict[str, Any]:
    return {
        "task": subject.task_id,
        "test_index": subject.test_index,
        "model": model_name(loaded if loaded is not None else subject.model),
        "metric": metric,
        "settings": cfg.to_dict(),
    }


def _finish(
    cfg: Any, title: str, header: dict[str, Any], sections: list[str], data: dict, tables: dict
) -> dict:
    from arcscope.analysis.report import write_report

    files = write_report(
        cfg.out,
        title,
        sections,
        {**header, **data},
        tables,
        task_id=header.get("task"),
        model=header.get("model"),
        metric=header.get("metric"),
        settings=header.get("settings"),
    )
    return {"report": files.html, "json": files.json, **files.tables}


def _answer_cell(subject: Subject, cfg: SubjectConfig) -> tuple[int, int]:
    """The one answer cell a per-cell picture is drawn for: the first of --cells, else the first cell."""
    cells = parse_cells(cfg.cells)
    if cells:
        return cells[0]
    return int(subject.answer.row[0]), int(subject.answer.col[0])


# ------------------------------------------------------------------------------------------- commands


def run_lens(
    cfg: LensConfig | dict | None = None,
    *,
    loaded: Any = None,
    progress: ProgressFn | None = None,
    **settings,
):
    """`arcscope analyze lens`: logit lens (and a tuned lens when given) over every layer at the answer cells."""
    from arcscope.analysis import report
    from arcscope.analysis.lens import TunedLens, logit_lens

    cfg = make_config(LensConfig, cfg, settings)
    if is_reasoning_model(loaded if loaded is not None else cfg.model):
        from arcscope.analysis.run_reasoning import reasoning_lens

        return reasoning_lens(cfg, loaded=loaded, progress=progress)
    loaded = load_model_for(cfg, loaded)
    subject = load_subject(cfg, loaded)
    layers = parse_ints(cfg.layers, "layers")
    emit(progress, "lens", 0, 1)
    results = [logit_lens(subject, layers=layers, sites=cfg.site)]
    if cfg.tuned:
        results.append(logit_lens(subject, layers=layers, sites=cfg.site, tuned=TunedLens.load(cfg.tuned)))
    emit(progress, "lens", 1, 1)
    res = results[-1]
    header = _header(subject, cfg, loaded, "rank and probability of the correct colour, per layer")
    sections = [
        report.section(
            "The answer",
            report.answer_compare(
                np.asarray(subject.task.test[subject.test_index].output), subject.predicted_grid()
            ),
        )
    ]
    for r in results:
        curve = r.curve()
        sections.append(
            report.section(
                f"{r.lens} lens: at which layer is each answer cell decided",
                report.layer_cell_picture(
                    r.layer_grids("colour_prob"),
                    [str(int(x)) for x in r.layers],
                    title="probability of the correct colour (among colours) per layer",
                ),
                report.decided_grid(
                    r.decided_layer, title="layer from which the top colour stays correct ( \u00b7 never)"
                ),
                report.line_plot(
                    r.layers,
                    {
                        "P(correct colour)": curve["colour_prob"],
                        "top-1 accuracy": curve["accuracy"],
                        "cells decided": curve["decided"],
                    },
                    x_label="layer",
                    y_label="mean over answer cells",
                    title="averaged over the answer cells",
                    y_range=(0.0, 1.0),
                ),
            )
        )
    data: dict[str, Any] = {"lens": [r.to_json() for r in results]}
    tables = {f"{r.lens}_lens": r.to_table() for r in results}
    if cfg.average > 0:
        from arcscope.analysis.lens import logit_lens_tasks
        from arcscope.tasks import load

        pool = [
            t
            for t in load(cfg.tasks)
            if cfg.test_index < len(t.test) and t.test[cfg.test_index].output is not None
        ]
        pool = sorted(pool, key=lambda t: (_task_size(t, cfg.test_index), t.id))[: cfg.average]
        curve = logit_lens_tasks(
            loaded,
            pool,
            test_index=cfg.test_index,
            encoder=cfg.encoder,
            template=cfg.template,
            layers=layers,
            sites=cfg.site,
            on_error="skip",
            progress=progress,
        )
        sections.append(
            report.section(
                f"Averaged over {len(curve.task_ids)} tasks",
                report.line_plot(
                    curve.layers,
                    {
                        "P(correct colour)": curve.mean["colour_prob"],
                        "top-1 accuracy": curve.mean["accuracy"],
                        "cells decided": curve.mean["decided"],
                    },
                    x_label="layer",
                    y_label="mean over tasks",
                    y_range=(0.0, 1.0),
                ),
                note="skipped: " + "; ".join(f"{k}: {v}" for k, v in curve.skipped.items())
                if curve.skipped
                else "",
            )
        )
        data["curve"] = curve.to_json()
        tables["curve"] = curve.to_table()
    paths = _finish(cfg, f"Logit lens on {subject.task_id}", header, sections, data, tables)
    return res, paths


def run_train_lens(
    cfg: TunedLensRunConfig | dict | None = None, *, progress: ProgressFn | None = None, **settings
):
    """`arcscope analyze train-lens`: a tuned lens fitted from a store, saved, with its held-out fit reported
    (KL to the final layer of the plain and the tuned lens, per layer)."""
    from pathlib import Path

    from arcscope.analysis import report
    from arcscope.analysis.lens import train_tuned_lens
    from arcscope.store import open_store

    cfg = make_config(TunedLensRunConfig, cfg, settings)
    store = open_store(cfg.store)
    path = cfg.model or ((store.meta.get("model") or {}).get("path"))
    if not path:
        raise AnalysisError(f"{cfg.store}: the store does not name its model; pass --model")
    from arcscope.models import load_model

    loaded = load_model(path, device="cpu" if cfg.device in (None, "cpu") else cfg.device, dtype="float32")
    lens = train_tuned_lens(loaded, store, hooks=cfg.hooks, config=cfg, progress=progress)
    Path(cfg.out).mkdir(parents=True, exist_ok=True)
    saved = lens.save(Path(cfg.out) / "tuned_lens.safetensors")
    fit = lens.fit
    sections = []
    tables = {}
    if fit is not None:
        x = list(range(len(fit.hooks)))
        sections.append(
            report.section(
                "Held-out fit: KL(final || lens) per layer",
                report.line_plot(
                    x,
                    {"logit lens": fit.kl_logit, "tuned lens": fit.kl_tuned},
                    x_label="hook (layer order)",
                    y_label="KL (nats)",
                ),
                report.table(fit.to_table()),
                note=f"{fit.n_train} train / {fit.n_test} held-out rows ({fit.split} split)",
            )
        )
        tables["fit"] = fit.to_table()
    header = {
        "task": None,
        "model": getattr(loaded, "name", str(path)),
        "metric": "KL to the final layer",
        "settings": cfg.to_dict(),
    }
    paths = _finish(
        cfg,
        "Tuned lens",
        header,
        sections,
        {"fit": None if fit is None else fit.to_json(), "lens_file": str(saved)},
        tables,
    )
    paths["lens"] = Path(saved)
    return lens, paths


def run_attention(
    cfg: AttentionConfig | dict | None = None,
    *,
    loaded: Any = None,
    progress: ProgressFn | None = None,
    **settings,
):
    """`arcscope analyze attention`: attention from each answer cell's predicting position to the grid cells."""
    from arcscope.analysis import report
    from arcscope.analysis.attention import attention_to_grids

    cfg = make_config(AttentionConfig, cfg, settings)
    if is_reasoning_model(loaded if loaded is not None else cfg.model):
        from arcscope.analysis.run_reasoning import reasoning_attention

        return reasoning_attention(cfg, loaded=loaded, progress=progress)
    loaded = load_model_for(cfg, loaded)
    subject = load_subject(cfg, loaded)
    emit(progress, "attention", 0, 1)
    res = attention_to_grids(
        subject,
        cells=parse_cells(cfg.cells),
        layers=parse_ints(cfg.layers, "layers"),
        heads=parse_ints(cfg.heads, "heads"),
    )
    emit(progress, "attention", 1, 1)
    r, c = _answer_cell(subject, cfg)
    shapes = subject.grids()
    answer_seg = next(g["segment"] for g in shapes if g["role"] == "answer")
    header = _header(subject, cfg, loaded, f"attention weight ({cfg.aggregate} over heads and layers)")
    grids = res.grids((r, c), how=cfg.aggregate)
    per_layer = res.weights[:, :, res.answer_index((r, c))].sum(-1)  # [L, H]: mass on grid cells
    sections = [
        report.section(
            f"Which input cells answer cell ({r}, {c}) reads",
            report.heat_grids(
                shapes,
                grids,
                value_label="attention",
                scale="sequential",
                marks={answer_seg: [(r, c)]},
            ),
            note=f"{cfg.aggregate} over {len(res.layers)} layers x {len(res.heads)} heads, from the position that "
            "predicts the cell",
        ),
        report.section(
            "Attention mass on grid cells per layer and head",
            report.heatmap(
                per_layer,
                [str(x) for x in res.layers],
                [str(x) for x in res.heads],
                x_label="head",
                y_label="layer",
                value_label="weight on grid cells",
                scale="sequential",
            ),
        ),
    ]
    paths = _finish(
        cfg,
        f"Attention on grids, {subject.task_id}",
        header,
        sections,
        res.to_json(),
        {"attention": res.to_table()},
    )
    return res, paths


def run_knockout(
    cfg: KnockoutConfig | dict | None = None,
    *,
    loaded: Any = None,
    progress: ProgressFn | None = None,
    **settings,
):
    """`arcscope analyze knockout`: block attention from --source to --target positions and measure the answer."""
    from arcscope.analysis import report
    from arcscope.analysis.attention import knockout, knockout_sweep

    cfg = make_config(KnockoutConfig, cfg, settings)
    if cfg.sweep not in (None, "layers", "heads", "cells"):
        raise AnalysisError(f"sweep {cfg.sweep!r}: expected layers, heads or cells")
    loaded = load_model_for(cfg, loaded)
    subject = load_subject(cfg, loaded)
    metric = metric_of(cfg)
    layers, heads = parse_ints(cfg.layers, "layers"), parse_ints(cfg.heads, "heads")
    res = knockout(subject, from_=cfg.source, to=cfg.target, layers=layers, heads=heads, metric=metric)
    header = _header(subject, cfg, loaded, metric.label)
    sections = [
        report.section(
            f"Knockout {cfg.source} -> {cfg.target}",
            report.table(
                [
                    {
                        "metric before": res.before,
                        "metric after": res.after,
                        "change": res.delta,
                        "cells changed": len(res.changed),
                    }
                ]
            ),
            report.answer_compare(
                res.grid_before, res.grid_after, title="answer before vs after the knockout", label="after"
            ),
        )
    ]
    data = {"knockout": res.to_json()}
    tables = {"knockout": res.to_table()}
    if cfg.sweep:
        sw = knockout_sweep(
            subject,
            from_=cfg.source,
            to=cfg.target,
            over=cfg.sweep,
            layers=layers,
            heads=heads,
            metric=metric,
            progress=progress,
        )
        if cfg.sweep == "heads":
            m = sw.matrix()
            block = report.heatmap(
                m, x_label="head", y_label="layer", value_label="metric change", scale="diverging"
            )
        elif cfg.sweep == "cells":
            block = report.heat_grids(
                subject.grids(), sw.grids(), value_label="metric change", scale="diverging"
            )
        else:
            block = report.line_plot(sw.layer, {"metric change": sw.delta}, x_label="layer", y_label="change")
        sections.append(report.section(f"Knockout per {cfg.sweep[:-1]}", block))
        data["sweep"] = sw.to_json()
        tables["sweep"] = sw.to_table()
    paths = _finish(cfg, f"Attention knockout, {subject.task_id}", header, sections, data, tables)
    return res, paths


def run_patch(
    cfg: PatchConfig | dict | None = None,
    *,
    loaded: Any = None,
    progress: ProgressFn | None = None,
    **settings,
):
    """`arcscope analyze patch`: exact and/or attribution patching, clean -> corrupted, layers x grid cells
    (and layers x heads with ``heads``); with both methods, their agreement."""
    from arcscope.analysis import report
    from arcscope.analysis.corrupt import corrupt_subject
    from arcscope.analysis.patching import agreement, attribution_patching, head_sweep, patch_sweep

    cfg = make_config(PatchConfig, cfg, settings)
    if is_reasoning_model(loaded if loaded is not None else cfg.model):
        from arcscope.analysis.run_reasoning import reasoning_patch

        return reasoning_patch(cfg, loaded=loaded, progress=progress)
    loaded = load_model_for(cfg, loaded)
    clean = load_subject(cfg, loaded)
    bad = corrupt_subject(clean, cfg.corruption, seed=cfg.seed, source=cfg.tasks)
    metric = metric_of(cfg)
    header = _header(clean, cfg, loaded, metric.label)
    results: dict[str, Any] = {}
    if cfg.method in ("exact", "both"):
        results["exact"] = patch_sweep(
            clean,
            bad,
            metric=metric,
            sites=cfg.site,
            positions=cfg.positions,
            batch_size=cfg.batch_size,
            progress=progress,
        )
    if cfg.method in ("attribution", "both"):
        results["attribution"] = attribution_patching(
            clean, bad, metric=metric, sites=cfg.site, positions=cfg.positions
        )
    if cfg.heads:
        results["heads"] = head_sweep(clean, bad, metric=metric, batch_size=cfg.batch_size, progress=progress)
        if cfg.method in ("attribution", "both"):
            results["heads_attribution"] = attribution_patching(clean, bad, metric=metric, heads=True)
    first = results.get("exact") or results["attribution"]
    sections = [
        report.section(
            "The corruption",
            report.table(
                [
                    {
                        "corruption": first.corruption,
                        "clean metric": first.clean_metric,
                        "corrupted metric": first.corrupt_metric,
                    }
                ]
            ),
            report.answer_compare(
                np.asarray(clean.task.test[clean.test_index].output),
                bad.predicted_grid(),
                title="true answer vs the corrupted prompt's answer (teacher-forced)",
                label="corrupted",
            ),
        )
    ]
    grids = clean.grids()
    for name in ("exact", "attribution"):
        r = results.get(name)
        if r is None:
            continue
        sections.append(
            report.section(
                f"{name} patching: effect per layer and grid cell",
                report.heat_grids(
                    r.grids or grids,
                    r.grid_maps(),
                    layer_labels=r.sites,
                    value_label="effect (1 = clean restored)",
                    scale="diverging",
                ),
                report.heatmap(
                    r.effect,
                    [str(x) for x in r.layers],
                    r.labels,
                    x_label="position",
                    y_label="layer",
                    value_label="effect",
                    scale="diverging",
                ),
                report.table(r.top(10), columns=["layer", "label", "effect", "raw"], title="largest effects"),
                note=f"{r.metric}; the slider picks the layer (it opens at the strongest); {r.direction}",
            )
        )
    data: dict[str, Any] = {name: r.to_json() for name, r in results.items()}
    if "exact" in results and "attribution" in results:
        ag = agreement(results["exact"], results["attribution"])
        data["agreement"] = {
            "pearson": ag.pearson,
            "spearman": ag.spearman,
            "top_k_overlap": ag.top_k_overlap,
            "k": ag.k,
            "n": ag.n,
        }
        sections.append(report.section("Attribution vs exact patching", report.table([data["agreement"]])))
    for name in ("heads", "heads_attribution"):
        r = results.get(name)
        if r is not None:
            sections.append(
                report.section(
                    f"{'exact' if name == 'heads' else 'attribution'} patching per head",
                    report.heatmap(
                        r.effect,
                        [str(x) for x in r.layers],
                        [str(h) for h in (r.heads or [])],
                        x_label="head",
                        y_label="layer",
                        value_label="effect",
                        scale="diverging",
                    ),
                )
            )
    tables = {name: r.to_table() for name, r in results.items()}
    if cfg.sae:
        from arcscope.analysis.patching import sae_patch
        from arcscope.sae import load_sae

        sp = sae_patch(
            clean,
            bad,
            load_sae(cfg.sae),
            mode=cfg.sae_mode,
            latents=parse_ints(cfg.latents, "latents"),
            metric=metric,
            batch_size=cfg.batch_size,
            progress=progress,
        )
        top = sp.top(20)
        sections.append(
            report.section(
                f"SAE latents at {sp.hook} ({sp.mode})",
                report.table(top, title="latents with the largest effect on the answer"),
                note=f"{len(sp.latents)} latents edited one at a time; effect 1 = the clean metric restored",
            )
        )
        data["sae"] = sp.to_json()
        tables["sae"] = sp.to_table()
    paths = _finish(cfg, f"Activation patching, {clean.task_id}", header, sections, data, tables)
    return first, paths


def run_steer(
    cfg: SteerConfig | dict | None = None,
    *,
    loaded: Any = None,
    progress: ProgressFn | None = None,
    **settings,
):
    """`arcscope analyze steer`: a dose-response sweep of a saved or store-built vector at ``cfg.hook``."""
    from arcscope.analysis import report
    from arcscope.analysis.steering import dose_response

    cfg = make_config(SteerConfig, cfg, settings)
    loaded = load_model_for(cfg, loaded)
    subject = load_subject(cfg, loaded)
    emit(progress, "steer", 0, 1)
    if cfg.vector:
        from arcscope.analysis.vectors import load_vector

        vec = load_vector(cfg.vector)
    elif cfg.store:
        from arcscope.analysis.vectors import mean_difference

        vec = mean_difference(
            cfg.store, cfg.hook, parse_conditions(cfg.group_a), parse_conditions(cfg.group_b)
        )
    else:
        raise AnalysisError("steer needs a vector: --vector FILE.safetensors, or --store to build one")
    metric = metric_of(cfg)
    res = dose_response(
        subject, vec, hook=cfg.hook, doses=cfg.doses, scale=cfg.scale, at=cfg.at, metric=metric
    )
    emit(progress, "steer", 1, 1)
    header = _header(subject, cfg, loaded, metric.label)
    sections = [
        report.line_plot(
            res.doses,
            {"metric": res.value},
            x_label=f"dose ({cfg.scale} units)",
            y_label=metric.kind,
            title="Dose-response: answer metric",
        ),
        report.line_plot(
            res.doses,
            {"KL to unsteered": res.kl, "top-1 changed": res.top1_changed},
            x_label=f"dose ({cfg.scale} units)",
            y_label="shift",
            title="Output distribution shift",
        ),
        report.table(
            [
                {
                    "dose": float(d),
                    "metric": float(v),
                    "cells changed": int(c),
                    "cells wrong": int(w),
                    "KL": float(k),
                }
                for d, v, c, w, k in zip(
                    res.doses, res.value, res.changed_cells, res.wrong_cells, res.kl, strict=True
                )
            ],
            title=f"Vector: {res.vector_description}; first dose changing the answer: {res.first_change}; "
            f"half effect at dose {res.half_effect}",
        ),
    ]
    paths = _finish(
        cfg, f"Steering at {res.hook}", header, sections, res.to_json(), {"doses": res.to_table()}
    )
    return res, paths


def parse_conditions(spec: str | None) -> dict[str, Any] | None:
    """'role=test_input,colour=3|4' -> {"role": "test_input", "colour": [3, 4]} (numbers become ints)."""
    if spec is None or not str(spec).strip():
        return None
    out: dict[str, Any] = {}
    for part in str(spec).split(","):
        if "=" not in part:
            raise AnalysisError(f"group {spec!r}: expected column=value pairs separated by commas")
        k, v = (x.strip() for x in part.split("=", 1))
        vals = [int(x) if x.lstrip("-").isdigit() else x for x in v.split("|")]
        out[k] = vals if len(vals) > 1 else vals[0]
    return out


def run_probe(cfg: ProbeRunConfig | dict | None = None, *, progress: ProgressFn | None = None, **settings):
    """`arcscope analyze probe`: a linear probe per hook of a store; accuracy per layer with a held-out split."""
    from arcscope.analysis import report
    from arcscope.analysis.probes import probe_layers

    cfg = make_config(ProbeRunConfig, cfg, settings)
    if cfg.model is not None and is_reasoning_model(cfg.model):
        from arcscope.analysis.run_reasoning import reasoning_probe

        return reasoning_probe(cfg, progress=progress)
    res = probe_layers(cfg.store, cfg.hooks, cfg.target, config=cfg, progress=progress)
    x = np.arange(len(res.hooks))
    sections = [
        report.line_plot(
            x,
            {
                "held-out accuracy": res.accuracy,
                "train accuracy": res.train_accuracy,
                "majority baseline": np.full(len(x), res.baseline),
                "chance": np.full(len(x), res.chance),
            },
            x_label="hook (in layer order)",
            y_label="accuracy",
            y_range=(0.0, 1.0),
            title=f"Probe for {res.target} per layer",
        ),
        report.table(
            [
                {"hook": h, "held-out accuracy": float(a), "train accuracy": float(t)}
                for h, a, t in zip(res.hooks, res.accuracy, res.train_accuracy, strict=True)
            ],
            title=f"{res.n_train} train / {res.n_test} test rows ({res.split} split); {res.note or ''}",
        ),
    ]
    header = {"task": None, "model": None, "metric": f"accuracy of {res.target}", "settings": cfg.to_dict()}
    paths = _finish(
        cfg, f"Probes for {res.target}", header, sections, res.to_json(), {"probes": res.to_table()}
    )
    return res, paths


__all__ = [
    "load_model_for",
    "load_subject",
    "metric_of",
    "parse_conditions",
    "pick_task",
    "run_attention",
    "run_knockout",
    "run_lens",
    "run_patch",
    "run_probe",
    "run_steer",
    "run_train_lens",
    "AttentionConfig",
    "KnockoutConfig",
    "LensConfig",
    "PatchConfig",
    "parse_ints",
]
