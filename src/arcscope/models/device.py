"""Device and dtype choice, the one policy for the whole library.

Every device setting in arcscope (models, capture jobs, SAE training, HRM/TRM, the DSL's torch backend)
takes ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps`` and goes through :func:`resolve_device`; every
dtype setting takes ``auto`` or a float name and goes through :func:`resolve_dtype`. torch is imported on
first call, so importing this module stays light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from arcscope.errors import ModelError

if TYPE_CHECKING:
    import torch

DEVICE_CHOICES = ("auto", "cpu", "cuda", "cuda:N", "mps")
"""What a device setting may say."""
DTYPE_CHOICES = ("auto", "float32", "bfloat16", "float16", "float64")
"""What a dtype setting may say."""


class DeviceError(ModelError, ValueError):
    """A device or dtype is unknown, or not available on this machine."""


def mps_available() -> bool:
    """Whether torch can run on Apple's Metal (MPS) backend here."""
    import torch

    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def resolve_device(
    spec: str | torch.device | None = "auto",
    *,
    local_rank: int | None = None,
    no_mps: str | None = None,
) -> torch.device:
    """The torch device for a setting: ``auto`` is CUDA, else MPS, else CPU; the others are checked.

    ``local_rank`` picks the GPU of a torchrun process for ``auto`` and ``cuda``. A caller whose kernels cannot
    run on MPS passes the reason as ``no_mps``: ``auto`` then skips MPS and ``mps`` is refused with it.
    """
    import torch

    if isinstance(spec, torch.device):
        spec = str(spec)
    spec = "auto" if spec is None else str(spec).strip()
    if spec == "auto":
        if torch.cuda.is_available():
            return _cuda(local_rank)
        if no_mps is None and mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(spec)
    except (RuntimeError, ValueError):
        dev = None
    if dev is None or dev.type not in ("cpu", "cuda", "mps") or (dev.type != "cuda" and dev.index):
        raise DeviceError(f"unknown device {spec!r}: use {', '.join(DEVICE_CHOICES)}")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(
                f"device {spec!r} asked for, but torch sees no CUDA device here; use device auto or cpu"
            )
        if dev.index is None:
            return _cuda(local_rank)
        if dev.index >= torch.cuda.device_count():
            raise DeviceError(
                f"device {spec!r} asked for, but this machine has {torch.cuda.device_count()} CUDA "
                f"device(s) (cuda:0..cuda:{torch.cuda.device_count() - 1})"
            )
        return dev
    if dev.type == "mps":
        if no_mps is not None:
            raise DeviceError(f"device 'mps' cannot be used here: {no_mps}; use device auto, cpu or cuda")
        if not mps_available():
            raise DeviceError("device 'mps' asked for, but MPS is not available here; use device auto or cpu")
    return torch.device(dev.type)


def _cuda(local_rank: int | None) -> torch.device:
    import torch

    # A bare "cuda" means torch's current device; under torchrun each process names its own GPU.
    return torch.device("cuda") if local_rank is None else torch.device("cuda", local_rank)


def resolve_dtype(spec: str | torch.dtype, device: str | torch.device | None = None) -> torch.dtype:
    """The torch dtype for a setting: ``auto`` is bfloat16 on a CUDA device that has it, float32 elsewhere."""
    import torch

    if isinstance(spec, torch.dtype):
        return spec
    if spec == "auto":
        dev = torch.device(device) if device is not None else torch.device("cpu")
        # Without a GPU here (planning for one, e.g. a config check) a CUDA device is assumed to have bf16.
        if dev.type == "cuda" and (not torch.cuda.is_available() or torch.cuda.is_bf16_supported()):
            return torch.bfloat16
        return torch.float32
    table = {
        "float32": torch.float32,
        "bfloat16": torch.bfloat16,
        "float16": torch.float16,
        "float64": torch.float64,
    }
    if spec not in table:
        raise DeviceError(f"unknown dtype {spec!r}: use {', '.join(DTYPE_CHOICES)}")
    return table[spec]
