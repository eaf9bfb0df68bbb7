"""Training rows: from a store (shards read ahead on threads, each checked once) or from a model on the fly.

A *source* yields blocks of rows for one epoch (:meth:`StoreSource.blocks`, :meth:`ModelSource.blocks`);
:func:`batches` turns blocks into an endless stream of fixed-size batches through a seeded shuffle buffer.
The stream is a pure function of (source, seed, rank), so a resumed run replays it and skips the batches
it has already trained on: resume is exact.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch

from arcscope.errors import StoreError
from arcscope.sae.config import SAEError
from arcscope.store import mix_seed, shuffle_blocks


class StoreSource:
    """Rows of one hook of a store, shard by shard, through the store's checked reader (:meth:`Store.stream`);
    damaged shards stop the run or are skipped and named."""

    def __init__(
        self,
        store: Any,
        hook: str,
        *,
        verify: str = "sha256",
        on_damaged: str = "error",
        prefetch: int = 4,
    ):
        self.stream = store.stream(hook, verify=verify, on_damaged=on_damaged, prefetch=prefetch)
        if not store.shards:
            raise StoreError(f"{store.url}: the store has no committed shards to train on")
        self.store, self.hook = store, hook
        self.d, self.dtype = self.stream.d, self.stream.dtype

    @property
    def skipped(self) -> dict[str, str]:
        """Shard file -> why it was skipped (only with on_damaged='skip')."""
        return self.stream.skipped

    @property
    def rows(self) -> int:
        """Rows per epoch (all committed shards)."""
        return self.store.n_rows

    def describe(self) -> dict[str, Any]:
        """What the rows are, for the SAE's provenance and resume checks."""
        return {"kind": "store", "url": self.store.url, "hook": self.hook, "rows": self.rows}

    def blocks(self, epoch: int, seed: int, rank: int = 0, world: int = 1) -> Iterator[torch.Tensor]:
        """This rank's shards for one epoch, in a seeded order, read ahead on threads."""
        if not self.stream.order(epoch, seed, rank, world):
            n = len(self.store.shards)
            raise SAEError(
                f"{self.store.url}: rank {rank} of {world} gets no shard ({n} shards); use fewer ranks"
            )
        yield from self.stream.blocks(epoch, seed, rank, world)


class ModelSource:
    """Rows of one hook captured from a model over ARC prompts as training runs (no store is written)."""

    def __init__(
        self,
        loaded: Any,
        tasks: Any,
        hook: str,
        *,
        positions: tuple[str, ...] | list[str] = ("cells",),
        encoder: str = "minimal",
        augmentations: int = 1,
        seed: int = 0,
        batch_tokens: int = 8192,
        max_batch: int = 16,
        max_tasks: int | None = None,
    ):
        from arcscope.capture import PROMPT_POSITIONS, make_batches, plan_prompts, resolve_hooks

        self.loaded = loaded
        sites = resolve_hooks(loaded.model, hook, storable=True)
        if len(sites) != 1:
            raise SAEError(f"hook {hook!r} names {len(sites)} sites; an SAE trains on exactly one")
        self.site = sites[0]
        self.hook = self.site.name
        self.positions = list(positions)
        for p in self.positions:
            if p not in PROMPT_POSITIONS:
                raise SAEError(
                    f"position kind {p!r} is not one of {', '.join(PROMPT_POSITIONS)} "
                    "(on the fly, an SAE sees teacher-forced prompts, nothing generated)"
                )
        # The prompts a prefill capture job with teacher forcing would plan for the same settings.
        self.items, _ = plan_prompts(
            tasks,
            loaded.tokenizer,
            limit=loaded.context_length,
            encoder=encoder,
            augmentations=augmentations,
            seed=seed,
            with_answer=True,
            max_tasks=max_tasks,
        )
        self.batches = make_batches(self.items, batch_tokens, max_batch)
        if not self.batches:
            raise SAEError("the task source gave no prompts that fit the model's context")
        self.d = int(self.site.d or loaded.model.config.hidden_size)
        self.task_name = str(getattr(tasks, "name", "tasks"))
        self._rows: int | None = None

    @property
    def rows(self) -> int | None:
        """Rows per epoch, known after the first epoch (None before)."""
        return self._rows

    def describe(self) -> dict[str, Any]:
        """What the rows are, for provenance and resume checks."""
        return {
            "kind": "model",
            "model": self.loaded.identity(),
            "tasks": self.task_name,
            "hook": self.hook,
            "positions": self.positions,
            "prompts": len(self.items),
        }

    def blocks(self, epoch: int, seed: int, rank: int = 0, world: int = 1) -> Iterator[torch.Tensor]:
        """Captured rows of this rank's prompt batches, in a seeded order."""
        from arcscope.capture import pad_items, run_prefill

        tok = self.loaded.tokenizer
        pad = tok.pad_token_id if tok.pad_token_id is not None else 0
        g = torch.Generator().manual_seed(mix_seed(seed, epoch))
        order = torch.randperm(len(self.batches), generator=g).tolist()[rank::world]
        total = 0
        for bno in order:
            ids, attn, keep, _ = pad_items(self.batches[bno].items, pad, self.positions)
            if not keep.any():
                continue
            dev = self.loaded.device
            res = run_prefill(
                self.loaded.model,
                ids.to(dev),
                attn.to(dev),
                [self.site],
                position_mask=torch.as_tensor(keep).to(dev),
            )
            rows = res.acts[self.hook].float()
            total += len(rows)
            yield rows
        if world == 1:
            self._rows = total


def batches(
    source: Any,
    batch_size: int,
    *,
    shuffle_buffer: int = 262144,
    seed: int = 0,
    rank: int = 0,
    world: int = 1,
    skip: int = 0,
    pin: bool = False,
) -> Iterator[torch.Tensor]:
    """An endless stream of ``[batch_size, d]`` float32 batches, epoch after epoch; the first ``skip`` dropped."""
    epoch = 0
    carry: torch.Tensor | None = None
    made = 0
    while True:
        got_rows = False
        for block in shuffle_blocks(
            source.blocks(epoch, seed, rank, world), shuffle_buffer, mix_seed(seed, epoch, rank + 1)
        ):
            got_rows = got_rows or len(block) > 0
            if carry is not None and len(carry):
                block = torch.cat([carry, block])
            n = len(block) - len(block) % batch_size
            for a in range(0, n, batch_size):
                made += 1
                if made <= skip:
                    continue
                b = block[a : a + batch_size].float()
                yield b.pin_memory() if pin else b
            carry = block[n:]
        if not got_rows:
            raise SAEError("the training source produced no rows")
        epoch += 1
