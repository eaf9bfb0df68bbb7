"""The AlgZoo RNN shape M_{H,T}: a one-layer ReLU RNN (input size 1, no bias) and a linear head.

Parameter names are those of ``torch.nn.RNN`` + ``torch.nn.Linear`` (``rnn.weight_ih_l0`` [H, 1],
``rnn.weight_hh_l0`` [H, H], ``linear.weight`` [out, H]), so AlgZoo ``.pth`` state dicts load as they are.
The analysis side works on numpy copies of the weights in float64, batched over many inputs.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn

from arcscope.files import atomic_open, atomic_write_json
from arcscope.rnn.errors import CheckpointError, InputShapeError, RegionOverflowError
from arcscope.rnn.tasks import Task, get_task
from arcscope.rnn.zoo import zoo_model_path, zoo_path

FORMAT = "arcscope.rnn/1"
KEYS = ("rnn.weight_ih_l0", "rnn.weight_hh_l0", "linear.weight")
BIAS_KEYS = ("rnn.bias_ih_l0", "rnn.bias_hh_l0", "linear.bias")
CHUNK = 1 << 13  # inputs per vectorised block: small enough that a block's state stays in cache


class Weights(NamedTuple):
    """Numpy weights: ``w_ih`` [H], ``w_hh`` [H, H], ``w_out`` [out, H]."""

    w_ih: np.ndarray
    w_hh: np.ndarray
    w_out: np.ndarray


class ReluRNN(nn.Module):
    """M_{H,T}: h_t = relu(W_ih x_t + W_hh h_{t-1}), h_{-1} = 0; output = W_out h_{T-1}."""

    def __init__(
        self,
        hidden_size: int,
        output_size: int,
        *,
        seq_len: int | None = None,
        task: str | None = None,
        card: dict | None = None,
    ):
        super().__init__()
        if hidden_size < 1 or output_size < 1:
            raise CheckpointError(
                f"hidden_size and output_size must be >= 1, got {hidden_size}, {output_size}"
            )
        self.hidden_size = hidden_size
        self.output_size = output_size
        self.seq_len = seq_len
        self.task = get_task(task).name if task else None
        self.card: dict = dict(card or {})
        self.rnn = nn.RNN(1, hidden_size, nonlinearity="relu", bias=False, batch_first=True)
        self.linear = nn.Linear(hidden_size, output_size, bias=False)

    @classmethod
    def from_weights(
        cls,
        w_ih: Any,
        w_hh: Any,
        w_out: Any,
        *,
        seq_len: int | None = None,
        task: str | None = None,
        card: dict | None = None,
    ) -> ReluRNN:
        """A model with the given weights (array-likes of shapes [H] or [H, 1], [H, H], [out, H])."""
        sd = {
            "rnn.weight_ih_l0": torch.as_tensor(np.asarray(w_ih, dtype=np.float32).reshape(-1, 1)),
            "rnn.weight_hh_l0": torch.as_tensor(np.asarray(w_hh, dtype=np.float32)),
            "linear.weight": torch.as_tensor(np.asarray(w_out, dtype=np.float32)),
        }
        return model_from_state_dict(sd, source="weights", seq_len=seq_len, task=task, card=card)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Outputs ``[batch, out]`` for inputs ``[batch, T]``."""
        _, h = self.rnn(x.unsqueeze(-1))
        return self.linear(h[0])

    @property
    def name(self) -> str:
        """The card's name, else a description such as ``M_4,3``."""
        return self.card.get("name") or f"M_{self.hidden_size},{self.seq_len if self.seq_len else '?'}"

    @property
    def task_spec(self) -> Task | None:
        """The model's task, when known."""
        return get_task(self.task) if self.task else None

    @property
    def n_params(self) -> int:
        """Number of weights."""
        return sum(p.numel() for p in self.parameters())

    def weights(self, dtype: type = np.float64) -> Weights:
        """The weights as numpy arrays of ``dtype`` (float64 by default: exact copies of float32 values)."""
        return Weights(
            self.rnn.weight_ih_l0.detach().cpu().numpy().reshape(-1).astype(dtype),
            self.rnn.weight_hh_l0.detach().cpu().numpy().astype(dtype),
            self.linear.weight.detach().cpu().numpy().astype(dtype),
        )

    def state_dict_numpy(self) -> dict[str, np.ndarray]:
        """The three weight tensors as float32 numpy arrays under their PyTorch names."""
        return {k: v.detach().cpu().numpy().astype(np.float32) for k, v in self.state_dict().items()}

    def require_seq_len(self, seq_len: int | None = None) -> int:
        """``seq_len`` if given, else the model's own, else a clear error."""
        if seq_len and self.seq_len and seq_len != self.seq_len:
            raise InputShapeError(f"{self.name} takes sequences of length {self.seq_len}, not {seq_len}")
        t = seq_len or self.seq_len
        if not t:
            raise InputShapeError(
                f"{self.name}: the sequence length is unknown for this model (a scalar-output checkpoint "
                "without a card); pass seq_len= (CLI: --seq-len)"
            )
        return int(t)


# ----------------------------------------------------------------------------------------------------------
# Vectorised numpy forward
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Trace:
    """A traced forward pass: pre-activations and hidden states ``[n, T, H]`` and outputs ``[n, out]``."""

    pre: np.ndarray
    hidden: np.ndarray
    output: np.ndarray


def as_inputs(model: ReluRNN, inputs: Any, *, dtype: type = np.float64, what: str = "inputs") -> np.ndarray:
    """Inputs as a 2-D array ``[n, T]`` (a 1-D sequence becomes one row), checked against the model."""
    x = np.asarray(inputs, dtype=dtype)
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2:
        raise InputShapeError(f"{what}: expected shape [n, T], got {list(x.shape)}")
    if model.seq_len and x.shape[1] != model.seq_len:
        raise InputShapeError(
            f"{what}: sequences have length {x.shape[1]} but {model.name} takes length {model.seq_len} (T)"
        )
    if x.shape[1] < 1:
        raise InputShapeError(f"{what}: sequences must have length >= 1")
    if not np.isfinite(x).all():
        raise InputShapeError(f"{what}: contain NaN or infinite values")
    return x


def _zero_mask(model: ReluRNN, zero: Sequence[int]) -> list[int]:
    out = []
    for j in zero:
        if not 0 <= int(j) < model.hidden_size:
            raise InputShapeError(f"neuron {j} does not exist in {model.name} (H={model.hidden_size})")
        out.append(int(j))
    return sorted(set(out))


def _overflow(model: ReluRNN, steps: int) -> RegionOverflowError:
    rho = float(np.max(np.abs(np.linalg.eigvals(model.weights().w_hh))))
    return RegionOverflowError(
        f"{model.name}: hidden state overflowed within {steps} steps (W_hh spectral radius {rho:.3g}; "
        "a non-contractive recurrent matrix grows without bound): use shorter sequences or float64"
    )


@contextmanager
def _one_thread() -> Iterator[None]:
    # Matrices of H <= a few dozen gain nothing from BLAS threads, and on a busy machine oversubscribed
    # threads make each small product ten times slower; so the scan runs on one thread and restores the rest.
    n = torch.get_num_threads()
    if n != 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if n != 1:
            torch.set_num_threads(n)


_TORCH_DTYPES = {np.dtype(np.float64): torch.float64, np.dtype(np.float32): torch.float32}


def scan(
    model: ReluRNN,
    x: np.ndarray,
    *,
    zero: Sequence[int] = (),
    dtype: type = np.float64,
    on_step: Callable[[int, int, torch.Tensor, torch.Tensor], None] | None = None,
) -> np.ndarray:
    """Run the recurrence over ``x`` ``[n, T]`` in blocks of CHUNK inputs; return the final hidden states.

    ``on_step(start, t, pre, hidden)`` sees each block's pre-activations and hidden states (torch views,
    valid only during the call). ``zero`` holds neurons at 0 after every step.
    """
    tdt = _TORCH_DTYPES.get(np.dtype(dtype))
    if tdt is None:
        raise InputShapeError(f"dtype must be float32 or float64, got {np.dtype(dtype).name}")
    hid = model.hidden_size
    n, steps = x.shape
    w = model.weights(dtype)
    # [h, x_t] @ [[W_hh^T], [W_ih]]: the input term rides in the same product as the recurrence.
    w_aug = torch.from_numpy(np.vstack([w.w_hh.T, w.w_ih[None, :]]))
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=dtype))
    zeroed = _zero_mask(model, zero)
    final = np.empty((n, hid), dtype=dtype)
    with _one_thread():
        buf = torch.empty((min(CHUNK, max(n, 1)), hid + 1), dtype=tdt)
        pre = torch.empty((len(buf), hid), dtype=tdt)
        for s in range(0, n, CHUNK):
            xc = xt[s : s + CHUNK]
            c = len(xc)
            b, p = buf[:c], pre[:c]
            for t in range(steps):
                if t == 0:  # h_{-1} = 0: the first step is the input term alone
                    torch.mul(xc[:, :1], w_aug[hid], out=p)
                else:
                    b[:, hid] = xc[:, t]
                    torch.matmul(b, w_aug, out=p)
                torch.clamp_min(p, 0, out=b[:, :hid])
                if zeroed:
                    b[:, zeroed] = 0
                if on_step is not None:
                    on_step(s, t, p, b[:, :hid])
            final[s : s + c] = b[:, :hid].numpy()
    if not np.isfinite(final).all():
        raise _overflow(model, steps)
    return final


def forward(model: ReluRNN, inputs: Any, *, zero: Sequence[int] = (), dtype: type = np.float64) -> np.ndarray:
    """Outputs ``[n, out]``; ``zero`` lists neurons whose hidden state is held at 0 at every step (ablation)."""
    x = as_inputs(model, inputs, dtype=dtype)
    return scan(model, x, zero=zero, dtype=dtype) @ model.weights(dtype).w_out.T


def trace(model: ReluRNN, inputs: Any, *, zero: Sequence[int] = (), dtype: type = np.float64) -> Trace:
    """Forward pass keeping every step's pre-activations and hidden states (memory: n*T*H values each)."""
    x = as_inputs(model, inputs, dtype=dtype)
    n, steps = x.shape
    pre = np.empty((n, steps, model.hidden_size), dtype=dtype)
    hidden = np.empty_like(pre)

    def keep(s: int, t: int, p: torch.Tensor, h: torch.Tensor) -> None:
        pre[s : s + len(p), t] = p.numpy()
        hidden[s : s + len(p), t] = h.numpy()

    final = scan(model, x, zero=zero, dtype=dtype, on_step=keep)
    return Trace(pre, hidden, final @ model.weights(dtype).w_out.T)


def evaluate(model: ReluRNN, inputs: Any, targets: Any, *, task: str | Task | None = None) -> float:
    """The task's metric (accuracy, or RMSE for median) of the model on ``inputs``."""
    t = get_task(task) if task else model.task_spec
    if t is None:
        raise CheckpointError(f"{model.name}: the task is unknown; pass task= (CLI: --task)")
    return t.score(forward(model, inputs), np.asarray(targets))


# ----------------------------------------------------------------------------------------------------------
# Checkpoints
# ----------------------------------------------------------------------------------------------------------


def card_path(path: str | Path) -> Path:
    """Where the JSON card of checkpoint ``path`` lives: next to it, with a ``.json`` suffix."""
    return Path(path).with_suffix(".json")


def model_from_state_dict(
    sd: dict[str, Any],
    *,
    source: str,
    seq_len: int | None = None,
    task: str | None = None,
    card: dict | None = None,
) -> ReluRNN:
    """Build a model from a state dict, checking keys, shapes and values; ``source`` names it in errors."""
    missing = [k for k in KEYS if k not in sd]
    if missing:
        found = ", ".join(sorted(sd)) or "nothing"
        raise CheckpointError(
            f"{source}: missing key(s) {', '.join(missing)}; an AlgZoo RNN checkpoint holds "
            f"{', '.join(KEYS)} (found: {found})"
        )
    for k in BIAS_KEYS:
        if k in sd and bool(torch.as_tensor(sd[k]).abs().max() > 0):
            raise CheckpointError(
                f"{source}: {k} is non-zero; arcscope.rnn models have no bias (AlgZoo's bias=False shape)"
            )
    extra = sorted(set(sd) - set(KEYS) - set(BIAS_KEYS))
    if extra:
        raise CheckpointError(
            f"{source}: unexpected key(s) {', '.join(extra[:6])}{' ...' if len(extra) > 6 else ''}; "
            "only a one-layer RNN with a linear head (rnn.*_l0, linear.weight) is supported"
        )
    tensors = {}
    for k in KEYS:
        v = sd[k]
        if not isinstance(v, torch.Tensor):
            v = torch.as_tensor(np.asarray(v))
        if not v.is_floating_point():
            raise CheckpointError(f"{source}: {k} has dtype {v.dtype}; weights must be floating point")
        if not bool(torch.isfinite(v).all()):
            raise CheckpointError(f"{source}: {k} contains NaN or infinite values")
        tensors[k] = v.detach().to(torch.float32)
    ih, hh, out = (tensors[k] for k in KEYS)
    if ih.ndim != 2 or ih.shape[1] != 1:
        raise CheckpointError(f"{source}: rnn.weight_ih_l0 has shape {list(ih.shape)}, expected [H, 1]")
    h = ih.shape[0]
    if list(hh.shape) != [h, h]:
        raise CheckpointError(
            f"{source}: rnn.weight_hh_l0 has shape {list(hh.shape)}, expected [{h}, {h}] "
            f"(H={h} from rnn.weight_ih_l0)"
        )
    if out.ndim != 2 or out.shape[1] != h:
        raise CheckpointError(
            f"{source}: linear.weight has shape {list(out.shape)}, expected [out, {h}] (H={h})"
        )
    n_out = out.shape[0]
    card = dict(card or {})
    task = task or card.get("task")
    spec = get_task(task) if task else None
    seq_len = (
        seq_len
        or card.get("seq_len")
        or (n_out if n_out > 1 or (spec and spec.kind == "classification") else None)
    )
    if spec is not None and seq_len:
        spec.check_seq_len(int(seq_len))
        if spec.output_size(int(seq_len)) != n_out:
            raise CheckpointError(
                f"{source}: linear.weight has {n_out} output(s) but task {spec.name} at T={seq_len} needs "
                f"{spec.output_size(int(seq_len))}"
            )
    if seq_len and n_out > 1 and n_out != int(seq_len):
        raise CheckpointError(
            f"{source}: linear.weight has {n_out} outputs but seq_len is {seq_len}; a classification model "
            "has one output per position"
        )
    model = ReluRNN(h, n_out, seq_len=int(seq_len) if seq_len else None, task=task, card=card)
    with torch.no_grad():
        model.rnn.weight_ih_l0.copy_(ih)
        model.rnn.weight_hh_l0.copy_(hh)
        model.linear.weight.copy_(out)
    return model


def _read_card(path: Path) -> dict:
    cp = card_path(path)
    if not cp.exists():
        return {}
    try:
        card = json.loads(cp.read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{cp}: the model card is not valid JSON ({e})") from e
    if not isinstance(card, dict):
        raise CheckpointError(f"{cp}: the model card must be a JSON object")
    return card


def load(path: str | Path, *, seq_len: int | None = None, task: str | None = None) -> ReluRNN:
    """Load a model from safetensors or an AlgZoo ``.pth`` state dict (``weights_only=True``), or a zoo name.

    The sequence length and task come from the arguments, else the JSON card next to the file, else the
    safetensors metadata; a classification model's T is its output width.
    """
    p = Path(path)
    if not p.exists():
        zp = zoo_path(str(path))
        if zp is None:
            raise CheckpointError(
                f"{path}: no such file, and not a zoo model name (see `arcscope rnn zoo` / arcscope.rnn.zoo())"
            )
        p = zp
    if p.is_dir():
        raise CheckpointError(f"{p}: is a folder; pass a .safetensors or .pth file")
    card = _read_card(p)
    suffix = p.suffix.lower()
    if suffix == ".safetensors":
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(p), framework="pt") as f:
                meta = f.metadata() or {}
                sd = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open has no __iter__
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(f"{p}: not a readable safetensors file ({e})") from e
        if not card and meta.get("format") == FORMAT:
            card = {k: meta[k] for k in ("task", "name") if meta.get(k)}
            if meta.get("seq_len"):
                card["seq_len"] = int(meta["seq_len"])
    elif suffix in (".pth", ".pt"):
        try:
            obj = torch.load(str(p), map_location="cpu", weights_only=True)
        except Exception as e:  # weights_only refusals raise UnpicklingError; any failure is a bad file
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise CheckpointError(
                f"{p}: cannot be read as a weights-only PyTorch state dict ({first}); "
                "arcscope never unpickles arbitrary objects"
            ) from e
        if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
            obj = obj["state_dict"]
        if not isinstance(obj, dict):
            raise CheckpointError(
                f"{p}: holds a {type(obj).__name__}, expected a state dict (name -> tensor)"
            )
        sd = obj
    else:
        raise CheckpointError(
            f"{p}: unknown checkpoint type {suffix or '(none)'}; expected .safetensors or .pth"
        )
    return model_from_state_dict(sd, source=str(p), seq_len=seq_len, task=task, card=card)


def load_zoo(task: str, hidden_size: int, seq_len: int) -> ReluRNN:
    """Load the bundled model for ``task`` at H = ``hidden_size``, T = ``seq_len``."""
    return load(zoo_model_path(task, hidden_size, seq_len))


def _write_safetensors(path: Path, tensors: dict[str, np.ndarray], metadata: dict[str, str]) -> None:
    """Write a safetensors file with a sorted header: the library's writer orders metadata at random."""
    header: dict[str, Any] = {"__metadata__": dict(sorted(metadata.items()))}
    offset = 0
    blobs = []
    for name in sorted(tensors):
        arr = np.ascontiguousarray(tensors[name], dtype="<f4")
        data = arr.tobytes()
        header[name] = {
            "dtype": "F32",
            "shape": list(arr.shape),
            "data_offsets": [offset, offset + len(data)],
        }
        offset += len(data)
        blobs.append(data)
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)  # the format pads the header to 8-byte alignment with spaces
    with atomic_open(path, "wb") as f:
        f.write(len(head).to_bytes(8, "little"))
        f.write(head)
        for data in blobs:
            f.write(data)


def save(model: ReluRNN, path: str | Path, card: dict | None = None) -> Path:
    """Write the weights as safetensors (same seed, same bytes) and, when there is one, the JSON card."""
    p = Path(path)
    if p.suffix != ".safetensors":
        raise CheckpointError(f"{p}: checkpoints are written as .safetensors")
    p.parent.mkdir(parents=True, exist_ok=True)
    meta = {"format": FORMAT, "hidden_size": str(model.hidden_size), "output_size": str(model.output_size)}
    card = dict(card if card is not None else model.card)
    if model.task:
        meta["task"] = model.task
    if model.seq_len:
        meta["seq_len"] = str(model.seq_len)
    if card.get("name"):
        meta["name"] = str(card["name"])
    _write_safetensors(p, model.state_dict_numpy(), meta)
    if card:
        atomic_write_json(card_path(p), card, indent=2, newline=True)
    model.card = card
    return p
