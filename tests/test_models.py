"""Model loading: HF folders, errors, the bundled default (slow)."""

import os

import pytest
import torch

from arcscope.errors import ModelError
from arcscope.models import load_model, pick_dtype, resolve_model_path
from tests.conftest import tiny_arc_lm


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory, arc_tokenizer):
    folder = tmp_path_factory.mktemp("tiny")
    tiny_arc_lm(max_positions=256).save_pretrained(folder, safe_serialization=True)
    arc_tokenizer.save_pretrained(folder)
    return folder


def test_load_hf_folder(tiny_folder):
    m = load_model(tiny_folder, device="cpu", dtype="float32")
    assert m.identity()["n_layers"] == 2 and m.tokenizer.pad_token_id is not None
    ids = m.tokenizer("1 2 3", return_tensors="pt").input_ids
    with torch.no_grad():
        assert m.model(ids).logits.shape[-1] == 49152
    assert m.model.config._attn_implementation == "sdpa"


def test_bad_model_paths(tmp_path):
    with pytest.raises(ModelError, match="model not found"):
        resolve_model_path(tmp_path / "nope")
    (tmp_path / "w.bin").write_bytes(b"x")
    with pytest.raises(ModelError, match="not a .gguf file"):
        resolve_model_path(tmp_path / "w.bin")
    with pytest.raises(ModelError, match="no config.json"):
        resolve_model_path(tmp_path)
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF not really")
    with pytest.raises(ModelError, match="broken.gguf"):
        load_model(bad, device="cpu")
    with pytest.raises(ModelError, match="unknown dtype"):
        pick_dtype("float8", "cpu")
    with pytest.raises(ModelError, match="unknown device"):
        load_model(tmp_path / "w.bin", device="tpu")


@pytest.mark.slow
def test_bundled_model_loads_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    m = load_model(device="cpu")
    ident = m.identity()
    assert ident["name"] == "SmolLM2-135M-Instruct" and ident["n_layers"] == 30 and ident["d_model"] == 576
    ids = m.tokenizer("The capital of France is", return_tensors="pt").input_ids
    out = m.model.generate(ids, max_new_tokens=3, do_sample=False)
    assert "Paris" in m.tokenizer.decode(out[0, ids.shape[1] :])


# ---- device and dtype: one policy ----------------------------------------------------------------------


def test_resolve_device_choices_and_clear_errors(monkeypatch):
    import torch

    from arcscope.errors import ArcscopeError
    from arcscope.models import DeviceError, resolve_device
    from arcscope.models import device as dev_mod

    assert resolve_device("cpu") == torch.device("cpu") and resolve_device(torch.device("cpu")).type == "cpu"
    assert issubclass(DeviceError, ModelError) and issubclass(DeviceError, ArcscopeError)
    for bad in ("tpu", "mps:1", "cuda:x", "cpux"):
        with pytest.raises(DeviceError, match="unknown device .*use auto, cpu, cuda, cuda:N, mps"):
            resolve_device(bad)
    # no GPU and no MPS here (simulated where the machine has one): auto is the CPU, and asking fails clearly
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(dev_mod, "mps_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu") and resolve_device(None).type == "cpu"
    for want in ("cuda", "cuda:1"):
        with pytest.raises(DeviceError, match=f"device '{want}' asked for, but torch sees no CUDA device"):
            resolve_device(want)
    with pytest.raises(DeviceError, match="'mps' asked for, but MPS is not available"):
        resolve_device("mps")
    # with MPS: auto takes it, unless the caller's kernels cannot run there (then it says why)
    monkeypatch.setattr(dev_mod, "mps_available", lambda: True)
    assert resolve_device("auto") == torch.device("mps") and resolve_device("mps").type == "mps"
    assert resolve_device("auto", no_mps="sparse kernels need CPU or CUDA").type == "cpu"
    with pytest.raises(DeviceError, match="'mps' cannot be used here: sparse kernels need CPU or CUDA"):
        resolve_device("mps", no_mps="sparse kernels need CPU or CUDA")


def test_resolve_device_picks_the_local_gpu(monkeypatch):
    import torch

    from arcscope.models import DeviceError, resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("auto") == torch.device("cuda")
    assert resolve_device("auto", local_rank=1) == torch.device("cuda", 1)
    assert resolve_device("cuda", local_rank=1) == torch.device("cuda", 1)
    assert resolve_device("cuda:0", local_rank=1) == torch.device("cuda", 0)
    with pytest.raises(DeviceError, match="'cuda:2' asked for, but this machine has 2 CUDA device"):
        resolve_device("cuda:2")


def test_resolve_dtype_and_context_length():
    from types import SimpleNamespace

    import torch

    from arcscope.models import DeviceError, LoadedModel, resolve_dtype

    assert resolve_dtype("auto", "cpu") == torch.float32 and resolve_dtype("auto", "mps") == torch.float32
    assert (
        resolve_dtype("bfloat16", "cpu") == torch.bfloat16 and resolve_dtype(torch.float16) == torch.float16
    )
    with pytest.raises(DeviceError, match="unknown dtype 'float8'"):
        resolve_dtype("float8")

    def loaded(**cfg):
        return LoadedModel(SimpleNamespace(config=SimpleNamespace(**cfg)), None, "m", "p", "cpu", "float32")

    assert loaded(max_position_embeddings=4096).context_length == 4096
    assert loaded().context_length == 2048 and loaded(max_position_embeddings=None).context_length == 2048


# ---- the GGUF conversion cache -------------------------------------------------------------------------


def test_gguf_cache_key_follows_content_of_the_same_size(tmp_path, monkeypatch):
    from arcscope.models import loading

    monkeypatch.setenv("ARCSCOPE_CACHE", str(tmp_path / "cache"))
    gguf = tmp_path / "m.gguf"
    data = bytearray(os.urandom(3 << 20))
    gguf.write_bytes(bytes(data))
    first = loading._converted_dir(gguf)
    st = gguf.stat()
    data[len(data) // 2] ^= 0xFF  # same size, same first and last MiB, mtime put back as it was
    gguf.write_bytes(bytes(data))
    os.utime(gguf, ns=(st.st_atime_ns, st.st_mtime_ns))
    second = loading._converted_dir(gguf)
    assert second != first and second.name.startswith("m-")
    assert loading.gguf_sha256(gguf) == loading.file_sha256(gguf)
    # An unchanged file is not hashed again: its hash is remembered beside the cache.
    calls = []
    monkeypatch.setattr(loading, "file_sha256", lambda p: calls.append(p) or "0" * 64)
    assert loading._converted_dir(gguf) == second and calls == []
    table = (tmp_path / "cache" / "models" / loading.HASH_CACHE).read_text()
    assert str(gguf.resolve()) in table
