"""Shared test fixtures: small random tasks built from a seed; a real S3 endpoint (moto) on 127.0.0.1."""

from __future__ import annotations

import fsspec
import numpy as np
import pytest

from arcscope.tasks import Pair, Task, TaskSet


def random_task(
    task_id: str = "t0",
    *,
    seed: int = 0,
    n_train: int = 2,
    n_test: int = 1,
    size: tuple[int, int] | None = None,
    test_outputs: bool = True,
) -> Task:
    """A valid task of random grids; ``size`` fixes every grid's shape, else each is drawn in 1..6."""
    rng = np.random.default_rng(seed)

    def grid():
        h, w = size or tuple(int(x) for x in rng.integers(1, 7, size=2))
        g = rng.integers(0, 10, size=(h, w)).astype(np.uint8)
        g.setflags(write=False)
        return g

    train = tuple(Pair(grid(), grid()) for _ in range(n_train))
    test = tuple(Pair(grid(), grid() if test_outputs else None) for _ in range(n_test))
    return Task(task_id, train, test)


@pytest.fixture
def make_task():
    """Factory fixture: ``make_task("id", seed=1, n_train=3, test_outputs=False)``."""
    return random_task


@pytest.fixture
def small_taskset() -> TaskSet:
    """Five random tasks, the last with two test pairs whose outputs are unknown."""
    tasks = [random_task(f"task{i}", seed=i) for i in range(4)]
    tasks.append(random_task("task4", seed=4, n_test=2, test_outputs=False))
    return TaskSet(tasks, name="small")


BUCKET = "arcscope-test"


def s3_options(endpoint: str) -> dict:
    """fsspec storage options for the test S3 endpoint (dummy credentials)."""
    return {
        "key": "testing",
        "secret": "testing",
        "client_kwargs": {"endpoint_url": endpoint, "region_name": "us-west-2"},
    }


@pytest.fixture(scope="session")
def s3_endpoint():
    """A real S3 API (moto) on 127.0.0.1 for the whole session, with one bucket."""
    moto_server = pytest.importorskip("moto.server")
    pytest.importorskip("s3fs")
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    fs = fsspec.filesystem("s3", **s3_options(endpoint), skip_instance_cache=True)
    fs.mkdir(BUCKET)
    yield endpoint
    server.stop()


def hand_task(task_id: str, train: list, test: list) -> Task:
    """A task written out by hand: ``train`` and ``test`` are lists of (input rows, output rows or None)."""
    from arcscope.tasks import as_grid

    def pair(p):
        return Pair(as_grid(p[0]), None if p[1] is None else as_grid(p[1]))

    return Task(task_id, tuple(pair(p) for p in train), tuple(pair(p) for p in test))


@pytest.fixture(scope="module")
def one_thread():
    """Torch on one thread for a module (``pytestmark = pytest.mark.usefixtures("one_thread")``): on tiny
    tensors extra threads only wait for each other on a small, shared CI machine."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


TINY_LAYERS, TINY_D, TINY_VOCAB = 3, 32, 101
ARC_VOCAB = 49152
"""The bundled (SmolLM2) tokenizer's vocabulary size: a model of it can be given real ARC prompts."""


def _lm_classes(family: str):
    """(config class, model class) of a causal-LM family: llama, qwen2 or mistral."""
    import transformers

    names = {"llama": "Llama", "qwen2": "Qwen2", "mistral": "Mistral"}[family]
    return getattr(transformers, f"{names}Config"), getattr(transformers, f"{names}ForCausalLM")


def tiny_arc_lm(
    n_layers: int = 2,
    family: str = "llama",
    seed: int = 0,
    *,
    init: float = 0.02,
    max_positions: int = 8192,
    tie: bool = False,
):
    """A seeded tiny causal LM (d=32, 4 heads, 2 KV heads) with the bundled tokenizer's vocabulary, so
    Subjects and capture jobs can be built for it with the real tokenizer (see ``arc_tokenizer``)."""
    import torch

    cfg_cls, model_cls = _lm_classes(family)
    cfg = cfg_cls(
        vocab_size=ARC_VOCAB,
        hidden_size=TINY_D,
        intermediate_size=64,
        num_hidden_layers=n_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=max_positions,
        initializer_range=init,
        tie_word_embeddings=tie,
    )
    torch.manual_seed(seed)
    return model_cls(cfg).eval()


@pytest.fixture(scope="session")
def arc_tokenizer():
    """The bundled model's real tokenizer (offline), loaded once."""
    from arcscope.models import load_tokenizer

    return load_tokenizer()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, arc_tokenizer):
    """A 2-layer Llama (d=32) with the bundled model's real tokenizer, saved as an HF folder."""
    folder = tmp_path_factory.mktemp("tiny-llama")
    tiny_arc_lm(max_positions=4096, tie=True).save_pretrained(folder, safe_serialization=True)
    arc_tokenizer.save_pretrained(folder)
    return folder


def tiny_job(out, model_dir, /, **settings):
    """A validated prefill capture job: resid_post of every layer at the cells of 3 arc1:evaluation tasks,
    by the model in ``model_dir``, into ``out``; ``settings`` override any of these."""
    from arcscope.engine import JobConfig

    base = dict(
        tasks="arc1:evaluation",
        model=str(model_dir),
        hooks=["blocks.*.hook_resid_post"],
        positions=["cells"],
        mode="prefill",
        max_tasks=3,
        out=str(out),
        max_batch=2,
    )
    return JobConfig(**{**base, **settings}).validate()


def tiny_causal_lm(family: str = "llama", dtype=None):
    """A seeded 3-layer, d=32, vocab-101 causal LM of the given family (llama, qwen2, mistral), SDPA attention."""
    import torch

    cfg_cls, model_cls = _lm_classes(family)
    cfg = cfg_cls(
        vocab_size=TINY_VOCAB,
        hidden_size=TINY_D,
        intermediate_size=64,
        num_hidden_layers=TINY_LAYERS,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
        tie_word_embeddings=False,
    )
    cfg._attn_implementation = "sdpa"
    torch.manual_seed(0)
    model = model_cls(cfg).eval()
    return model.to(dtype) if dtype is not None else model
