"""Run a batch through an engine with Megatron's pipeline schedules; the optimizer.

`run_micro_batches` is the single path for inference and training: it hands micro-batches
(SeqBatch, packed by tokens) to `get_forward_backward_func`, with the engine's own
process groups and a P2P communicator on its pipeline group. A loss function receives
(micro-batch, last-stage output) and returns (loss, report dict); the reports of the last
stage come back (then broadcast over the pipeline so every stage returns them).

`Trainer` wraps the engine's model in Megatron DDP and the distributed optimizer.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist

from graph.catalog import OptimArgs
from runtime.data.batch import SeqBatch
from runtime.engine import lean, platform

if TYPE_CHECKING:
    from runtime.engine.model_engine import ModelEngine

LossFn = Callable[[SeqBatch, torch.Tensor], tuple[torch.Tensor, dict[str, Any]]]


def micro_batch_split(batch: SeqBatch, num: int, *, unit: int = 1) -> list[SeqBatch]:
    """At most `num` micro-batches balanced by tokens (fewer when the batch is small)."""
    num = max(1, min(num, batch.size // unit))
    return batch.split(num, unit=unit)


def run_micro_batches(engine: ModelEngine, mbs: list[SeqBatch], loss_fn: LossFn, *,
                      forward_only: bool) -> list[dict[str, Any]]:
    """Forward (and backward unless forward_only) every micro-batch; last-stage reports."""
    run = _run_without_pipeline if engine.layout.pp == 1 else _run_megatron_schedule
    return run(engine, mbs, loss_fn, forward_only=forward_only)


def _run_megatron_schedule(engine: ModelEngine, mbs: list[SeqBatch], loss_fn: LossFn, *,
                           forward_only: bool) -> list[dict[str, Any]]:
    """Megatron's schedule for the engine's pp (the pipeline schedules at pp > 1)."""
    from megatron.core.pipeline_parallel import get_forward_backward_func
    from megatron.core.pipeline_parallel.p2p_communication import P2PCommunicator

    device = platform.device()

    def forward_step(data_iterator: Any, model: Any) -> tuple[torch.Tensor, Any]:
        mb = next(data_iterator)
        ids = mb.input_ids.to(device)
        with platform.without_cuda_rewrites():  # the forward needs none; saves ~30% on CPU
            out = model(ids, mb.positions().to(device), None)
        return out, lambda output: loss_fn(mb, output)

    pgc = engine.pgc
    fb = get_forward_backward_func(pp_size=engine.layout.pp, vp_size=None)
    reports = fb(
        forward_step_func=forward_step, data_iterator=iter(mbs), model=engine.model,
        num_microbatches=len(mbs), seq_length=max(int(m.input_ids.shape[1]) for m in mbs),
        micro_batch_size=max(m.size for m in mbs), forward_only=forward_only,
        p2p_communicator=P2PCommunicator(pp_group=pgc.pp, config=engine.config),
        pg_collection=pgc,
    )
    return broadcast_from_last_stage(engine, list(reports) if engine.is_last_stage else None)


def _run_without_pipeline(engine: ModelEngine, mbs: list[SeqBatch], loss_fn: LossFn, *,
                          forward_only: bool) -> list[dict[str, Any]]:
    """pp=1: what Megatron's `forward_backward_no_pipelining` does for a (loss, report) loss
    function, without its machinery: per micro-batch, forward, loss / micro-batches (times the
    optimizer's loss scale), backward, gradient sync held back until the last micro-batch;
    then `finalize_model_grads`. Forward, loss and backward run without the CPU device
    rewrites (they need none; the per-op Python dispatch costs ~30% on small models). At
    tp = 1 the forward is the lean one (`runtime.engine.lean`: the same model without
    Megatron's per-layer machinery)."""
    config, model, n = engine.config, engine.model, len(mbs)
    device = platform.device()
    no_sync = config.no_sync_func if not forward_only and config.no_sync_func is not None else None
    scale = config.grad_scale_func
    reports: list[dict[str, Any]] = []
    engine.module.set_input_tensor(None)
    forward = partial(lean.forward, engine) if lean.applies(engine) else lambda ids, pos: model(ids, pos, None)
    for i, mb in enumerate(mbs):
        with (no_sync() if no_sync is not None and i < n - 1 else nullcontext()), platform.without_cuda_rewrites():
            out = forward(mb.input_ids.to(device), mb.positions().to(device))
            loss, report = loss_fn(mb, out)
            reports.append(report)
            if not forward_only:
                loss = loss / n
                if scale is not None:
                    loss = scale(loss)
                if loss.requires_grad:
                    loss.backward()
    if not forward_only and config.finalize_model_grads_func is not None:
        if engine.layout.mesh.size == 1 and getattr(config.finalize_model_grads_func, "__name__", "") == \
                "finalize_model_grads" and hasattr(model, "finish_grad_sync"):
            # one rank: Megatron's finalize reduces over tp / pp / embedding groups of one and walks
            # every module for MoE state; only the DDP buffers' own finish is left to do
            model.finish_grad_sync()
        else:
            config.finalize_model_grads_func([model], None, pg_collection=engine.pgc)
    return reports


def broadcast_from_last_stage(engine: ModelEngine, obj: Any) -> Any:
    """Give every pipeline stage the last stage's object (no-op at pp=1)."""
    if engine.layout.pp == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=engine.stage_rank(engine.layout.pp - 1),
                               group=engine.pgc.pp)
    return box[0]


def all_reduce_sum(x: torch.Tensor, group: Any) -> torch.Tensor:
    """Sum of a small tensor over a group (a copy; the input is left unchanged)."""
    out = x.detach().clone().float()
    if group is not None and group.size() > 1:
        dist.all_reduce(out, group=group)
    return out


@contextmanager
def _world_is(group: Any) -> Iterator[None]:
    """Make world-wide calls default to `group` for a while.

    `get_megatron_optimizer` (0.16.1) all-gathers its parameter-group keys over the WORLD,
    which would force every rank to build every optimizer at once; scoped to the
    engine's mesh it needs only the engine's ranks (whose keys are identical anyway).
    """
    orig_gather, orig_size = dist.all_gather_object, dist.get_world_size

    def gather(object_list: list, obj: Any, group_: Any = None) -> None:
        orig_gather(object_list, obj, group=group_ or group)

    def size(group_: Any = None) -> int:
        return orig_size(group_ or group)

    dist.all_gather_object, dist.get_world_size = gather, size  # type: ignore[assignment]
    try:
        yield
    finally:
        dist.all_gather_object, dist.get_world_size = orig_gather, orig_size  # type: ignore[assignment]


def lr_at(step: int, *, lr: float, warmup_steps: int, schedule: str, total_steps: int,
          min_ratio: float = 0.0) -> float:
    """Learning rate at optimizer step `step` (0-based): linear warm-up, then constant,
    linear or cosine decay to `min_ratio * lr` at `total_steps`."""
    if warmup_steps and step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    if schedule == "constant":
        return lr
    span = max(total_steps - warmup_steps, 1)
    frac = min(max(step - warmup_steps, 0) / span, 1.0)
    if schedule == "linear":
        decay = 1.0 - frac
    elif schedule == "cosine":
        decay = 0.5 * (1.0 + math.cos(math.pi * frac))
    else:
        raise ValueError(f"unknown lr_schedule {schedule!r}; known: constant, linear, cosine")
    return lr * (min_ratio + (1.0 - min_ratio) * decay)


@dataclass(frozen=True, kw_only=True)
class OptimizerShard:
    """One main-param shard of the distributed optimizer on this rank."""

    param: torch.nn.Parameter
    """The model parameter (TP-local, as the engine holds it)."""
    main: torch.Tensor
    """The fp32 main parameter: flat, `stop - start` elements."""
    start: int
    """First element of `param.view(-1)` this shard covers."""
    stop: int
    """One past the last."""
    inner: Any
    """The torch optimizer whose `state[main]` holds the Adam moments."""
    aliases_param: bool
    """True when `main` is a view of the model parameter (fp32 training): saving the weights saves it."""


def _plain_torch_step(inner: torch.optim.Optimizer) -> None:
    """Run a torch optimizer's step without the CPU device rewrites: Adam's arithmetic needs
    none, and on CPU the per-op dispatch of the rewrite mode costs more than the ops of a
    small model (Megatron's own code around it, clipping and the grad norm, keeps them)."""
    step = inner.step

    def plain_step(*args: Any, **kwargs: Any) -> Any:
        with platform.without_cuda_rewrites():
            return step(*args, **kwargs)

    inner.step = plain_step  # type: ignore[method-assign]


class Trainer:
    """Megatron DDP + distributed optimizer + LR schedule for one engine."""

    def __init__(self, engine: ModelEngine, args: OptimArgs, *, total_steps: int) -> None:
        from megatron.core.distributed import DistributedDataParallel, DistributedDataParallelConfig
        from megatron.core.distributed.finalize_model_grads import finalize_model_grads
        from megatron.core.optimizer import OptimizerConfig, get_megatron_optimizer

        self.engine, self.total_steps, self.step = engine, total_steps, 0
        ddp_config = DistributedDataParallelConfig(
            grad_reduce_in_fp32=True, overlap_grad_reduce=False, use_distributed_optimizer=True)
        ddp = DistributedDataParallel(config=engine.config, ddp_config=ddp_config,
                                      module=engine.module, pg_collection=engine.pgc)
        engine.model = ddp
        engine.config.no_sync_func = ddp.no_sync
        engine.config.finalize_model_grads_func = finalize_model_grads
        self.opt_config = OptimizerConfig(
            optimizer="adam", lr=args.lr, weight_decay=args.weight_decay,
            clip_grad=args.grad_clip, bf16=engine.bf16, params_dtype=engine.dtype,
            use_distributed_optimizer=True, adam_beta1=0.9, adam_beta2=0.999, adam_eps=1e-8)
        with _world_is(engine.pgc.mesh):
            self.optimizer = get_megatron_optimizer(
                self.opt_config, [ddp], use_gloo_process_groups=False, pg_collection=engine.pgc)
        engine.config.grad_scale_func = self.optimizer.scale_loss
        for part in getattr(self.optimizer, "chained_optimizers", [self.optimizer]):
            _plain_torch_step(part.optimizer)
        self.args = args

    def reload_model_params(self) -> None:
        """Refresh the optimizer's main (fp32) params after the model's were rewritten."""
        self.optimizer.reload_model_params()

    def _apply_args(self, args: OptimArgs) -> None:
        lr = lr_at(self.step, lr=args.lr, warmup_steps=args.warmup_steps,
                   schedule=args.lr_schedule, total_steps=self.total_steps)
        for group in self.optimizer.param_groups:  # keep Megatron's per-group multipliers
            group["lr"] = lr * group.get("lr_mult", 1.0)
            group["weight_decay"] = args.weight_decay * group.get("wd_mult", 1.0)
        self.opt_config.clip_grad = args.grad_clip  # the config object the optimizers share
        self.last_lr = lr

    def train_step(self, mbs: list[SeqBatch], loss_fn: LossFn, args: OptimArgs) -> dict[str, float]:
        """One optimizer step over the micro-batches; returns summed report scalars + stats.
        Inside a fused pair (`runtime.engine.fused`), the step runs in the pair's one pipeline."""
        from runtime.engine import fused

        pair = fused.current()
        if pair is not None:
            return pair.train_step(self, mbs, loss_fn, args)
        self.begin_step(args)
        return self.finish_step(run_micro_batches(self.engine, mbs, loss_fn, forward_only=False))

    def begin_step(self, args: OptimArgs) -> None:
        """Before a step's micro-batches: learning rate, training mode, zeroed gradients."""
        self._apply_args(args)
        self.engine.set_training(True)
        self.engine.model.zero_grad_buffer()
        self.optimizer.zero_grad()

    def finish_step(self, reports: list[dict[str, Any]]) -> dict[str, float]:
        """After a step's micro-batches (gradients finalized): the optimizer step, the EMA and
        the summed reports."""
        engine = self.engine
        ok, grad_norm, _ = self.optimizer.step()
        self.step += 1
        ema = engine.ema  # set by the executor when the run keeps an EMA
        if ema is not None:
            ema.update(engine)
        totals: dict[str, float] = {}
        for rep in reports:
            for k, v in rep.items():
                totals[k] = totals.get(k, 0.0) + float(v)
        keys = sorted(totals)
        summed = all_reduce_sum(torch.tensor([totals[k] for k in keys]), engine.pgc.dp)
        out = {k: float(v) for k, v in zip(keys, summed)}
        out.update(grad_norm=float(grad_norm or 0.0), lr=self.last_lr, update_ok=float(bool(ok)))
        return out


    # ------------------------------------------------------------------ checkpoints

    def _main_params(self) -> list[tuple[Any, torch.Tensor]]:
        """(inner optimizer, main-param shard) of this rank, in a fixed order."""
        opt = self.optimizer
        out = []
        for part in getattr(opt, "chained_optimizers", [opt]):
            for group in part.optimizer.param_groups:
                out.extend((part.optimizer, p) for p in group["params"])
        return out

    def optimizer_shards(self) -> list[OptimizerShard]:
        """Where every main-param shard of this rank sits in its model parameter: the
        distributed optimizer owns the flat range [start, stop) of each (TP-local) parameter
        on this DP rank. Checkpoints reshard the optimizer state by these ranges."""
        out = []
        for part in getattr(self.optimizer, "chained_optimizers", [self.optimizer]):
            pairs = [(m, s) for models, mains in zip(part.model_float16_groups, part.shard_fp32_from_float16_groups)
                     for m, s in zip(models, mains)]
            pairs += [(m, s) for models, mains in zip(part.model_fp32_groups, part.shard_fp32_groups)
                      for m, s in zip(models, mains)]
            for model_param, main in pairs:
                rng = part._get_model_param_range_map(model_param)["param"]
                aliases = main.untyped_storage().data_ptr() == model_param.untyped_storage().data_ptr()
                out.append(OptimizerShard(param=model_param, main=main, start=rng.start, stop=rng.end,
                                          inner=part.optimizer, aliases_param=aliases))
        return out

    def state_dict(self) -> dict[str, Any]:
        """This rank's optimizer state: step counter (it sets the LR), the fp32 main-param
        shards and the Adam moments, in the distributed optimizer's order. Only a Trainer of
        the same model on the same layout can load it."""
        params, states = [], []
        for inner, p in self._main_params():
            params.append(p.detach().to("cpu", copy=True))  # compact host copies (shards are views)
            states.append({k: v.detach().to("cpu", copy=True) if torch.is_tensor(v) else v
                           for k, v in inner.state.get(p, {}).items()})
        return {"step": self.step, "main_params": params, "state": states}

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        """Restore `state_dict()` output (after the model weights are loaded)."""
        mine = self._main_params()
        if len(mine) != len(saved["main_params"]):
            raise ValueError(f"optimizer state holds {len(saved['main_params'])} parameter shards, this "
                             f"rank's optimizer has {len(mine)}; resharding a checkpoint is not supported")
        with torch.no_grad():
            for (inner, p), value, state in zip(mine, saved["main_params"], saved["state"]):
                if p.shape != value.shape:
                    raise ValueError(f"optimizer shard of shape {list(value.shape)} does not fit "
                                     f"{list(p.shape)}; resharding a checkpoint is not supported")
                p.copy_(value)
                # like torch's own loading: `step` stays where it was saved (CPU), moments go to the param
                inner.state[p] = {k: (v.clone() if k == "step" else v.to(p.device, copy=True))
                                  if torch.is_tensor(v) else v for k, v in state.items()}
        self.step = int(saved["step"])
