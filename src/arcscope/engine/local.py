"""The local runner: one process, batches in plan order, store commits after every few batches.

Resume works by construction: the plan is deterministic, a batch's rows and its predictions are committed
together with the progress (done batch numbers) in one manifest write, so after a crash at any moment the
store holds exactly the batches it says it holds, and a re-run redoes only the rest.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from arcscope.capture.positions import pad_items
from arcscope.engine.job import JobConfig
from arcscope.engine.plan import Batch, Plan, WorkItem, build_plan
from arcscope.files import atomic_write_text
from arcscope.progress import ProgressFn, emit

FORMAT = "arcscope-run/1"


@dataclass
class JobResult:
    """What a job produced: where, how much, and the per-item predictions."""

    out: str
    plan: Plan
    predictions: dict[str, dict[str, Any]]
    tokens: int = 0
    rows: int = 0
    bytes_written: int = 0
    seconds: float = 0.0
    resumed_batches: int = 0
    already_complete: bool = False
    skipped: list[tuple[str, str]] = field(default_factory=list)

    @property
    def tokens_per_s(self) -> float:
        """Forward tokens (prompt and generated, no padding) per second of this run."""
        return self.tokens / self.seconds if self.seconds > 0 else 0.0


def _index_rows(
    item: WorkItem, positions: np.ndarray, token_ids: np.ndarray, cmap=None
) -> dict[str, np.ndarray]:
    """Index columns for captured rows of one item at the given (unpadded) positions.

    ``cmap`` is the item's map extended over its generated tokens (``generated_cell_map``); without it,
    generated positions get no cell. Every generated token has role ``generated`` and the test pair's index,
    whether or not it lies in the response's grid; those that encode one cell also get its row and column.
    """
    from arcscope.tasks.prompts import Role

    cmap = item.cell_map if cmap is None else cmap
    n_plan = len(item.cell_map.input_ids)  # the planned prompt (and teacher-forced answer)
    n_map = len(cmap.input_ids)
    inside = positions < n_map
    generated = positions >= n_plan
    pos_c = np.minimum(positions, max(n_map - 1, 0))
    role_codes = np.where(generated, Role.GENERATED.code, cmap.role[pos_c])
    return {
        "sample": np.full(len(positions), item.sample, dtype=np.int64),
        "task_id": np.array([item.task.id] * len(positions), dtype=object),
        "augmentation": np.array([item.augmentation.name] * len(positions), dtype=object),
        "test_index": np.full(len(positions), item.test_index, dtype=np.int16),
        "pair": np.where(generated, item.test_index, cmap.pair[pos_c]).astype(np.int16),
        "role": np.array([Role.from_code(int(c)).value for c in role_codes], dtype=object),
        "row": np.where(inside, cmap.row[pos_c], -1).astype(np.int8),
        "col": np.where(inside, cmap.col[pos_c], -1).astype(np.int8),
        "token_id": token_ids.astype(np.int32),
        "position": positions.astype(np.int32),
    }


class _PredictionFiles:
    """Per-commit JSON files of predictions under ``<out>/predictions/``, listed by the store's progress."""

    def __init__(self, url: str, storage_options: dict | None):
        import fsspec

        self.fs, root = fsspec.core.url_to_fs(url, **(storage_options or {}))
        self.root = root.rstrip("/") + "/predictions"

    def write(self, number: int, preds: dict[str, dict]) -> str:
        """Write one commit's predictions atomically; return the file name."""
        name = f"{number:05d}.json"
        self.fs.makedirs(self.root, exist_ok=True)
        atomic_write_text(f"{self.root}/{name}", json.dumps(preds), fs=self.fs)
        return name

    def read(self, names: list[str]) -> dict[str, dict]:
        """Merge the listed files (a missing one is store damage, reported by name)."""
        from arcscope.errors import StoreError

        out: dict[str, dict] = {}
        for name in names:
            try:
                with self.fs.open(f"{self.root}/{name}", "r") as f:
                    out.update(json.load(f))
            except (OSError, ValueError) as e:
                raise StoreError(f"{self.root}/{name}: cannot read committed predictions ({e})") from None
        return out


def _concat(cols: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {k: np.concatenate([c[k] for c in cols]) for k in cols[0]}


class LocalRunner:
    """Runs a job in this process."""

    def __init__(
        self,
        cfg: JobConfig,
        *,
        storage_options: dict | None = None,
        progress: ProgressFn | None = None,
        resume: bool = True,
        overwrite: bool = False,
        loaded=None,
        tasks=None,
    ):
        self.cfg = cfg.validate()
        self.storage_options = storage_options
        self.progress = progress
        self.resume = resume and not overwrite  # overwrite wins: the old store is replaced, not continued
        self.overwrite = overwrite
        self._loaded = loaded
        self._tasks = tasks

    # -- setup -----------------------------------------------------------------------------------------
    def _load_model(self):
        from arcscope.models import load_model

        return self._loaded or load_model(self.cfg.model, device=self.cfg.device, dtype=self.cfg.dtype)

    def _load(self):
        from arcscope.tasks import load

        loaded = self._load_model()
        tasks = self._tasks if self._tasks is not None else load(self.cfg.tasks)
        plan = build_plan(tasks, self.cfg, loaded.tokenizer, loaded.context_length)
        return loaded, tasks, plan

    def _manifest_meta(self, loaded, sites) -> dict[str, Any]:
        return {
            "run_format": FORMAT,
            "model": loaded.identity(),
            "tokenizer": getattr(loaded.tokenizer, "name_or_path", None),
            "capture": {
                "hooks": [s.name for s in sites],
                "requested": list(self.cfg.hooks),
                "positions": list(self.cfg.positions),
                "mode": self.cfg.mode,
                "topk_logits": self.cfg.topk_logits,
            },
            "task_source": self.cfg.tasks,
            "job": self.cfg.identity(),
        }

    # -- main loop -------------------------------------------------------------------------------------
    def run(self) -> JobResult:
        """Run (or resume) the job and return its result."""
        from arcscope.capture import resolve_hooks
        from arcscope.store import StoreWriter, check_target

        t0 = time.perf_counter()
        # The folder is checked before the model loads: a refusal (someone else's manifest.json, a store
        # without --overwrite) should not wait for minutes of loading. The writer checks again when it opens.
        check_target(
            self.cfg.out, resume=self.resume, overwrite=self.overwrite, storage_options=self.storage_options
        )
        loaded, _tasks, plan = self._load()
        sites = resolve_hooks(loaded.model, self.cfg.hooks, storable=True)
        meta = self._manifest_meta(loaded, sites)
        writer = StoreWriter(
            self.cfg.out,
            meta=meta,
            shard_rows=self.cfg.shard_rows,
            resume=self.resume,
            overwrite=self.overwrite,
            storage_options=self.storage_options,
        )
        result = JobResult(self.cfg.out, plan, {}, skipped=list(plan.skipped))
        preds_dir = _PredictionFiles(self.cfg.out, self.storage_options)
        try:
            self._check_same_job(writer, meta)
            saved = writer.progress or {}
            done = set(saved.get("done_batches", []))
            files = list(saved.get("prediction_files", []))
            result.predictions = preds_dir.read(files)
            result.resumed_batches = len(done)
            if writer.complete:
                result.already_complete = True
                return result
            todo = [b for b in plan.batches if b.number not in done]
            task_items: dict[str, int] = {}
            for it in plan.items:
                task_items[it.task.id] = task_items.get(it.task.id, 0) + 1
            for b in plan.batches:
                if b.number in done:
                    for it in b.items:
                        task_items[it.task.id] -= 1
            tasks_total = len(task_items)
            pending: dict[str, dict] = {}
            since_commit = 0

            def show(**extra: object) -> None:
                done_tasks = sum(1 for n in task_items.values() if n == 0)
                emit(
                    self.progress,
                    "batches",
                    len(done),
                    len(plan.batches),
                    tasks=f"{done_tasks}/{tasks_total}",
                    **extra,
                )

            show()  # the bar (and what a resume already has) before the first batch
            for batch, (acts, index, preds, ntok) in self._results(todo, loaded, sites):
                if index is not None:
                    writer.add(acts, index)
                    result.rows += len(index["sample"])
                pending.update(preds)
                result.tokens += ntok
                done.add(batch.number)
                for it in batch.items:
                    task_items[it.task.id] -= 1
                since_commit += 1
                if since_commit >= self.cfg.commit_every or len(done) == len(plan.batches):
                    # predictions first, then the manifest that names them: a crash in between leaves an
                    # unnamed file that the re-run simply writes again
                    files.append(preds_dir.write(len(files), pending))
                    writer.commit({"done_batches": sorted(done), "prediction_files": files})
                    result.predictions.update(pending)
                    pending, since_commit = {}, 0
                show(**{"tok/s": result.tokens / max(time.perf_counter() - t0, 1e-9)})
            writer.close(complete=True)
        except BaseException:
            writer.abort()
            raise
        result.bytes_written = writer.bytes_written
        result.seconds = time.perf_counter() - t0
        return result

    def _results(self, todo: list[Batch], loaded, sites):
        """Yield (batch, batch result) in plan order; the Ray runner overrides this to fan out."""
        import torch

        for batch in todo:
            with torch.no_grad():
                yield batch, self._run_batch(loaded, sites, batch)

    def _check_same_job(self, writer, meta: dict[str, Any]) -> None:
        from arcscope.errors import StoreError

        old = getattr(writer, "meta", None) or {}
        if old.get("job") and old.get("job") != meta["job"]:
            diff = sorted(k for k in meta["job"] if old["job"].get(k) != meta["job"][k])
            raise StoreError(
                f"{self.cfg.out} holds a different job (settings differ: {', '.join(diff)}); "
                "use another --out or --overwrite"
            )

    def _run_batch(self, loaded, sites, batch: Batch):
        """Capture one batch; return (acts, index columns, predictions, forward tokens)."""
        cfg = self.cfg
        tok = loaded.tokenizer
        pad_id = tok.pad_token_id if tok.pad_token_id is not None else 0
        if cfg.mode == "prefill":
            acts, cols, preds, ntok = self._prefill_batch(loaded, sites, batch, pad_id)
        else:
            acts, cols, preds, ntok = self._generate_batch(loaded, sites, batch, pad_id)
        index = _concat(cols) if cols and sum(len(c["sample"]) for c in cols) else None
        if cfg.topk_logits and index is not None and getattr(acts, "pop", None):
            for k in ("topk_values", "topk_indices"):
                if k in acts:
                    index[k] = list(acts.pop(k).cpu().numpy())
        return (acts if index is not None else None), index, preds, ntok

    def _cast(self, acts):
        if not self.cfg.store_dtype:
            return acts
        import torch

        dt = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[
            self.cfg.store_dtype
        ]
        return {k: v.to(dt) for k, v in acts.items()}

    def _prefill_batch(self, loaded, sites, batch: Batch, pad_id: int):
        """One forward pass per batch; with teacher forcing, also the argmax answer as a prediction."""
        import torch

        from arcscope.capture import run_prefill
        from arcscope.tasks.encoding import get_encoder
        from arcscope.tasks.prompts import parse_response

        cfg = self.cfg
        ids, attn, keep, seqs = pad_items(batch.items, pad_id, cfg.positions)
        T = ids.shape[1]
        predict = np.zeros((len(seqs), T), dtype=bool)
        for b, it in enumerate(batch.items):
            n = len(seqs[b])
            if n > it.n_prompt:
                # logits at position p predict token p+1: the answer tokens are predicted from n_prompt-1..n-2
                predict[b, T - n + it.n_prompt - 1 : T - 1] = True
        want_topk = max(cfg.topk_logits, 1) if predict.any() else cfg.topk_logits
        res = run_prefill(
            loaded.model,
            ids.to(loaded.device),
            attn.to(loaded.device),
            sites,
            position_mask=torch.as_tensor(keep | predict).to(loaded.device),
            topk_logits=want_topk,
        )
        bi = np.asarray(res.batch_index)
        pos = np.asarray(res.position)
        col = np.asarray(res.column)
        kept = keep[bi, col]
        sel = torch.as_tensor(kept)
        acts = self._cast({k: v[sel] for k, v in res.acts.items()})
        if cfg.topk_logits:
            acts["topk_values"] = res.topk_values[sel][:, : cfg.topk_logits]
            acts["topk_indices"] = res.topk_indices[sel][:, : cfg.topk_logits]
        encoder = get_encoder(cfg.encoder)
        cols, preds = [], {}
        argmax = res.topk_indices[:, 0].numpy() if want_topk else None
        for b, it in enumerate(batch.items):
            rows = bi == b
            p = pos[rows & kept]
            cols.append(_index_rows(it, p, seqs[b][p]))
            if argmax is None or len(seqs[b]) <= it.n_prompt:
                continue
            pr = rows & predict[bi, col]
            order = np.argsort(pos[pr])
            guess = argmax[pr][order]
            gold = seqs[b][it.n_prompt :]
            text = loaded.tokenizer.decode(guess, skip_special_tokens=True)
            preds[it.key] = self._prediction(
                it,
                text,
                encoder,
                parse_response,
                mean_logprob=0.0,
                n_generated=len(guess),
                token_accuracy=float((guess == gold[: len(guess)]).mean()),
            )
        return acts, cols, preds, int(attn.sum())

    def _prediction(self, it: WorkItem, text: str, encoder, parse_response, **extra) -> dict[str, Any]:
        """A prediction record: the parsed grid mapped back to the original frame, or the parse error."""
        parsed = parse_response(text, encoder)
        grid, error = None, None if parsed.ok else parsed.error
        if parsed.ok:
            try:
                grid = it.augmentation.invert_grid(parsed.grid)
            except Exception as e:  # a grid the transform cannot invert (e.g. wrong shape) is a miss
                error = f"cannot invert {it.augmentation.name}: {e}"
        return {
            "task_id": it.task.id,
            "augmentation": it.augmentation.name,
            "test_index": it.test_index,
            "sample": it.sample,
            "text": text,
            "grid": None if grid is None else np.asarray(grid).tolist(),
            "error": error,
            **extra,
        }

    def _generate_batch(self, loaded, sites, batch: Batch, pad_id: int):
        """Decode a batch, capturing prompt positions and every generated step."""
        import torch

        from arcscope.capture import run_generate
        from arcscope.tasks.encoding import get_encoder
        from arcscope.tasks.prompts import generated_cell_map, parse_response

        cfg = self.cfg
        encoder = get_encoder(cfg.encoder)
        # generated positions are kept by the decoding loop; the mask covers the prompt
        ids, attn, pmask, seqs = pad_items(batch.items, pad_id, cfg.positions, prompt_only=True)
        max_new = max(it.max_new_tokens for it in batch.items)
        eos = [
            t
            for t in {loaded.tokenizer.eos_token_id, getattr(loaded.tokenizer, "eot_token_id", None)}
            if t is not None
        ]
        res = run_generate(
            loaded.model,
            ids.to(loaded.device),
            attn.to(loaded.device),
            sites,
            max_new_tokens=max_new,
            do_sample=cfg.do_sample,
            temperature=cfg.temperature,
            seed=cfg.seed + batch.number,
            eos_token_id=eos,
            topk_logits=cfg.topk_logits,
            capture_prompt_mask=torch.as_tensor(pmask) if pmask.any() else None,
            pad_token_id=pad_id,
        )
        # Each item's map over prompt + generated tokens: generated cells get their row and column.
        gmaps = [
            generated_cell_map(it.prompt, loaded.tokenizer, res.sequences[b], prompt_map=it.cell_map)
            for b, it in enumerate(batch.items)
        ]
        bi_all = np.asarray(res.batch_index)
        pos_all = np.asarray(res.position)
        is_gen = np.asarray(res.generated, dtype=bool)
        keep = ~is_gen
        if "generated" in cfg.positions:
            keep[:] = True
        elif "cells" in cfg.positions:
            # "cells" covers the answer the model wrote too: generated tokens that encode one cell
            for b, gm in enumerate(gmaps):
                sel = is_gen & (bi_all == b)
                keep[sel] = gm.row[pos_all[sel]] >= 0
        kt = torch.as_tensor(keep)
        acts = self._cast({k: v[kt] for k, v in res.acts.items()})
        if cfg.topk_logits:
            acts["topk_values"] = res.topk_values[kt]
            acts["topk_indices"] = res.topk_indices[kt]
        bi = bi_all[keep]
        pos = pos_all[keep]
        cols, preds = [], {}
        ntok = int(attn.sum())
        for b, it in enumerate(batch.items):
            gen = [int(t) for t in res.sequences[b]]
            ntok += len(gen)
            full = np.concatenate([seqs[b], np.asarray(gen, dtype=np.int64)]) if gen else seqs[b]
            sel = bi == b
            p = pos[sel]
            cols.append(_index_rows(it, p, full[p], gmaps[b]))
            text = loaded.tokenizer.decode(gen, skip_special_tokens=True)
            preds[it.key] = self._prediction(
                it,
                text,
                encoder,
                parse_response,
                mean_logprob=float(res.mean_logprob[b]),
                n_generated=len(gen),
            )
        return acts, cols, preds, ntok


def run_job(cfg: JobConfig, **kw) -> JobResult:
    """Run (or resume) a capture job locally."""
    return LocalRunner(cfg, **kw).run()
