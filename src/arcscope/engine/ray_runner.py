"""The Ray runner: the same job, its batches fanned out to model replicas on a Ray cluster.

The driver builds the same deterministic plan as the local runner (tokenizer and a weightless meta-device
model are enough for that), starts one actor per worker, each holding the model on its own device, and
hands them batches. Results come back to the driver, which alone writes the store, in plan order: a store
written by the Ray runner is identical to the local runner's, and either runner can resume the other's job.

``ray.init`` connects to ``address`` (or ``$RAY_ADDRESS``) when given, else starts a local Ray.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from arcscope.engine.job import JobConfig
from arcscope.engine.local import LocalRunner
from arcscope.errors import ArcscopeError


class RayUnavailableError(ArcscopeError):
    """Ray is not installed or the cluster cannot be reached."""


class _Worker:
    """One model replica; runs whole batches of the shared plan by batch number."""

    def __init__(self, cfg: dict[str, Any], device: str):
        from arcscope.capture import resolve_hooks

        # Ray sets OMP_NUM_THREADS to the actor's CPUs, so torch does not oversubscribe the node.
        self.cfg = JobConfig.from_dict({**cfg, "device": device})
        self.runner = LocalRunner(self.cfg)
        self.loaded, _tasks, plan = self.runner._load()
        self.batches = {b.number: b for b in plan.batches}
        self.sites = resolve_hooks(self.loaded.model, self.cfg.hooks, storable=True)

    def identity(self) -> dict[str, Any]:
        """The model identity for the manifest, as the worker loaded it."""
        return self.loaded.identity()

    def run_batch(self, number: int):
        """Capture one batch of the plan; tensors travel back to the driver through Ray's object store."""
        import torch

        with torch.no_grad():
            acts, index, preds, ntok = self.runner._run_batch(self.loaded, self.sites, self.batches[number])
        if acts is not None:
            acts = {k: v.cpu() for k, v in acts.items()}
        return acts, index, preds, ntok


class RayRunner(LocalRunner):
    """Runs a job with ``workers`` model replicas on Ray (default: the job's); the driver writes the store."""

    def __init__(
        self,
        cfg: JobConfig,
        *,
        workers: int | None = None,
        address: str | None = None,
        gpus_per_worker: float | None = None,
        cpus_per_worker: float = 1,
        in_flight: int = 2,
        **kw,
    ):
        super().__init__(cfg, **kw)
        self.workers = cfg.workers if workers is None else workers
        self.address = cfg.ray_address if address is None else address
        self.gpus_per_worker = gpus_per_worker
        self.cpus_per_worker = cpus_per_worker
        self.in_flight = max(1, in_flight)
        self._actors: list[Any] = []

    def _ray(self):
        try:
            import ray
        except ImportError:
            raise RayUnavailableError("the Ray runner needs Ray: pip install 'ray>=2.40'") from None
        if not ray.is_initialized():
            try:
                ray.init(
                    address=self.address,
                    include_dashboard=False,
                    log_to_driver=False,
                    configure_logging=False,
                    ignore_reinit_error=True,
                )
            except Exception as e:  # Ray raises ConnectionError, RuntimeError, ... for a bad address
                where = self.address or "a local Ray instance"
                raise RayUnavailableError(f"cannot start or reach {where}: {e}") from None
        return ray

    def _load_model(self):
        from arcscope.capture import resolve_hooks
        from arcscope.models import load_model_skeleton

        # Check the model and hook names here, where errors print cleanly, before any actor starts.
        skeleton = load_model_skeleton(self.cfg.model)
        resolve_hooks(skeleton.model, self.cfg.hooks, storable=True)
        ray = self._ray()
        gpus = self.gpus_per_worker
        if gpus is None:
            gpus = 1 if ray.cluster_resources().get("GPU", 0) >= self.workers else 0
        device = "cuda" if gpus else "cpu"
        remote = ray.remote(num_cpus=self.cpus_per_worker, num_gpus=gpus)(_Worker)
        cfg = self.cfg.to_dict()
        self._actors = [remote.remote(cfg, device) for _ in range(self.workers)]
        ident = self._get(ray, self._actors[0].identity.remote())
        skeleton.identity = lambda: ident  # the manifest names the model as the workers run it
        return skeleton

    @staticmethod
    def _get(ray, ref):
        """ray.get that re-raises a worker's ArcscopeError as itself (one clean line in the CLI)."""
        try:
            return ray.get(ref)
        except ray.exceptions.RayError as e:
            cause = getattr(e, "cause", None)
            if isinstance(cause, ArcscopeError):
                raise cause from None
            raise RayUnavailableError(f"a Ray worker failed: {str(e).splitlines()[0]}") from e

    def _results(self, todo, loaded, sites):
        """Keep every actor busy; yield results strictly in plan order so the store matches a local run."""
        ray = self._ray()
        queue = deque(todo)
        pending: deque[tuple[Any, Any, Any]] = deque()
        free = deque(self._actors * self.in_flight)
        try:
            while queue or pending:
                while queue and free:
                    actor = free.popleft()
                    batch = queue.popleft()
                    pending.append((batch, actor, actor.run_batch.remote(batch.number)))
                batch, actor, ref = pending.popleft()
                result = self._get(ray, ref)
                free.append(actor)
                yield batch, result
        finally:
            for a in self._actors:
                ray.kill(a)
            self._actors = []
