"""A tiny Llama whose weights are set by hand so that each answer cell copies one input cell through one head.

The circuit, with every other component switched off:

* embeddings: every token has a constant ``bias`` dimension (1); digit token ``c`` also has 1 on input
  colour dimension ``c``, every other token 1 on a ``filler`` dimension instead, so all tokens have the same
  norm and RMSNorm scales them alike;
* every MLP writes nothing (``down_proj = 0``) and every head's ``o_proj`` block is zero except that of head
  ``head`` in layer ``layer``, so the residual stream is the embedding until that head writes;
* that head's query and key read only the ``bias`` dimension and are placed in the rotary pairs so that,
  after RoPE, the score between query position m and key position n is ``S * sum_i cos((m - n - offset)
  theta_i)``: maximal at ``m - n == offset`` and, with ``S`` large, a near one-hot softmax there;
* its value reads the input colour dimensions and its output writes them into output colour dimensions;
* the unembedding maps output colour ``c`` to the token of digit ``c`` (every other token's logit stays 0).

So the token predicted at position m is the colour of the digit at position ``m - offset``. With the
identity task of :func:`copy_task` and the default prompt, every answer cell is predicted ``offset`` = 20
tokens after the same cell of the test input (see :func:`copy_offset`), so the model solves the task by
copying, and only head ``head`` of layer ``layer`` reads the test input. The other heads get random query
and key weights (their patterns are diffuse, so attention maps have something to rank against) but write
nothing.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from arcscope.tasks import Pair, Task

COLOUR_IN = 0  # dims 0..9: the colour of the token at this position
COLOUR_OUT = 10  # dims 10..19: the colour the copying head brings here
BIAS = 20  # 1 for every token: what the copying head's query and key read
FILLER = 21  # 1 for every non-digit token, so every embedding has the same norm


def digit_ids(tokenizer) -> list[int]:
    """Token id of each digit '0'..'9' (each is one token in the SmolLM2 vocabulary)."""
    ids = [tokenizer.convert_tokens_to_ids(str(c)) for c in range(10)]
    if any(i is None or i == tokenizer.unk_token_id for i in ids):
        raise ValueError("the tokenizer has no single token for every digit")
    return [int(i) for i in ids]


def rope_thetas(head_dim: int, base: float) -> np.ndarray:
    """The rotary frequencies of HF Llama's default RoPE (pair j = dims j and j + head_dim / 2)."""
    return base ** (-np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)


def offset_margin(head_dim: int, base: float, span: int) -> float:
    """How much lower (per unit scale) the best score at any other offset within ``span`` is than the peak."""
    th = rope_thetas(head_dim, base)
    d = np.arange(1, span + 1, dtype=np.float64)
    rest = np.cos(np.outer(d, th)).sum(1)
    return float(len(th) - rest.max())


def copy_model(
    tokenizer,
    *,
    layer: int = 1,
    head: int = 2,
    offset: int = 20,
    n_layers: int = 3,
    n_heads: int = 4,
    n_kv_heads: int = 2,
    head_dim: int = 32,
    hidden: int = 64,
    sharpness: float = 14.0,
    logit_scale: float = 5.0,
    rope_theta: float = 10000.0,
    max_positions: int = 1024,
    seed: int = 0,
):
    """A LlamaForCausalLM (real tokenizer's vocabulary) predicting, at each position m, the colour of the
    digit at m - ``offset``, read by head ``head`` of layer ``layer`` alone (see the module docstring).

    ``sharpness``: the gap in attention logits between the source key and the best other key (nats).
    ``logit_scale``: how far the copied digit's logit stands above every other token's.
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    if not (0 <= layer < n_layers and 0 <= head < n_heads and hidden >= FILLER + 1 and head_dim >= 20):
        raise ValueError("layer/head out of range, or the model too narrow for the circuit")
    cfg = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=n_layers,
        num_attention_heads=n_heads,
        num_key_value_heads=n_kv_heads,
        head_dim=head_dim,
        max_position_embeddings=max_positions,
        rope_theta=rope_theta,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    cfg._attn_implementation = "sdpa"
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg).eval()
    digits = digit_ids(tokenizer)
    half = head_dim // 2
    group = head // (n_heads // n_kv_heads)  # the kv head that query head `head` reads (repeat_kv)
    # every embedding has norm sqrt(2): RMSNorm divides by sqrt(2 / hidden); undo it so the normalised
    # stream reads exactly 0/1 on the circuit's dimensions
    unnorm = math.sqrt(2.0 / hidden)
    theta = rope_thetas(head_dim, rope_theta)
    scale = sharpness / offset_margin(head_dim, rope_theta, max_positions)
    with torch.no_grad():
        emb = model.model.embed_tokens.weight
        emb.zero_()
        emb[:, BIAS] = 1.0
        emb[:, FILLER] = 1.0
        for c, t in enumerate(digits):
            emb[t, FILLER] = 0.0
            emb[t, COLOUR_IN + c] = 1.0
        for i, block in enumerate(model.model.layers):
            block.mlp.down_proj.weight.zero_()
            attn = block.self_attn
            # random, moderate query/key weights elsewhere: diffuse patterns that write nothing
            attn.q_proj.weight.normal_(0.0, 0.2)
            attn.k_proj.weight.normal_(0.0, 0.2)
            attn.o_proj.weight.zero_()
            if i != layer:
                continue
            block.input_layernorm.weight.fill_(unnorm)
            q = attn.q_proj.weight[head * head_dim : (head + 1) * head_dim]
            k = attn.k_proj.weight[group * head_dim : (group + 1) * head_dim]
            v = attn.v_proj.weight[group * head_dim : (group + 1) * head_dim]
            q.zero_()
            k.zero_()
            v.zero_()
            # q = 1 and k = exp(i offset theta) in each rotary pair: q.k after RoPE is
            # sum_j cos((m - n - offset) theta_j), times the softmax scale undone and `scale` applied
            amp = math.sqrt(scale * math.sqrt(head_dim))
            q[:half, BIAS] = amp
            k[:half, BIAS] = torch.tensor(amp * np.cos(offset * theta), dtype=k.dtype)
            k[half:, BIAS] = torch.tensor(amp * np.sin(offset * theta), dtype=k.dtype)
            for c in range(10):
                v[c, COLOUR_IN + c] = 1.0
                attn.o_proj.weight[COLOUR_OUT + c, head * head_dim + c] = 1.0
        model.model.norm.weight.fill_(1.0)
        lm = model.lm_head.weight
        lm.zero_()
        for c, t in enumerate(digits):
            lm[t, COLOUR_OUT + c] = logit_scale
    return model


def copy_task(task_id: str = "copy3x3") -> Task:
    """An identity task on 3x3 grids (2 train pairs) whose test input has nine different colours."""

    def g(rows):
        a = np.array(rows, dtype=np.uint8)
        a.setflags(write=False)
        return a

    train = (
        Pair(g([[1, 2, 3], [4, 5, 6], [7, 8, 0]]), g([[1, 2, 3], [4, 5, 6], [7, 8, 0]])),
        Pair(g([[2, 2, 1], [3, 1, 1], [0, 0, 4]]), g([[2, 2, 1], [3, 1, 1], [0, 0, 4]])),
    )
    test_grid = [[5, 1, 2], [3, 9, 4], [6, 7, 8]]
    return Task(task_id, train, (Pair(g(test_grid), g(test_grid)),))


def copy_offset(subject) -> int:
    """The token distance from each test-input cell to the position that predicts the same answer cell
    (one number: the layout must be the same for every cell, as in :func:`copy_task`)."""
    cells = subject.cells("test_input")
    src = {(int(r), int(c)): int(p) for r, c, p in zip(cells.row, cells.col, cells.position, strict=True)}
    a = subject.answer
    gaps = {int(p) - src[(int(r), int(c))] for r, c, p in zip(a.row, a.col, a.predict_pos, strict=True)}
    if len(gaps) != 1:
        raise ValueError(f"answer cells are not a fixed distance after the test input: {sorted(gaps)}")
    return gaps.pop()
