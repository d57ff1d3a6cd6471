"""What one rank saves in a training checkpoint and restores from it; the EMA of a model.

A rank's file (`rank{r}.pt`, a torch.save of plain containers and tensors, loaded with
`weights_only=True`) holds, for every trained model whose HOME engine (the layout its
train call runs in) lives on this rank:

- `weights`: the engine's local shards by global name (exact copies),
- `optimizer`: `Trainer.state_dict()` (step counter, which sets the LR schedule; the
  distributed optimizer's fp32 main-parameter shards and Adam moments of this rank),
- `ema`: the EMA's local shards (fp32), when the model has one;

and, for every engine on the rank, its `engine.state` (interface state such as a KL
controller), plus the rank's RNG states. Replicas of trained models in other layouts
are not saved: the first iteration after a restore refreshes them from the home
engine, as every iteration after the first does. Models nobody trains rebuild from
their seed or checkpoint. The layout must be the one that wrote the file; resharding
is not supported.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import torch
import torch.distributed as dist

from runtime.engine import platform
from runtime.engine.ema import check_same_tensors
from runtime.rundir import checkpoints as store

if TYPE_CHECKING:
    from graph.placement.layout import Layout
    from runtime.engine.model_engine import ModelEngine
    from runtime.engine.schedule import Trainer


class Engines(Protocol):
    """The engines of a rank as checkpoints see them (runtime.execution.engines.EngineSet)."""

    homes: Mapping[str, Layout]
    by_key: Mapping[tuple[str, Layout], ModelEngine | None]

    def get(self, role: str, layout: Layout) -> ModelEngine | None: ...


def rng_state() -> dict[str, Any]:
    """This process's RNG states (CPU, CUDA, Megatron's tracker)."""
    from megatron.core.tensor_parallel.random import get_cuda_rng_tracker

    out: dict[str, Any] = {"cpu": torch.get_rng_state(), "tracker": dict(get_cuda_rng_tracker().get_states())}
    if platform.has_cuda():
        out["cuda"] = torch.cuda.get_rng_state()
    return out


def set_rng_state(state: Mapping[str, Any]) -> None:
    from megatron.core.tensor_parallel.random import get_cuda_rng_tracker

    torch.set_rng_state(state["cpu"])
    if state.get("tracker"):
        get_cuda_rng_tracker().set_states(dict(state["tracker"]))
    if "cuda" in state and platform.has_cuda():
        torch.cuda.set_rng_state(state["cuda"])


def engine_key(role: str, layout: Any) -> str:
    return f"{role}@{layout}"


def _host(t: torch.Tensor) -> torch.Tensor:
    """A compact host copy (parameters are views into DDP's buffer: saving the view would
    write the whole buffer; on GPUs the copy goes straight to host memory)."""
    return t.detach().to("cpu", copy=True)


def collect(engines: Engines, trained: Iterable[str]) -> dict[str, Any]:
    """This rank's part of a checkpoint (see the module docstring)."""
    models: dict[str, Any] = {}
    for role in trained:
        engine = engines.get(role, engines.homes[role])
        if engine is None:
            continue
        ema = engine.ema
        models[role] = {
            "layout": str(engines.homes[role]),
            "weights": {n: _host(s.tensor) for n, s in engine.named_local_shards().items()},
            "optimizer": engine.trainer.state_dict() if engine.trainer is not None else None,
            "ema": {n: _host(t) for n, t in ema.shadow.items()} if ema is not None else None,
        }
    states = {engine_key(role, layout): dict(engine.state)
              for (role, layout), engine in engines.by_key.items() if engine is not None and engine.state}
    return {"models": models, "engine_state": states, "rng": rng_state()}


def to_bytes(state: Mapping[str, Any]) -> bytes:
    buf = io.BytesIO()
    torch.save(dict(state), buf)
    return buf.getvalue()


def read_rank_file(path: str | Path) -> dict[str, Any]:
    return torch.load(str(path), map_location="cpu", weights_only=True)


def restore(state: Mapping[str, Any], engines: Engines, trained: Iterable[str],
            make_trainer: Callable[[str, ModelEngine], Trainer]) -> None:
    """Put a rank's saved state back: weights, then a fresh trainer (`make_trainer(role,
    engine)`) loaded with the optimizer state, the EMA, engine states and RNG states."""
    models = state["models"]
    for role in trained:
        engine = engines.get(role, engines.homes[role])
        if engine is None:
            continue
        if role not in models:
            raise ValueError(f"checkpoint has no state of model {role!r} for this rank; resume with the "
                             "plan that wrote it")
        saved = models[role]
        if saved["layout"] != str(engines.homes[role]):
            raise ValueError(f"checkpoint holds {role!r} in layout {saved['layout']}, this run trains it in "
                             f"{engines.homes[role]}; resharding a checkpoint is not supported")
        shards = {n: s.tensor for n, s in engine.named_local_shards().items()}
        check_same_tensors(shards, saved["weights"], f"weights of {role!r}")
        with torch.no_grad():
            for name, tensor in saved["weights"].items():
                shards[name].copy_(tensor)
        engine.weights_changed()
        if saved["optimizer"] is not None:
            if engine.trainer is None:
                engine.trainer = make_trainer(role, engine)
            engine.trainer.load_state_dict(saved["optimizer"])
        ema = engine.ema
        if (ema is None) != (saved["ema"] is None):
            raise ValueError(f"checkpoint {'has' if saved['ema'] is not None else 'lacks'} an EMA of {role!r} "
                             "but this run's train.ema_decay/ema_models say otherwise; resume with the same EMA settings")
        if ema is not None:
            ema.load(saved["ema"])
    for (role, layout), engine in engines.by_key.items():
        if engine is not None:
            engine.state.clear()
            engine.state.update(state["engine_state"].get(engine_key(role, layout), {}))
    set_rng_state(state["rng"])


# --------------------------------------------------------------------------- collective save


def save_checkpoint(root: str | Path, iteration: int, state: Mapping[str, Any], *, rank: int, world_size: int,
                    fingerprint: Mapping[str, Any], layouts: Mapping[str, str], keep: int,
                    group: Any = None) -> Path | None:
    """Every rank calls this with its `collect()`ed state; rank 0 commits. Returns the
    checkpoint's path on rank 0, None elsewhere. Collective over the world (or `group`)."""
    root = Path(root)
    if rank == 0:
        store.begin(root, iteration)
    dist.barrier(group=group)
    entry = store.write_rank_file(store.temp_dir(root, iteration), rank, to_bytes(state))
    entries: list[Any] = [None] * world_size if rank == 0 else []
    dist.gather_object((rank, entry), entries if rank == 0 else None, dst=0, group=group)
    path = None
    if rank == 0:
        meta = store.CheckpointMeta(
            iteration=iteration, world_size=world_size, data_position=iteration,
            fingerprint=dict(fingerprint), layouts=dict(layouts),
            files={store.rank_file(r): e for r, e in entries})
        path = store.commit(root, meta, keep=keep)
    dist.barrier(group=group)
    return path
