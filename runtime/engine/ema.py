"""The exponential moving average of a model's weights, kept beside its home engine.

`EMA(engine, decay)` holds fp32 copies of the engine's local shards and is updated after
every optimizer step; `save_ema_hf` writes it as a HF checkpoint at the end of a run.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.distributed as dist

from runtime.engine import convert

if TYPE_CHECKING:
    from runtime.engine.model_engine import ModelEngine


class EMA:
    """Exponential moving average of an engine's local shards, in fp32:
    `ema = decay * ema + (1 - decay) * w` after every optimizer step."""

    def __init__(self, engine: ModelEngine, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"train.ema_decay must be in (0, 1) to keep an EMA, got {decay}")
        self.decay = decay
        self.shadow = {n: s.tensor.detach().float().clone() for n, s in engine.named_local_shards().items()}

    def update(self, engine: ModelEngine) -> None:
        with torch.no_grad():
            for name, shard in engine.named_local_shards().items():
                self.shadow[name].mul_(self.decay).add_(shard.tensor.detach().float(), alpha=1.0 - self.decay)

    def load(self, saved: Mapping[str, torch.Tensor]) -> None:
        check_same_tensors(self.shadow, saved, "EMA")
        for name, tensor in saved.items():
            self.shadow[name].copy_(tensor)


def gather_global(engine: ModelEngine, tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor] | None:
    """Megatron-global tensors from this rank's shards `tensors` (named like the engine's
    local shards), on the layout's first rank; None elsewhere. Collective over the mesh."""
    return engine.global_state(tensors)


def save_ema_hf(engine: ModelEngine, ema: EMA | None, path: str | Path) -> None:
    """Write the EMA as a HF checkpoint (collective over the engine's mesh; every rank of the
    mesh passes its own EMA)."""
    from runtime.engine.hf_checkpoint import save_hf_checkpoint

    mg = gather_global(engine, ema.shadow if ema is not None else {})
    if mg is not None:
        if engine.spec.lora is not None:  # a plain HF model, as engine.save_hf writes it
            from runtime.engine.lora import merge_lora

            mg = merge_lora(mg, engine.spec.lora)
        hf = convert.megatron_to_hf(mg, engine.arch, value_head=engine.spec.value_head)
        save_hf_checkpoint(str(path), hf, engine.arch, value_head=engine.spec.value_head)
    dist.barrier(group=engine.pgc.mesh)


def check_same_tensors(mine: Mapping[str, torch.Tensor], saved: Mapping[str, torch.Tensor], what: str) -> None:
    if set(mine) != set(saved):
        odd = sorted(set(mine) ^ set(saved))[0]
        raise ValueError(f"checkpoint {what} does not match the model: tensor {odd!r} on one side only; "
                         "resume with the config that wrote the checkpoint")
    for name, tensor in saved.items():
        if tuple(tensor.shape) != tuple(mine[name].shape):
            raise ValueError(f"checkpoint {what}: tensor {name!r} has shape {list(tensor.shape)}, this rank "
                             f"holds {list(mine[name].shape)}; resharding a checkpoint is not supported")
