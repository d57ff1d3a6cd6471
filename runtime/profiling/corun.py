"""The profile's co-run samples (CPU): how much one-thread workers slow each other down when they
compute at once on their own cores.

Workers on one CPU host share its last-level cache and its memory bandwidth. A plan that spreads
a call over `dp` one-thread workers pays for that; one worker with `dp` threads reads each
weight once for all its threads and does not (the thread samples price that). Two samples, each
timed on rank 0 alone and on `min(workers, cores)` workers at once, alternating, wall time:

- compute: a forward+backward of a synthetic model of each `speed_hidden` size with enough
  layers that each worker's weights are 4x the cache (as a real model's outgrow it: the
  slowdown grows with them; 2x the cache in all measured a third of it here), at most
  `corun_max_layers`;
- decode: a forward of `speed_decode_batch` one-token sequences through the same model (a
  decode step's shape);
- memory: a matrix-vector product over weights 4x the cache (the reads of a decode step or an
  optimizer step).

The compute model is also timed on rank 0 alone with all the cores' threads: a thread sample of
a model beyond the cache (a 135M-parameter model gains 0.84 from a second thread here, one
layer in the cache 0.5-0.7), which the thread-efficiency fit prefers at its size.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist

from cost_model.samples import CoRunSample, ThreadSample
from graph.placement.params import stage_params
from runtime.profiling.grid import synthetic_arch

if TYPE_CHECKING:
    from runtime.profiling.machine import _Profiler

ROUNDS = 3
"""Alternating alone / together rounds per sample (the median is kept)."""


def _timed(fn: Callable[[], Any], runs: int) -> float:
    start = time.perf_counter()
    for _ in range(runs):
        fn()
    return (time.perf_counter() - start) / runs


def _alone_and_together(prof: _Profiler, fn: Callable[[], Any] | None, workers: int,
                        threads: int = 0) -> tuple[float, float, float]:
    """Median (alone, together, alone with `threads` torch threads; 0 without) wall seconds of
    `fn` over `ROUNDS` alternating rounds: on rank 0 while the rest wait (with one thread, then
    with `threads`), then on ranks below `workers` at once (rank 0's time); every rank takes part."""
    runs = 3  # per timing, so a single pass's jitter does not decide it
    alone, together, threaded = [], [], []
    if fn is not None:
        fn()  # warm-up
    for _ in range(ROUNDS):
        dist.barrier()
        if prof.rank == 0 and fn is not None:
            alone.append(_timed(fn, runs))
            if threads >= 2:
                before = torch.get_num_threads()
                torch.set_num_threads(threads)
                try:
                    fn()  # the new thread count's warm-up
                    threaded.append(_timed(fn, runs))
                finally:
                    torch.set_num_threads(before)
        dist.barrier()
        if fn is not None:
            together.append(_timed(fn, runs))
        dist.barrier()
    if prof.rank != 0:
        return 0.0, 0.0, 0.0
    return statistics.median(alone), statistics.median(together), statistics.median(threaded) if threaded else 0.0


def measure_corun(prof: _Profiler, cores: int, cache: int) -> None:
    """Append the co-run samples to `prof.samples["corun"]` (CPU, two cores or more; every rank calls)."""
    from runtime.profiling.machine import _batch, _layout, _pass

    workers = min(prof.n, cores)
    if torch.cuda.is_available() or workers < 2:
        return
    g = prof.grid
    cache = cache or 16 << 20  # unknown: taken as 16 MiB
    for hidden in g.speed_hidden:
        layer_bytes = stage_params(synthetic_arch(hidden, 1, g.vocab_size), value_head=False, tp=1, pp=1)[0] * 4
        layers = max(1, min(g.corun_max_layers, math.ceil(4 * cache / layer_bytes)))
        arch = synthetic_arch(hidden, layers, g.vocab_size)
        mine = None
        for r in range(prof.n):  # one single-rank engine per rank, built world-collectively
            engine = prof._engine(arch, _layout((r,)))
            mine = engine if engine is not None else mine
        weights = float(stage_params(arch, value_head=False, tp=1, pp=1)[0] * 4)
        for kind, mb in (("compute", _batch(*g.corun_shape, g.vocab_size)),
                         ("decode", _batch(g.speed_decode_batch, 1, g.vocab_size))):
            fn = (lambda e=mine, mb=mb, kind=kind: _pass(e, mb, forward_only=kind == "decode")) \
                if prof.rank < workers else None
            threads = cores if kind == "compute" else 0
            alone, together, threaded = _alone_and_together(prof, fn, workers, threads)
            if prof.rank == 0:
                prof.samples["corun"].append(CoRunSample(kind=kind, hidden=hidden, workers=workers, bytes=weights,
                                                         alone_s=alone, together_s=together))
                if threaded > 0:  # the same model with all the cores' threads: the thread efficiency
                    prof.samples["threads"].append(ThreadSample(hidden=hidden, threads=cores, one_s=alone,
                                                                time_s=threaded, layers=layers))
        mine = fn = None  # freed before the next size's engines
        dist.barrier()
        prof.progress.step(f"co-run: hidden={hidden}")
    fn = None
    if prof.rank < workers:
        weights = torch.randn(4 * cache // 4 // 1024, 1024)
        x = torch.randn(1024)
        fn = lambda: torch.mv(weights, x)  # noqa: E731
    alone, together, _ = _alone_and_together(prof, fn, workers)
    if prof.rank == 0:
        prof.samples["corun"].append(CoRunSample(kind="memory", workers=workers, bytes=float(4 * cache),
                                                 alone_s=alone, together_s=together))
    dist.barrier()
    prof.progress.step("co-run: memory")
