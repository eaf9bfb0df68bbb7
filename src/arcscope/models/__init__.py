"""Load causal LMs: local HF folder, GGUF file, or the bundled SmolLM2-135M-Instruct; device and dtype."""

from arcscope.models.device import (
    DEVICE_CHOICES,
    DTYPE_CHOICES,
    DeviceError,
    mps_available,
    resolve_device,
    resolve_dtype,
)
from arcscope.models.loading import (
    BUNDLED_NAME,
    LoadedModel,
    bundled_gguf_path,
    cache_dir,
    convert_gguf,
    file_sha256,
    load_model,
    load_model_skeleton,
    load_tokenizer,
    resolve_model_path,
)

pick_dtype = resolve_dtype
"""The older name of :func:`resolve_dtype`, kept for callers written against it."""

__all__ = [
    "BUNDLED_NAME",
    "DEVICE_CHOICES",
    "DTYPE_CHOICES",
    "DeviceError",
    "LoadedModel",
    "bundled_gguf_path",
    "cache_dir",
    "convert_gguf",
    "file_sha256",
    "load_model",
    "load_model_skeleton",
    "load_tokenizer",
    "mps_available",
    "pick_dtype",
    "resolve_device",
    "resolve_dtype",
    "resolve_model_path",
]
