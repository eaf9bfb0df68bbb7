"""arcscope.sae: architectures learn, sparse gradients are exact, seeded + resumable training, SAELens files, bad input."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from arcscope.errors import StoreError
from arcscope.sae import (
    SAEConfig,
    SAEError,
    SparseAutoencoder,
    TrainConfig,
    load_sae,
    save_sae,
    train_sae,
)
from arcscope.store import StoreWriter, open_store

D, M, ACTIVE = 32, 64, 3


pytestmark = pytest.mark.usefixtures("one_thread")


def _index(n: int) -> dict:
    z = np.zeros(n, dtype=np.int64)
    return {
        "task_id": ["t"] * n,
        "augmentation": ["id"] * n,
        "pair": z,
        "role": ["train_input"] * n,
        "row": z,
        "col": z,
        "token_id": z,
        "position": z,
        "sample": z,
    }


def synthetic_store(path: Path, n: int = 12000, seed: int = 0, shard_rows: int = 2048) -> torch.Tensor:
    """Rows that are sums of ACTIVE of M unit directions with positive weights, plus an offset."""
    g = torch.Generator().manual_seed(seed)
    dictionary = torch.randn(M, D, generator=g)
    dictionary /= dictionary.norm(dim=1, keepdim=True)
    idx = torch.stack([torch.randperm(M, generator=g)[:ACTIVE] for _ in range(n)])
    coef = torch.rand(n, ACTIVE, generator=g) * 2 + 0.5
    x = torch.zeros(n, M).scatter_(1, idx, coef) @ dictionary + 0.3
    with StoreWriter(path, shard_rows=shard_rows) as w:
        w.add({"h": x}, _index(n))
    return dictionary


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> tuple[Path, torch.Tensor]:
    path = tmp_path_factory.mktemp("synth") / "store"
    return path, synthetic_store(path)


def cfg(**kw) -> TrainConfig:
    base = dict(
        arch="topk",
        latents=128,
        k=ACTIVE,
        batch_size=256,
        epochs=2,
        lr=3e-3,
        lr_warmup=20,
        shuffle_buffer=4096,
        init_rows=1024,
        dead_tokens=20000,
        log_every=10,
        sparsity_warmup=50,
        checkpoint_every=0,
        prefetch=2,
    )
    base.update(kw)
    return TrainConfig(**base)


def fvu(sae: SparseAutoencoder, x: torch.Tensor) -> float:
    with torch.no_grad():
        y = sae(x)
    return float((y - x).pow(2).sum() / (x - x.mean(0)).pow(2).sum())


# ---- learning ------------------------------------------------------------------------------------------


def test_topk_recovers_the_true_dictionary(synth, tmp_path):
    store, dictionary = synth
    res = train_sae(cfg(), tmp_path / "sae", store=str(store), hook="h")
    assert res.complete and res.steps == res.total_steps == math.ceil(2 * 12000 / 256)
    sae = load_sae(tmp_path / "sae")
    x = open_store(store).read("h")[:3000]
    assert fvu(sae, x) < 0.15
    with torch.no_grad():
        l0 = (sae.encode(x) > 0).sum(1)
    assert int(l0.max()) == ACTIVE and float(l0.float().mean()) > ACTIVE - 0.05
    w = sae.W_dec / sae.W_dec.norm(dim=1, keepdim=True)
    best = (dictionary @ w.T).max(1).values
    assert float((best > 0.9).float().mean()) > 0.9
    # the saved SAE reads raw activations: the training-time input scale is folded into its weights
    assert json.loads((tmp_path / "sae" / "training.json").read_text())["input_scale"] != 1.0
    assert (tmp_path / "sae" / "sparsity.safetensors").is_file()
    lines = (tmp_path / "sae" / "metrics.jsonl").read_text().splitlines()
    assert json.loads(lines[-1])["fvu"] < json.loads(lines[0])["fvu"]


@pytest.mark.parametrize(
    "arch,extra,max_l0",
    [
        ("relu", {"l1_coefficient": 1.0}, 60),
        ("batchtopk", {}, ACTIVE + 1.5),
        ("jumprelu", {"l0_coefficient": 0.02}, 30),
    ],
)
def test_other_architectures_learn_sparse_codes(synth, tmp_path, arch, extra, max_l0):
    store, _ = synth
    train_sae(cfg(arch=arch, **extra), tmp_path / arch, store=str(store), hook="h")
    sae = load_sae(tmp_path / arch)
    assert sae.cfg.arch == arch
    x = open_store(store).read("h")[:3000]
    assert fvu(sae, x) < 0.3
    with torch.no_grad():
        l0 = float((sae.encode(x) > 0).sum(1).float().mean())
    assert 0 < l0 < max_l0


def test_sparse_gradients_equal_dense_autograd():
    torch.manual_seed(0)
    n, d, S, k = 20, 8, 24, 3
    for arch in ("topk", "batchtopk"):
        sae = SparseAutoencoder(SAEConfig(d_in=d, d_sae=S, arch=arch, k=k))
        sae.initialize(torch.Generator().manual_seed(1), b_dec=torch.randn(d) * 0.1)
        with torch.no_grad():
            sae.b_enc.normal_(0, 0.1)
        x = torch.randn(n, d)
        dead = torch.tensor([1, 5, 7, 20])
        out = sae.training_loss(x, dead=dead, aux_k=2, aux_coefficient=0.5)
        out.loss.backward()
        sparse_grads = {name: p.grad.clone() for name, p in sae.named_parameters()}
        sae.zero_grad()
        # the same loss written densely: autograd through a [n, S] activation matrix
        x_c = x - sae.b_dec
        pre = x_c @ sae.W_enc_t.T + sae.b_enc
        if arch == "topk":
            v, i = pre.topk(k, dim=1)
            acts = torch.zeros_like(pre).scatter(1, i, torch.relu(v))
        else:
            flat = pre.reshape(-1)
            v, i = flat.topk(k * n)
            acts = torch.zeros_like(flat).scatter(0, i, torch.relu(v)).reshape(n, S)
        recon = acts @ sae.W_dec + sae.b_dec
        tv = (x - x.mean(0)).pow(2).sum()
        loss = (recon - x).pow(2).sum() / tv
        masked = torch.full_like(pre, -torch.inf)
        masked[:, dead] = pre[:, dead]
        av, ai = masked.topk(2, dim=1)
        aux_acts = torch.zeros_like(pre).scatter(1, ai, torch.relu(av))
        e_hat = aux_acts @ sae.W_dec
        aux = (e_hat - (x - recon).detach()).pow(2).sum() / tv
        (loss + 0.5 * min(len(dead) / 2, 1.0) * aux).backward()
        assert torch.allclose(loss, out.fvu, atol=1e-6)
        for name, p in sae.named_parameters():
            assert torch.allclose(sparse_grads[name], p.grad, atol=1e-5), (arch, name)


# ---- seeds, checkpoints, resume ------------------------------------------------------------------------


def test_same_seed_same_bytes_and_exact_resume(synth, tmp_path):
    store, _ = synth
    c = cfg(epochs=1, checkpoint_every=10, aux_coefficient=0.1, dead_tokens=2000)
    train_sae(c, tmp_path / "a", store=str(store), hook="h")
    train_sae(c, tmp_path / "b", store=str(store), hook="h")
    weights = "sae_weights.safetensors"
    a = (tmp_path / "a" / weights).read_bytes()
    assert a == (tmp_path / "b" / weights).read_bytes()
    # interrupted after step 25 (checkpoint written), then resumed: the very same bytes as uninterrupted
    part = train_sae(c, tmp_path / "c", store=str(store), hook="h", stop_at_step=25)
    assert not part.complete and part.steps == 25
    assert not (tmp_path / "c" / weights).exists()
    ckpts = sorted(p.name for p in (tmp_path / "c" / "checkpoints").iterdir())
    assert ckpts == ["step_00000020", "step_00000025"]  # keep_checkpoints=2
    # every checkpoint is a usable SAE on its own
    assert load_sae(tmp_path / "c" / "checkpoints" / "step_00000025").d_sae == 128
    done = train_sae(c, tmp_path / "c", store=str(store), hook="h")
    assert done.complete and done.resumed_from == 25
    assert (tmp_path / "c" / weights).read_bytes() == a
    assert not (tmp_path / "c" / "checkpoints").exists()
    steps = [json.loads(ln)["step"] for ln in (tmp_path / "c" / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps))
    # a finished run is not redone; another seed gives other weights
    again = train_sae(c, tmp_path / "c", store=str(store), hook="h")
    assert again.already_complete
    train_sae(cfg(epochs=1, seed=1), tmp_path / "d", store=str(store), hook="h")
    assert (tmp_path / "d" / weights).read_bytes() != a


def test_resume_refuses_other_settings(synth, tmp_path):
    store, _ = synth
    train_sae(cfg(epochs=1, checkpoint_every=5), tmp_path / "r", store=str(store), hook="h", stop_at_step=5)
    with pytest.raises(SAEError, match="other settings.*latents"):
        train_sae(cfg(epochs=1, checkpoint_every=5, latents=96), tmp_path / "r", store=str(store), hook="h")
    with pytest.raises(SAEError, match="unfinished run"):
        train_sae(cfg(epochs=1), tmp_path / "r", store=str(store), hook="h", resume=False)
    res = train_sae(cfg(epochs=1, latents=96), tmp_path / "r", store=str(store), hook="h", overwrite=True)
    assert res.complete and load_sae(tmp_path / "r").d_sae == 96


# ---- files: arcscope and SAELens layout ----------------------------------------------------------------


def _random_sae(arch: str, d: int = 16, S: int = 40, k: int | None = 4) -> SparseAutoencoder:
    sae = SparseAutoencoder(
        SAEConfig(d_in=d, d_sae=S, arch=arch, k=k if arch in ("topk", "batchtopk") else None)
    )
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in sae.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
        if sae.threshold is not None:
            sae.threshold.copy_(torch.rand(S, generator=g) * 0.2)
    return sae


@pytest.mark.parametrize("arch", ["relu", "topk", "batchtopk", "jumprelu"])
def test_save_load_bit_exact(tmp_path, arch):
    sae = _random_sae(arch)
    sae.cfg.hook, sae.cfg.model = "blocks.3.hook_resid_post", "tiny"
    save_sae(sae, tmp_path / "s")
    back = load_sae(tmp_path / "s")
    assert back.cfg.arch == arch and back.cfg.k == sae.cfg.k and back.cfg.hook == sae.cfg.hook
    for name, t in sae.state_dict().items():
        assert torch.equal(t, back.state_dict()[name]), name
    x = torch.randn(50, 16)
    assert torch.equal(sae(x), back(x))
    cfg_json = json.loads((tmp_path / "s" / "cfg.json").read_text())
    assert cfg_json["architecture"] == {"relu": "standard", "topk": "topk"}.get(arch, "jumprelu")
    assert cfg_json["metadata"]["hook_name"] == "blocks.3.hook_resid_post"
    assert cfg_json["metadata"]["sae_lens_version"].startswith("6.")


def test_saelens_layout_files_load(tmp_path):
    d, S = 6, 10
    g = torch.Generator().manual_seed(0)
    W_enc, W_dec = torch.randn(d, S, generator=g), torch.randn(S, d, generator=g)
    b_enc, b_dec = torch.randn(S, generator=g) * 0.1, torch.randn(d, generator=g) * 0.1
    x = torch.randn(30, d, generator=g)

    def write(name, cfg_dict, tensors):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "cfg.json").write_text(json.dumps(cfg_dict))
        save_file(tensors, str(folder / "sae_weights.safetensors"))
        return load_sae(folder)

    base = {"W_enc": W_enc, "W_dec": W_dec, "b_enc": b_enc, "b_dec": b_dec}
    # an old (pre-6) standard SAE: hook_point, activation_fn_str, boolean normalisation
    old = write(
        "old",
        {
            "d_in": d,
            "d_sae": S,
            "hook_point": "blocks.2.hook_resid_pre",
            "activation_fn_str": "relu",
            "normalize_activations": False,
            "model_name": "gpt2",
            "dtype": "float32",
        },
        base,
    )
    assert old.cfg.arch == "relu" and old.cfg.hook == "blocks.2.hook_resid_pre" and old.cfg.model == "gpt2"
    want = torch.relu((x - b_dec) @ W_enc + b_enc) @ W_dec + b_dec
    assert torch.allclose(old(x), want, atol=1e-5)
    # SAELens 6 jumprelu with apply_b_dec_to_input off and a log-parameterised threshold
    log_t = torch.randn(S, generator=g) * 0.1 - 1
    jr = write(
        "jr",
        {
            "architecture": "jumprelu",
            "d_in": d,
            "d_sae": S,
            "apply_b_dec_to_input": False,
            "metadata": {"sae_lens_version": "6.5.0", "hook_name": "blocks.0.hook_resid_post"},
        },
        {**base, "log_threshold": log_t},
    )
    pre = x @ W_enc + b_enc
    want = (torch.relu(pre) * (pre > log_t.exp())) @ W_dec + b_dec
    assert torch.allclose(jr(x), want, atol=1e-5)
    # SAELens TopK trained with rescale_acts_by_decoder_norm: norms are folded, the function is unchanged
    tk = write(
        "tk",
        {
            "architecture": "topk",
            "d_in": d,
            "d_sae": S,
            "k": 3,
            "rescale_acts_by_decoder_norm": True,
            "metadata": {"sae_lens_version": "6.1.0"},
        },
        base,
    )
    n = W_dec.norm(dim=1)
    pre = ((x - b_dec) @ W_enc + b_enc) * n
    v, i = pre.topk(3, dim=1)
    acts = torch.zeros_like(pre).scatter(1, i, torch.relu(v))
    want = (acts / n) @ W_dec + b_dec
    assert torch.allclose(tk(x), want, atol=1e-4)
    assert torch.allclose(tk.W_dec.norm(dim=1), torch.ones(S), atol=1e-5)


def test_saelens_reads_our_files(tmp_path):
    pytest.importorskip("sae_lens")
    from sae_lens import SAE

    for arch in ("relu", "topk", "jumprelu", "batchtopk"):
        ours = _random_sae(arch)
        save_sae(ours, tmp_path / arch)
        theirs = SAE.load_from_disk(str(tmp_path / arch))
        x = torch.randn(25, 16)
        with torch.no_grad():
            assert torch.allclose(theirs.encode(x), ours.encode(x), atol=1e-5), arch
            assert torch.allclose(theirs(x), ours(x), atol=1e-5), arch


# ---- bad input -----------------------------------------------------------------------------------------


def test_bad_input_is_named(synth, tmp_path):
    store, _ = synth
    with pytest.raises(StoreError, match="no hook 'blocks.9.hook_resid_post'.*'h'"):
        train_sae(cfg(), tmp_path / "x", store=str(store), hook="blocks.9.hook_resid_post")
    with pytest.raises(SAEError, match="arch 'gated'"):
        cfg(arch="gated").validate()
    with pytest.raises(SAEError, match=r"unknown setting 'latent' \(did you mean 'latents'\?\)"):
        TrainConfig().with_overrides(["latent=5"])
    assert TrainConfig().with_overrides(["k=8", "lr=1e-3", "aux_k=none"]).k == 8
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "notes.txt").write_text("x")
    with pytest.raises(SAEError, match="not empty"):
        train_sae(cfg(), tmp_path / "junk", store=str(store), hook="h")
    # an SAE whose width does not fit the hook
    from arcscope.sae.evaluate import reconstruction_metrics

    wrong = _random_sae("topk", d=16)
    wrong.cfg.hook = "h"
    with pytest.raises(SAEError, match="reads width 16.*'h'.*width 32"):
        reconstruction_metrics(wrong, open_store(store))
    with pytest.raises(SAEError, match="width 16, got width 32"):
        wrong.encode(torch.zeros(2, 32))
    # broken SAE folders
    with pytest.raises(SAEError, match="cfg.json is missing"):
        (tmp_path / "empty").mkdir()
        load_sae(tmp_path / "empty")
    save_sae(_random_sae("topk"), tmp_path / "s")
    bad = json.loads((tmp_path / "s" / "cfg.json").read_text())
    bad["d_sae"] = 41
    (tmp_path / "s" / "cfg.json").write_text(json.dumps(bad))
    with pytest.raises(SAEError, match="W_enc has shape \\[16, 40\\], expected \\[16, 41\\]"):
        load_sae(tmp_path / "s")
    bad["architecture"] = "gated"
    (tmp_path / "s" / "cfg.json").write_text(json.dumps(bad))
    with pytest.raises(SAEError, match="'gated' is not supported"):
        load_sae(tmp_path / "s")


def test_damaged_shard_stops_or_is_skipped(tmp_path):
    store = tmp_path / "store"
    synthetic_store(store, n=4096, shard_rows=1024)
    shard = store / "shards" / "00002.safetensors"
    data = bytearray(shard.read_bytes())
    data[-100] ^= 0xFF
    shard.write_bytes(bytes(data))
    c = cfg(epochs=1, batch_size=128, init_rows=256)
    with pytest.raises(StoreError, match="shards/00002.safetensors is damaged.*sha256.*on-damaged skip"):
        train_sae(c, tmp_path / "a", store=str(store), hook="h")
    res = train_sae(
        cfg(epochs=1, batch_size=128, init_rows=256, on_damaged="skip"),
        tmp_path / "b",
        store=str(store),
        hook="h",
    )
    assert res.complete and list(res.skipped_shards) == ["shards/00002.safetensors"]
    assert json.loads((tmp_path / "b" / "training.json").read_text())["skipped_shards"]
    # size-only checks still catch a truncated shard
    shard.write_bytes(bytes(data[:-10]))
    with pytest.raises(StoreError, match="00002.safetensors is damaged"):
        train_sae(
            cfg(epochs=1, batch_size=128, init_rows=256, verify="size"),
            tmp_path / "c",
            store=str(store),
            hook="h",
        )


@pytest.mark.gpu
def test_cuda_bf16_training(synth, tmp_path):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    store, _ = synth
    res = train_sae(cfg(device="cuda", dtype="auto"), tmp_path / "g", store=str(store), hook="h")
    assert res.complete
    summary = json.loads((tmp_path / "g" / "training.json").read_text())
    assert summary["autocast_bf16"] == torch.cuda.is_bf16_supported()
    x = open_store(store).read("h")[:3000]
    assert fvu(load_sae(tmp_path / "g"), x) < 0.2
