"""A worker's run state: EMA, checkpoint save and restore, and the trained models at the end.

`Checkpointer` holds no engines of its own: it reads and writes those of the rank's
`EngineSet` (home engines of trained models) through `runtime.rundir.rank_state`, and the
on-disk format through `runtime.rundir.checkpoints`. Saving and the final model export are
world-collective.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch.distributed as dist

from graph.dataflow import DataflowGraph
from graph.placement.layout import Layout
from graph.spec import CallKind
from runtime.engine.ema import EMA, save_ema_hf
from runtime.engine.model_engine import ModelEngine
from runtime.engine.schedule import Trainer
from runtime.execution.engines import EngineSet, trained_models
from runtime.execution.job import Job
from runtime.rundir import checkpoints, rank_state
from runtime.rundir.metrics import read_metrics


class Checkpointer:
    """Checkpoints and the end-of-run models of one rank."""

    def __init__(self, job: Job, engines: EngineSet, *, rank: int, world_size: int) -> None:
        self.job, self.engines, self.rank, self.world_size = job, engines, rank, world_size
        self.graph: DataflowGraph = job.graph
        self.trained = trained_models(job.graph)

    def attach_ema(self) -> None:
        """Give the home engine of every model in `job.ema_models` an EMA of its weights."""
        for role in self.job.ema_models if self.job.ema_decay > 0 else ():
            engine = self.engines.home(role)
            if engine is not None:
                engine.ema = EMA(engine, self.job.ema_decay)

    def _make_trainer(self, role: str, engine: ModelEngine) -> Trainer:
        call = next(c for c in self.graph.calls_of(role) if c.kind is CallKind.TRAIN)
        return Trainer(engine, call.args, total_steps=self.job.iterations)

    def restore(self, path: Path) -> tuple[int, list[dict[str, Any]]]:
        """Load the checkpoint at `path` into this rank's engines (whatever plan and world
        size wrote it; world-collective); returns the data position to continue from and
        (rank 0) the metrics records up to the checkpoint."""
        start = time.perf_counter()
        meta = checkpoints.CheckpointMeta.from_json((path / checkpoints.META).read_text())
        rank_state.restore(path, meta, self.engines, self.trained, self._make_trainer, rank=self.rank,
                           world_size=self.world_size)
        history: list[dict[str, Any]] = []
        if self.rank == 0:
            history = [r for r in read_metrics(Path(self.job.run_dir) / "metrics.jsonl")
                       if int(r.get("iteration", 0)) <= meta.iteration]
            how = "" if meta.world_size == self.world_size and meta.layouts == checkpoints.plan_layouts(
                self.job.layouts) else f", resharded from {meta.world_size} workers and its plan"
            print(f"rank 0: resumed from {path} (iteration {meta.iteration}{how}) in "
                  f"{time.perf_counter() - start:.2f} s", flush=True)
        return meta.data_position, history

    def save_due(self, iteration: int) -> bool:
        """Whether a checkpoint is written after `iteration` (1-based) completes."""
        every = self.job.save_every
        return iteration == self.job.iterations or (every > 0 and iteration % every == 0)

    def save(self, iteration: int, layouts: dict[str, Layout]) -> None:
        """Write RUN_DIR/checkpoints/iter_NNNNNN (world-collective)."""
        start = time.perf_counter()
        path = rank_state.save_checkpoint(
            Path(self.job.run_dir) / "checkpoints", iteration, self.engines, self.trained, rank=self.rank,
            world_size=self.world_size, fingerprint=self.job.fingerprint,
            layouts=checkpoints.plan_layouts(layouts), keep=self.job.keep_checkpoints)
        if path is not None:
            size = sum(f.stat().st_size for f in path.iterdir())
            print(f"rank 0: checkpoint {path} ({size / 2**20:.1f} MiB) in {time.perf_counter() - start:.2f} s",
                  flush=True)

    def save_models(self, root: Path) -> None:
        """Write every trained model, from its home layout, as a HF checkpoint `root/ROLE`
        (and `root/ROLE_ema` for a model with an EMA). World-collective."""
        saved = list(self.trained)
        for role in self.trained:
            engine = self.engines.home(role)
            if engine is not None:
                engine.save_hf(str(root / role))
            if role in self.job.ema_models and self.job.ema_decay > 0:
                saved.append(f"{role}_ema")
                if engine is not None:
                    save_ema_hf(engine, engine.ema, root / f"{role}_ema")
        dist.barrier()
        if self.rank == 0 and self.trained:
            print(f"rank 0: saved {', '.join(saved)} under {root}", flush=True)
