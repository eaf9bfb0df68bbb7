"""arcscope.analysis probes and steering vectors: planted features are found, random labels give chance,
colours come from the real grids, mean differences recover planted offsets, vectors round-trip, bad input
is named."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from arcscope.analysis.probes import (
    ProbeConfig,
    ProbeError,
    fit_probe,
    group_split,
    match_hooks,
    probe_layers,
    target_labels,
)
from arcscope.analysis.vectors import (
    SteeringError,
    SteeringVector,
    load_vector,
    mean_difference,
    probe_direction,
    sae_direction,
    save_vector,
)
from arcscope.store import StoreWriter, open_store
from tests.conftest import tiny_job

D, N_TASKS, PER_TASK, K = 24, 8, 250, 4
H0, H1 = "blocks.0.hook_resid_post", "blocks.1.hook_resid_post"


pytestmark = pytest.mark.usefixtures("one_thread")


def _index(task: np.ndarray, rng: np.random.Generator, **extra) -> dict:
    n = len(task)
    return {
        "task_id": [f"task{t}" for t in task],
        "augmentation": ["id"] * n,
        "pair": np.zeros(n, dtype=np.int64),
        "role": [("train_input", "test_input")[i % 2] for i in range(n)],
        "row": rng.integers(0, 5, n),
        "col": rng.integers(0, 5, n),
        "token_id": np.zeros(n, dtype=np.int64),
        "position": np.arange(n),
        "sample": task.astype(np.int64),
        **extra,
    }


def planted_store(path, n_tasks: int = N_TASKS, seed: int = 0) -> dict:
    """H1 = noise + 3 * dirs[feature]; H0 = noise only; ``noise_label`` is unrelated to both."""
    rng = np.random.default_rng(seed)
    n = n_tasks * PER_TASK
    task = np.repeat(np.arange(n_tasks), PER_TASK)
    feature = rng.integers(0, K, n)
    noise_label = rng.integers(0, K, n)
    group = rng.integers(0, 2, n)
    g = torch.Generator().manual_seed(seed)
    dirs = torch.randn(K, D, generator=g)
    dirs /= dirs.norm(dim=1, keepdim=True)
    offset = torch.randn(D, generator=g)
    x0 = torch.randn(n, D, generator=g)
    x1 = torch.randn(n, D, generator=g) + 3.0 * dirs[torch.from_numpy(feature)]
    x1 = x1 + offset * torch.from_numpy(group).float()[:, None]
    idx = _index(task, rng, feature=feature, noise_label=noise_label, group=group)
    with StoreWriter(path, shard_rows=700) as w:
        w.add({H0: x0, H1: x1}, idx)
    return {"dirs": dirs, "offset": offset, "feature": feature, "group": group}


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    path = tmp_path_factory.mktemp("planted") / "store"
    return path, planted_store(path)


# ---- probes --------------------------------------------------------------------------------------------


def test_planted_feature_is_recovered_on_held_out_tasks(planted):
    path, truth = planted
    res = probe_layers(str(path), "blocks.*.hook_resid_post", "feature")
    assert res.hooks == [H0, H1] and res.split == "tasks" and res.note == ""
    assert res.n_classes == K and res.classes == list(range(K)) and res.chance == pytest.approx(1 / K)
    assert res.n_train + res.n_test == N_TASKS * PER_TASK
    assert res.n_test_tasks >= 1 and res.n_train_tasks >= 1
    assert res.n_test_tasks + res.n_train_tasks == N_TASKS  # whole tasks on one side or the other
    assert res.accuracy[1] > 0.9 and res.best == H1
    assert abs(res.accuracy[0] - res.chance) < 0.1  # the noise-only hook carries nothing
    assert res.baseline < 0.4
    # the learned class directions point along the planted ones
    w = res.weights[H1]
    assert w.shape == (K, D)
    cos = torch.nn.functional.cosine_similarity(w, truth["dirs"] - truth["dirs"].mean(0), dim=1)
    assert float(cos.min()) > 0.8
    table = res.to_table()
    assert table.num_rows == 2 and table.column("layer").to_pylist() == [0, 1]
    assert table.column("accuracy").to_pylist()[1] == pytest.approx(res.accuracy[1])
    info = json.loads(json.dumps(res.to_json(), allow_nan=False))
    assert info["hooks"] == [H0, H1] and info["n_test"] == res.n_test and info["split"] == "tasks"


def test_random_labels_give_chance(planted):
    path, _ = planted
    res = probe_layers(path, [H1], "noise_label")
    p = 1 / K
    tol = 4 * math.sqrt(p * (1 - p) / res.n_test) + 0.02
    assert abs(res.accuracy[0] - p) < tol, (res.accuracy[0], tol)
    assert abs(res.baseline - p) < tol


def test_same_seed_same_result_and_max_rows(planted):
    path, _ = planted
    a = probe_layers(path, [H1], "feature", max_rows=600, seed=3)
    b = probe_layers(path, [H1], "feature", config=ProbeConfig(max_rows=600, seed=3))
    assert a.n_train + a.n_test == 600
    assert a.accuracy[0] == b.accuracy[0] and torch.equal(a.weights[H1], b.weights[H1])


def test_label_array_and_where(planted):
    path, truth = planted
    store = open_store(path)
    res = probe_layers(store, H1, labels=truth["feature"])
    assert res.target == "labels" and res.accuracy[0] > 0.9
    # negative labels are dropped; `where` restricts the rows (labels then align with those rows)
    lab = np.where(truth["feature"] == 0, -1, truth["feature"])
    res = probe_layers(store, H1, labels=lab)
    assert res.classes == [1, 2, 3]
    sub = store.index(filter={"role": "test_input"})
    res = probe_layers(store, H1, "feature", where={"role": "test_input"})
    assert res.n_train + res.n_test == sub.num_rows
    # role is a target too: it is not linearly present here, so near its majority baseline
    res = probe_layers(store, H1, "role")
    assert res.classes == ["test_input", "train_input"]


def test_one_task_falls_back_to_a_row_split(tmp_path):
    planted_store(tmp_path / "one", n_tasks=1)
    res = probe_layers(tmp_path / "one", H1, "feature")
    assert res.split == "rows" and "one task" in res.note
    assert res.n_test == round(0.25 * PER_TASK) and res.accuracy[0] > 0.85


def test_group_split_keeps_tasks_whole():
    groups = np.repeat([f"t{i}" for i in range(10)], [5, 50, 7, 30, 12, 9, 40, 3, 20, 8])
    test = group_split(groups, 0.25, seed=1)
    for g in np.unique(groups):
        assert len(set(test[groups == g])) == 1
    assert 0 < test.sum() < len(groups)
    assert test.any() and (~test).any()
    assert np.array_equal(test, group_split(groups, 0.25, seed=1))


def test_fit_probe_on_arrays():
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 3, (600,), generator=g)
    x = torch.randn(600, 8, generator=g) * 5 + 10  # offset and scale: standardisation handles them
    x[:, 0] = 100 + 4 * y + 0.5 * torch.randn(600, generator=g)
    test = np.arange(600) >= 450
    p = fit_probe(x, y.numpy(), test, 3)
    assert p.test_accuracy > 0.9 and p.weight.shape == (3, 8)
    assert float((p.predict(x[test]) == y[test]).float().mean()) == pytest.approx(p.test_accuracy)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_probes_fit_on_the_gpu_agree_with_the_cpu(planted):
    path, _ = planted
    cpu = probe_layers(path, [H1], "feature", device="cpu")
    gpu = probe_layers(path, [H1], "feature", device="cuda")
    assert gpu.weights[H1].device.type == "cpu"
    assert abs(gpu.accuracy[0] - cpu.accuracy[0]) < 0.01
    assert float(torch.nn.functional.cosine_similarity(gpu.weights[H1], cpu.weights[H1]).min()) > 0.99


def test_probe_result_finds_hooks_by_name_or_layer(planted):
    path, _ = planted
    res = probe_layers(path, "blocks.{0,1}.hook_resid_post", "feature", max_rows=500)
    assert res.hook_name(1) == H1 and res.hook_name(H0) == H0
    assert res.probe(1).weight.shape == (K, D) and res.probe(H1).test_accuracy == res.accuracy[1]
    with pytest.raises(ProbeError, match="layer 4 names 0 of its hooks"):
        res.hook_name(4)


# ---- colours from a real capture job -------------------------------------------------------------------


@pytest.fixture(scope="module")
def captured(tmp_path_factory, tiny_model_dir):
    from arcscope.engine import run_job
    from arcscope.models import load_model

    out = tmp_path_factory.mktemp("captured") / "store"
    loaded = load_model(tiny_model_dir, device="cpu", dtype="float32")
    run_job(tiny_job(out, tiny_model_dir, augmentations=2), loaded=loaded)
    return open_store(out), loaded.tokenizer


def test_colour_labels_are_the_grid_colours(captured):
    from arcscope.tasks import load
    from arcscope.tasks.augment import parse_augmentation

    store, tok = captured
    idx = store.index()
    lab = target_labels(store, "colour", idx)
    colour = np.array([lab.classes[c] if c >= 0 else -1 for c in lab.codes])
    # every stored row is a cell whose token is the digit of its colour (augmentation applied)
    digits = np.array([int(tok.convert_ids_to_tokens(int(t)).strip("Ġ")) for t in idx["token_id"].to_numpy()])
    assert (colour >= 0).all() and np.array_equal(colour, digits)
    augs = set(idx["augmentation"].to_pylist())
    assert len(augs) >= 2 and "id" in augs
    # output_colour: an input cell gets the same cell of its pair's output grid
    out = target_labels(store, "output_colour", idx)
    tasks = {t.id: t for t in load(store.meta["task_source"])}
    roles = np.asarray(idx["role"].to_pylist())
    checked = 0
    for i in np.nonzero(roles == "train_input")[0][::97][:20]:
        r = {k: idx[k][int(i)].as_py() for k in ("task_id", "augmentation", "pair", "row", "col")}
        grid = np.asarray(
            parse_augmentation(r["augmentation"]).apply(tasks[r["task_id"]]).train[r["pair"]].output
        )
        if r["row"] < grid.shape[0] and r["col"] < grid.shape[1]:
            assert out.classes[out.codes[i]] == grid[r["row"], r["col"]]
            checked += 1
        else:
            assert out.codes[i] == -1
    assert checked > 0
    assert (out.codes[np.isin(roles, ["train_output", "answer"])] == -1).all()


def test_colour_probe_end_to_end(captured):
    store, _ = captured
    res = probe_layers(store, "blocks.*.hook_resid_post", "colour", max_rows=3000)
    assert res.split == "tasks" and res.n_test_tasks >= 1 and res.n_train_tasks >= 1
    assert len(res.hooks) == 2
    # the residual stream holds the token, and so the colour, of a cell
    assert res.accuracy[0] > max(0.8, res.baseline)
    v = probe_direction(res, 0, 3)
    assert v.hook == res.hooks[0] and v.norm == pytest.approx(1.0) and v.kind == "probe"
    # a group condition on colour works for mean differences too
    mv = mean_difference(store, res.hooks[0], {"colour": 3}, {"colour": [0, 1, 2]})
    assert mv.meta["n_a"] > 0 and mv.meta["n_b"] > 0 and mv.d == store.hooks[res.hooks[0]][0]


# ---- steering vectors ----------------------------------------------------------------------------------


def test_mean_difference_recovers_a_planted_offset(planted):
    path, truth = planted
    v = mean_difference(path, H1, {"group": 1}, {"group": 0})
    assert isinstance(v, SteeringVector) and v.hook == H1 and v.vector.dtype == torch.float32
    assert v.vector.shape == (D,)
    n1 = int(truth["group"].sum())
    assert v.meta["n_a"] == n1 and v.meta["n_b"] == len(truth["group"]) - n1
    assert torch.allclose(v.vector, truth["offset"], atol=0.3)
    assert float(torch.nn.functional.cosine_similarity(v.vector, truth["offset"], dim=0)) > 0.98
    # group_b None: every other row; lists of values; unit vectors; capped groups
    assert torch.allclose(mean_difference(path, H1, {"group": 1}).vector, v.vector)
    u = mean_difference(path, H1, {"group": [1]}, {"group": 0}, normalize=True, max_rows=400)
    assert u.norm == pytest.approx(1.0) and u.meta["n_a"] == 400 and u.meta["norm"] > 0
    # the noise-only hook has no offset
    assert mean_difference(path, H0, {"group": 1}, {"group": 0}).norm < 0.5


def test_vectors_round_trip(planted, tmp_path):
    from arcscope.sae import SAEConfig, SparseAutoencoder

    path, _ = planted
    res = probe_layers(path, [H1], "feature")
    sae = SparseAutoencoder(SAEConfig(d_in=D, d_sae=40, arch="topk", k=4, hook=H1))
    with torch.no_grad():
        sae.W_dec.copy_(torch.randn(40, D))
    s = sae_direction(sae, 7)
    assert s.hook == H1 and torch.equal(s.vector, sae.W_dec[7].detach()) and s.kind == "sae"
    assert sae_direction(sae, 7, normalize=True).norm == pytest.approx(1.0)
    vecs = [mean_difference(path, H1, {"group": 1}, {"group": 0}), probe_direction(res, H1, 2), s]
    for i, v in enumerate(vecs):
        f = save_vector(v, tmp_path / f"v{i}.safetensors")
        back = load_vector(f)
        assert back.hook == v.hook and back.description == v.description and back.kind == v.kind
        assert torch.equal(back.vector, v.vector) and back.meta == v.meta
        assert back.norm == pytest.approx(v.norm)
    # the file is plain safetensors: no pickle, the metadata readable as JSON
    from safetensors import safe_open

    with safe_open(str(tmp_path / "v1.safetensors"), framework="pt") as f:
        meta = json.loads(f.metadata()["arcscope.steering_vector"])
    assert meta["hook"] == H1 and meta["kind"] == "probe" and meta["meta"]["class"] == 2


# ---- errors --------------------------------------------------------------------------------------------


def test_bad_input_is_named(planted, tmp_path):
    path, _ = planted
    with pytest.raises(ProbeError, match="unknown probe target 'nope'.*feature"):
        probe_layers(path, [H1], "nope")
    with pytest.raises(ProbeError, match=r"hook 'blocks.7.hook_resid_post' is not in the store"):
        probe_layers(path, ["blocks.7.hook_resid_post"], "feature")
    with pytest.raises(ProbeError, match="hook 'blocks.\\*.mlp_out' is not in the store"):
        match_hooks(open_store(path), "blocks.*.mlp_out")
    with pytest.raises(ProbeError, match="labels must be one value per index row"):
        probe_layers(path, [H1], labels=np.zeros(3))
    with pytest.raises(ProbeError, match="test_fraction"):
        probe_layers(path, [H1], "feature", test_fraction=1.5)
    with pytest.raises(ProbeError, match="does not name its task source"):
        probe_layers(path, [H1], "colour")
    with pytest.raises(SteeringError, match="group_b .*'group': 5.* matches no rows"):
        mean_difference(path, H1, {"group": 1}, {"group": 5})
    with pytest.raises(SteeringError, match="hook 'nope' is not in the store"):
        mean_difference(path, "nope", {"group": 1})
    with pytest.raises(SteeringError, match="filters on 'colur'"):
        mean_difference(path, H1, {"colur": 1})
    res = probe_layers(path, [H1], "feature", max_rows=400)
    with pytest.raises(ProbeError, match="has no class 9"):
        probe_direction(res, H1, 9)
    with pytest.raises(ProbeError, match="no hook"):
        probe_direction(res, "blocks.5.attn_out", 1)
    from arcscope.sae import SAEConfig, SparseAutoencoder

    with pytest.raises(SteeringError, match="latent 40 is out of range"):
        sae_direction(SparseAutoencoder(SAEConfig(d_in=D, d_sae=40, arch="topk", k=4, hook=H1)), 40)
    (tmp_path / "x.safetensors").write_bytes(b"not a file")
    with pytest.raises(SteeringError, match="x.safetensors"):
        load_vector(tmp_path / "x.safetensors")
