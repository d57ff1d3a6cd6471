"""Intra-stage fusion at run time: two train calls on one placement share one pipeline per step.

`run_pair(first, second)` runs two train interfaces (PPO's actor_train and critic_train, placed
on the same devices with the same pp > 1; `graph.overlap.intra_candidates`) as one step of a
rank's program. Each interface runs in its own thread, but only one thread runs at a time (a
baton passed at fixed points), so every rank issues its collectives in the same order and the
result does not depend on timing:

1. the first interface runs until its Trainer.train_step, parks its micro-batches there and
   hands the baton to the second;
2. the second runs until its own train_step; then both steps run as ONE Megatron 1F1B
   schedule over the first call's micro-batches followed by the second's (the second's
   forwards fill the first's drain, so the pair pays one pipeline fill/drain instead of two;
   `cost_model.pipeline_fusion` prices this and shows why the two are concatenated rather
   than alternated), then each model's optimizer step;
3. both go on to their next step (PPO epochs and mini-batches pair up in order); a step
   left without a partner (the other call took fewer) runs alone.

What overlaps: in the fused schedule a stage that has finished the first model's backward
work is already running the second model's forwards, where unfused it would idle through
the first pipeline's drain and the second's fill. Nothing else (optimizer steps, the
gradient reduce-scatters, the Python work between steps) overlaps. Numerics: each model's
gradients are its own, so the fused step equals the two unfused steps up to the order of
two scalar factors on each loss (the schedule divides by the fused micro-batch count and
the loss is rescaled to undo it), i.e. float rounding.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import torch

from runtime.data.batch import SeqBatch
from runtime.engine import platform
from runtime.engine.schedule import LossFn, broadcast_from_last_stage, run_micro_batches

if TYPE_CHECKING:
    from graph.catalog import OptimArgs
    from runtime.engine.schedule import Trainer

_ACTIVE: FusedPair | None = None
_INDEX = threading.local()

Request = tuple["Trainer", list[SeqBatch], LossFn, "OptimArgs"]


def current() -> FusedPair | None:
    """The pair the calling thread's train step belongs to (None outside `run_pair`)."""
    if _ACTIVE is None or getattr(_INDEX, "value", None) is None:
        return None
    return _ACTIVE


def run_pair(first: Callable[[], Any], second: Callable[[], Any]) -> tuple[Any, Any, int]:
    """Run two train interfaces with their steps fused; (first's result, second's, fused steps)."""
    global _ACTIVE
    if _ACTIVE is not None:
        raise AssertionError("bug: nested fused train pairs")
    pair = FusedPair()
    _ACTIVE = pair
    try:
        return (*pair.run(first, second), pair.fused_steps)
    finally:
        _ACTIVE = None


class FusedPair:
    """The baton and the parked step of two train interfaces (see the module docstring)."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.turn = 0
        self.parked: dict[int, Request] = {}
        self.results: dict[int, dict[str, float]] = {}
        self.done = [False, False]
        self.fused_steps = 0

    def run(self, first: Callable[[], Any], second: Callable[[], Any]) -> tuple[Any, Any]:
        out: list[Any] = [None, None]
        errors: list[BaseException] = []  # in the order they happened: the first is the cause

        def worker(i: int, fn: Callable[[], Any]) -> None:
            _INDEX.value = i
            with self.cond:
                self.cond.wait_for(lambda: self.turn == i)
            try:
                with platform.in_thread():
                    out[i] = fn()
            except BaseException as exc:  # re-raised by the caller's thread below
                errors.append(exc)
            finally:
                with self.cond:
                    self.done[i] = True
                    self.turn = 1 - i
                    self.cond.notify_all()

        threads = [threading.Thread(target=worker, args=(i, fn), name=f"fused-train-{i}", daemon=True)
                   for i, fn in enumerate((first, second))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise errors[0]
        return out[0], out[1]

    def train_step(self, trainer: Trainer, mbs: list[SeqBatch], loss_fn: LossFn,
                   args: OptimArgs) -> dict[str, float]:
        """Trainer.train_step inside the pair: park, or run the fused step, or run alone."""
        i = _INDEX.value
        j = 1 - i
        mine: Request = (trainer, mbs, loss_fn, args)
        with self.cond:
            if j in self.parked:  # the other call waits with its step: run both now
                other = self.parked.pop(j)
                first, second = (other, mine) if j == 0 else (mine, other)
                res = fused_step(first, second)
                self.fused_steps += 1
                self.results[j] = res[j]
                return res[i]
            if self.done[j]:
                return _alone(mine)
            self.parked[i] = mine
            self.turn = j
            self.cond.notify_all()
            self.cond.wait_for(lambda: self.turn == i)
            if i in self.results:
                return self.results.pop(i)
            if i not in self.parked:
                raise RuntimeError("the fused train step failed in the other call's thread")
            return _alone(self.parked.pop(i))  # the other call ended without a step to pair


def _alone(req: Request) -> dict[str, float]:
    trainer, mbs, loss_fn, args = req
    trainer.begin_step(args)
    return trainer.finish_step(run_micro_batches(trainer.engine, mbs, loss_fn, forward_only=False))


class _PairModel:
    """What Megatron's schedule asks of its `model`: the (fused) config, the model type and
    set_input_tensor; the forward step gives the received activation to the right model."""

    def __init__(self, config: Any, model_type: Any) -> None:
        self.config, self.model_type = config, model_type
        self.input_tensor: Any = None

    def set_input_tensor(self, tensor: Any) -> None:
        self.input_tensor = tensor


def fused_step(first: Request, second: Request) -> tuple[dict[str, float], dict[str, float]]:
    """One optimizer step of each of two trainers on the same placement (pp > 1), their
    micro-batches in one 1F1B schedule (first's, then second's)."""
    from megatron.core.pipeline_parallel import get_forward_backward_func
    from megatron.core.pipeline_parallel.p2p_communication import P2PCommunicator

    trainers = (first[0], second[0])
    engines = tuple(t.engine for t in trainers)
    pp = engines[0].layout.pp
    if pp < 2 or engines[1].layout.pp != pp or engines[0].layout.mesh != engines[1].layout.mesh:
        raise AssertionError(f"bug: fused train step on {engines[0].layout} and {engines[1].layout}")
    for t, req in zip(trainers, (first, second)):
        t.begin_step(req[3])
    items = [(0, mb) for mb in first[1]] + [(1, mb) for mb in second[1]]
    counts = (len(first[1]), len(second[1]))
    losses = (first[2], second[2])
    n = len(items)
    device = platform.device()

    @contextmanager
    def no_sync() -> Iterator[None]:
        with engines[0].config.no_sync_func(), engines[1].config.no_sync_func():
            yield

    def finalize(_models: Any, num_tokens: Any = None, pg_collection: Any = None, **kwargs: Any) -> None:
        for e in engines:
            e.config.finalize_model_grads_func([e.model], num_tokens, pg_collection=e.pgc, **kwargs)

    config = copy.copy(engines[0].config)
    config.no_sync_func, config.finalize_model_grads_func = no_sync, finalize
    config.grad_scale_func = config.grad_sync_func = config.param_sync_func = None
    wrapper = _PairModel(config, engines[0].module.model_type)

    def forward_step(data_iterator: Any, _model: Any) -> tuple[torch.Tensor, Any]:
        k, mb = next(data_iterator)
        e = engines[k]
        e.module.set_input_tensor(wrapper.input_tensor)
        with platform.without_cuda_rewrites():
            out = e.model(mb.input_ids.to(device), mb.positions().to(device), None)

        def loss(output: torch.Tensor) -> tuple[torch.Tensor, dict[str, Any]]:
            value, report = losses[k](mb, output)
            value = value * (n / counts[k])  # the schedule divides by n, the loss undid counts[k]
            scale = e.config.grad_scale_func
            return (scale(value) if scale is not None else value), report

        return out, loss

    fb = get_forward_backward_func(pp_size=pp, vp_size=None)
    reports = fb(
        forward_step_func=forward_step, data_iterator=iter(items), model=wrapper, num_microbatches=n,
        seq_length=max(int(mb.input_ids.shape[1]) for _, mb in items),
        micro_batch_size=max(mb.size for _, mb in items), forward_only=False,
        p2p_communicator=P2PCommunicator(pp_group=engines[0].pgc.pp, config=config),
        pg_collection=engines[0].pgc,
    )
    reports = broadcast_from_last_stage(engines[0], list(reports) if engines[0].is_last_stage else None)
    return trainers[0].finish_step(reports[:counts[0]]), trainers[1].finish_step(reports[counts[0]:])
