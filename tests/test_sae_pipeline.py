"""arcscope.sae with real stores and a tiny model: downstream loss, grid features, dashboards, CLI, on the fly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from arcscope.cli import app
from arcscope.sae import SAEConfig, SparseAutoencoder, TrainConfig, load_sae, save_sae, train_sae
from arcscope.sae.evaluate import evaluate
from arcscope.sae.features import GridLookup, latent_stats, rank_latents
from arcscope.store import StoreWriter, open_store
from arcscope.tasks import load
from tests.browser import dump_dom
from tests.conftest import tiny_job

HOOK = "blocks.1.hook_resid_post"


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, tiny_model_dir):
    """The shared tiny Llama (tests/conftest.py) and a store of its cell activations on 3 tasks."""
    from arcscope.engine import LocalRunner
    from arcscope.models import load_model

    root = tmp_path_factory.mktemp("sae-tiny")
    loaded = load_model(tiny_model_dir, device="cpu", dtype="float32")
    job = tiny_job(root / "store", tiny_model_dir, hooks=[HOOK], shard_rows=128)
    # three tasks, not the whole split: planning tokenizes every task it is given
    LocalRunner(job, loaded=loaded, tasks=load("arc1:evaluation", limit=3)).run()
    return root, loaded


def identity_sae(d: int, hook: str | None) -> SparseAutoencoder:
    """A ReLU SAE that reconstructs exactly: latents relu(x) and relu(-x), decoded as their difference."""
    sae = SparseAutoencoder(SAEConfig(d_in=d, d_sae=2 * d, arch="relu", hook=hook))
    eye = torch.eye(d)
    with torch.no_grad():
        sae.W_enc_t.copy_(torch.cat([eye, -eye]))
        sae.W_dec.copy_(torch.cat([eye, -eye]))
    return sae


def small_cfg(**kw) -> TrainConfig:
    base = dict(
        arch="topk",
        k=4,
        latents=64,
        batch_size=64,
        epochs=2,
        lr_warmup=5,
        shuffle_buffer=512,
        init_rows=256,
        log_every=5,
        checkpoint_every=0,
        prefetch=2,
    )
    base.update(kw)
    return TrainConfig(**base)


# ---- downstream loss -----------------------------------------------------------------------------------


def test_downstream_loss_of_exact_and_trained_saes(tiny, tmp_path):
    root, loaded = tiny
    store = open_store(root / "store")
    tasks = load("arc1:evaluation", limit=3)
    exact = evaluate(identity_sae(32, HOOK), store, model=loaded, tasks=tasks, prompts=1)
    assert exact["fvu"] < 1e-10 and exact["cosine"] > 0.9999
    ds = exact["downstream"]
    assert ds["kl_sae"] < 1e-6 and abs(ds["ce_increase"]) < 1e-4 and abs(ds["ce_recovered"] - 1) < 1e-2
    assert ds["kl_zero"] > 1e-4 and ds["positions"] == ["cells"]
    train_sae(small_cfg(), tmp_path / "sae", store=str(root / "store"), hook=HOOK)
    sae = load_sae(tmp_path / "sae")
    m = evaluate(sae, store, model=loaded, tasks=tasks, prompts=1)
    assert 0 < m["fvu"] < 1 and m["l0"] <= 4
    assert m["downstream"]["kl_sae"] > ds["kl_sae"]
    assert sum(m["density_histogram"]["counts"]) == 64
    assert m["dead_fraction"] == pytest.approx(m["density_histogram"]["counts"][0] / 64)


# ---- features on grids ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def grid_store(tmp_path_factory):
    """A store over the cells of real ARC grids whose 12 features say, exactly, what each cell is:
    one-hot colour (0..9), border cell (10) and test input (11). Latent j of an identity SAE = feature j."""
    path = tmp_path_factory.mktemp("gridstore") / "store"
    tasks = load("arc1:training", limit=3)
    rows, idx = (
        [],
        {
            k: []
            for k in (
                "task_id",
                "augmentation",
                "pair",
                "role",
                "row",
                "col",
                "token_id",
                "position",
                "sample",
            )
        },
    )
    for s, t in enumerate(tasks):
        for role, pair, grid in [("train_input", i, p.input) for i, p in enumerate(t.train)] + [
            ("test_input", 0, t.test[0].input)
        ]:
            g = np.asarray(grid)
            h, w = g.shape
            for r in range(h):
                for c in range(w):
                    f = np.zeros(12, dtype=np.float32)
                    f[g[r, c]] = 1.0
                    f[10] = float(r in (0, h - 1) or c in (0, w - 1))
                    f[11] = float(role == "test_input")
                    rows.append(f)
                    for k2, v in zip(idx, (t.id, "id", pair, role, r, c, 0, len(rows), s), strict=True):
                        idx[k2].append(v)
    with StoreWriter(path, shard_rows=500, meta={"task_source": "arc1:training"}) as wr:
        wr.add({"feat": torch.as_tensor(np.stack(rows))}, idx)
    sae = SparseAutoencoder(SAEConfig(d_in=12, d_sae=12, arch="relu", hook="feat"))
    with torch.no_grad():
        sae.W_enc_t.copy_(torch.eye(12))
        sae.W_dec.copy_(torch.eye(12))
    save_sae(sae, path.parent / "sae")
    return path, tasks, sae


def test_rank_latents_by_colour_role_and_border(grid_store):
    path, tasks, sae = grid_store
    stats = latent_stats(sae, open_store(path), top=8, batch_size=100, lookup=GridLookup(tasks))
    colours_present = {int(v) for t in tasks for p in t.train for v in np.unique(np.asarray(p.input))}
    for c in sorted(colours_present)[:4]:
        best = rank_latents(stats, colour=c, top=3)
        assert best[0]["latent"] == c and best[0]["share"] == pytest.approx(1.0)
    assert rank_latents(stats, border=True)[0]["latent"] == 10
    assert rank_latents(stats, role="test_input")[0]["latent"] == 11
    both = rank_latents(stats, role="test_input", border=True)[0]
    lat = both["latent"]
    assert both["share"] == pytest.approx(
        min(float(stats.share("role:test_input")[lat]), float(stats.share("border")[lat]))
    )
    # the top rows of a colour latent are cells of that colour
    for r in stats.top_rows[3].tolist():
        if r >= 0:
            assert stats.info.colour[r] == 3


class _Dom(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.rows: list[dict] = []
        self.canvases: list[dict] = []
        self.cards = 0

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "tr" and "data-latent" in a:
            self.rows.append(a)
        elif tag == "canvas":
            self.canvases.append(a)
        elif tag == "div" and "data-example" in a:
            self.cards += 1


def _dump(page: Path, fragment: str, profile: Path) -> _Dom:
    dom = _Dom()
    dom.feed(dump_dom(page, fragment, profile))
    return dom


@pytest.mark.browser
def test_dashboard_in_headless_chromium(grid_store, tmp_path):
    from arcscope.sae.dashboard import make_dashboard

    path, tasks, sae = grid_store
    index = make_dashboard(sae, open_store(path), tmp_path / "dash", tasks=tasks, examples=4, logits=False)
    pages = sorted(p.name for p in (tmp_path / "dash" / "latents").iterdir())
    alive = json.loads((tmp_path / "dash" / "stats.json").read_text())["alive"]
    assert len(pages) == alive and {"00010.html", "00011.html"} <= set(pages) and index.is_file()
    colour = max(int(p[:5]) for p in pages if int(p[:5]) < 10)
    dom = _dump(index, f"colour={colour}", tmp_path / "profile")
    assert dom.rows and dom.rows[0]["data-latent"] == str(colour) and float(dom.rows[0]["data-score"]) == 1.0
    assert all(float(r["data-score"]) > 0 for r in dom.rows)
    dom = _dump(index, "role=test_input", tmp_path / "profile")
    assert dom.rows[0]["data-latent"] == "11"
    page = tmp_path / "dash" / "latents" / f"{colour:05d}.html"
    shown = _dump(page, "", tmp_path / "profile")
    data = json.loads(page.read_text().split('type="application/json">')[1].split("</script>")[0])
    grids = [c for c in shown.canvases if c.get("data-rendered") == "1"]
    assert shown.cards == len(data["examples"]) == len(grids) >= 1
    for ex, cv in zip(data["examples"], grids, strict=True):
        # the top cell has the latent's colour, and exactly the cells of that colour light up
        r, c = ex["cell"]
        rows = ex["grid"].split("|")
        assert rows[r][c] == str(colour) and cv["data-top-cell"] == f"{r},{c}"
        grid = np.array([[int(ch) for ch in row] for row in rows])
        heat = np.array(ex["heat"]).reshape(grid.shape)
        assert ((heat > 0) == (grid == colour)).all()
        assert int(cv["data-heat-cells"]) == int((grid == colour).sum())


# ---- CLI -----------------------------------------------------------------------------------------------


def test_cli_train_eval_info_query_dashboard(tiny, grid_store, tmp_path):
    root, _ = tiny
    runner = CliRunner()
    out = tmp_path / "cli-sae"
    args = [
        "sae",
        "train",
        "--store",
        str(root / "store"),
        "--hook",
        HOOK,
        "-o",
        str(out),
        "--arch",
        "topk",
        "--k",
        "4",
        "--latents",
        "64",
        "--batch-size",
        "64",
        "-q",
        "lr_warmup=5",
        "init_rows=256",
        "shuffle_buffer=512",
        "log_every=5",
    ]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "steps" in res.output and (out / "sae_weights.safetensors").is_file()
    res = runner.invoke(app, args)
    assert res.exit_code == 0 and "nothing to do" in res.output
    res = runner.invoke(
        app,
        [
            "sae",
            "eval",
            str(out),
            "--store",
            str(root / "store"),
            "--no-downstream",
            "-o",
            str(tmp_path / "m.json"),
        ],
    )
    assert res.exit_code == 0, res.output
    m = json.loads((tmp_path / "m.json").read_text())
    assert m["l0"] <= 4 and "downstream" not in m
    res = runner.invoke(app, ["sae", "info", str(out), "--json"])
    assert res.exit_code == 0 and json.loads(res.output)["d_sae"] == 64
    path, tasks, _ = grid_store
    res = runner.invoke(
        app, ["sae", "query", str(path.parent / "sae"), "--store", str(path), "--colour", "2", "--json"]
    )
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)[0]["latent"] == 2
    res = runner.invoke(
        app,
        [
            "sae",
            "dashboard",
            str(path.parent / "sae"),
            "--store",
            str(path),
            "-o",
            str(tmp_path / "d"),
            "--no-logits",
            "--max-pages",
            "3",
            "-q",
        ],
    )
    assert res.exit_code == 0, res.output
    assert len(list((tmp_path / "d" / "latents").iterdir())) == 3
    res = runner.invoke(app, ["sae", "config"])
    assert res.exit_code == 0 and "aux_coefficient" in res.output


def test_cli_errors_exit_2_with_a_message(tiny, tmp_path):
    root, _ = tiny
    cmd = [
        sys.executable,
        "-m",
        "arcscope",
        "sae",
        "train",
        "--store",
        str(root / "store"),
        "--hook",
        "blocks.7.hook_resid_post",
        "-o",
        str(tmp_path / "x"),
    ]
    proc = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "300"},
    )
    assert proc.returncode == 2
    assert "no hook 'blocks.7.hook_resid_post'" in proc.stderr and "Traceback" not in proc.stderr
    runner = CliRunner()
    res = runner.invoke(
        app,
        [
            "sae",
            "train",
            "--store",
            str(root / "store"),
            "--hook",
            HOOK,
            "-o",
            str(tmp_path / "y"),
            "bogus=1",
        ],
    )
    assert res.exit_code != 0 and "bogus" in str(res.exception)


# ---- on the fly ----------------------------------------------------------------------------------------


def test_train_on_the_fly_from_a_model(tiny, tmp_path):
    from arcscope.sae import ModelSource

    root, loaded = tiny
    tasks = load("arc1:evaluation", limit=3)
    src = ModelSource(loaded, tasks, HOOK, max_tasks=2, seed=0)
    res = train_sae(small_cfg(tokens=640, init_rows=128), tmp_path / "fly", source=src)
    assert res.complete and res.steps == 10
    sae = load_sae(tmp_path / "fly")
    assert sae.cfg.hook == HOOK and sae.cfg.meta["source"]["kind"] == "model"
    x = open_store(root / "store").read(HOOK)
    with torch.no_grad():
        assert float((sae(x) - x).pow(2).sum() / (x - x.mean(0)).pow(2).sum()) < 1.0


@pytest.mark.slow
def test_two_ranks_with_torchrun_gloo(tiny, tmp_path):
    """Two CPU processes under torchrun (gloo): gradients are averaged, rank 0 writes one SAE."""
    root, _ = tiny
    torchrun = Path(sys.executable).with_name("torchrun")
    if not torchrun.exists():
        pytest.skip("torchrun not installed")
    cmd = [
        str(torchrun),
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "arcscope",
        "sae",
        "train",
        "--store",
        str(root / "store"),
        "--hook",
        HOOK,
        "-o",
        str(tmp_path / "ddp"),
        "--k",
        "4",
        "--latents",
        "64",
        "--batch-size",
        "64",
        "--device",
        "cpu",
        "-q",
        "lr_warmup=5",
        "init_rows=256",
        "shuffle_buffer=512",
        "log_every=5",
        "prefetch=0",
    ]
    proc = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "300"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((tmp_path / "ddp" / "training.json").read_text())
    assert summary["world_size"] == 2 and summary["complete"]
    x = open_store(root / "store").read(HOOK)
    with torch.no_grad():
        sae = load_sae(tmp_path / "ddp")
        assert float((sae(x) - x).pow(2).sum() / (x - x.mean(0)).pow(2).sum()) < 1.0
