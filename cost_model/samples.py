"""Measured samples of a profile (what `realloc profile` writes and `cost_model.calibration` fits).

Calibration: fit achieved rates and fixed overheads from measured samples.

Kinds of samples, each a frozen dataclass (and a JSON object in a profile file). Every
sample carries `busy`: how many devices of its node were computing while it was
measured. Where the devices share fewer host cores (`ContentionSample`), a time is
divided by the slowdown `busy / host_cores` before fitting, so the fitted numbers are
those of a device running alone (the simulator applies the slowdown again when it
overlaps calls).

- ContentionSample: the same work on one device alone and on `devices` at once; the
  effective host cores = devices * alone / together (median), at most the node's `cores`
  (0, "no sharing", with a core per device, or below 15% slowdown when `cores` is unknown).
- ComputeSample: `layers` transformer layers' forward (passes=1) or forward+backward
  (passes=3) over `micro_batches` micro-batches: `flops` and measured `time_s`. Fitted
  per dtype by least squares as time = passes * micro_batches * (micro_batch_overhead +
  layers * layer_overhead) + flops / achieved_flops. (With every sample at one layer and
  one micro-batch the two overheads cannot be told apart: all goes to layer_overhead.)
- MemorySample: a memory-bound pass reading `bytes`; time = a + bytes / bandwidth.
- DecodeSample: a whole KV-cached generation of `batch` sequences: one prefill
  (`prefill_flops`) then `steps` decode steps each reading `bytes`, sampling steps + 1
  tokens. After the compute fit prices the prefill and the per-layer overheads, time =
  fixed + (steps + 1) * (decode_step_overhead + batch * decode_sample_overhead) + steps *
  bytes / bandwidth; `fixed` joins the generate call overhead.
- CollectiveSample: `op` (all_reduce, all_gather, reduce_scatter, p2p) over
  `group_size` devices on an "intra" or "inter" node link, buffer `bytes`, `time_s`;
  fitted per link as time = steps * latency + wire_bytes / achieved_bandwidth with the
  ring factors of `cost_model.collectives`.
- OptimizerSample: one optimizer step over `params` local parameters; time = fixed +
  params * optimizer_param_time (the fixed part joins train_step_overhead); fitted on the
  samples of one busy device when there are any.
- CallSample: what a call of `kind` costs beyond its core work (measured interface time
  minus the measured forward / train step / generation of the same batch) on `dp` ranks;
  kind "train_step" is a train step beyond its forward+backward and optimizer step, kind
  "rule" a whole rule-based reward call (no core work: fixed + seqs * per_sequence become
  rule_call_overhead and rule_seq_overhead).
  Fitted per kind as overhead = fixed + seqs * per_sequence + (dp - 1) * (per_rank + seqs *
  per_rank_sequence), with `seqs` the sequences per data-parallel rank.
- MoveSample: one reallocation or data transfer: what it took beyond the fitted link time
  of its busiest rank (peers x latency + bytes / bandwidth) is fitted as fixed + peers x
  per_peer for reallocations (a local-only one exchanges no messages), and as the median
  fixed overhead of data transfers.
- CoRunSample: the same work on one one-thread worker alone and on `workers` of them at once
  (at most one per core, so no core is shared): a model's forward+backward whose weights
  outgrow the last-level cache ("compute", per `hidden`), its decode-shaped forward ("decode"),
  or a read of a buffer several times the cache ("memory"). Co-running processes share the
  cache and the memory bandwidth; the speed at co-run (alone_s / together_s, at most 1) is the
  median per kind and hidden size.
- ThreadSample: the same forward+backward of `layers` layers of `hidden` size on one worker
  alone, with one torch thread and with `threads`; the thread efficiency at that size is
  (one_s / time_s - 1) / (threads - 1), clipped to [0, 1], the median per size over its
  deepest samples (a model beyond the cache gains more from threads than one layer in it).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cost_model.collectives import wire_factor
from cost_model.hardware import CALL_KINDS

LINKS = ("intra", "inter")
CALL_SAMPLE_KINDS = (*CALL_KINDS, "train_step", "rule")


def _check(name: str, ok: bool, sample: object) -> None:
    if not ok:
        raise ValueError(f"{type(sample).__name__}: {name}, got {sample}")


@dataclass(frozen=True, kw_only=True)
class ContentionSample:
    """The same work timed on one device alone and on `devices` devices at once."""

    devices: int
    """Devices of the node that computed at once."""
    alone_s: float
    """Seconds on one device while the others idle."""
    together_s: float
    """Seconds per device while all `devices` compute."""
    cores: int = 0
    """Cores the node's workers may run on (0: unknown); the effective count never exceeds it
    (outside load on a busy machine hides the slowdown and would suggest more)."""

    def __post_init__(self) -> None:
        _check("needs devices >= 2, alone_s > 0, together_s > 0, cores >= 0",
               self.devices >= 2 and self.alone_s > 0 and self.together_s > 0 and self.cores >= 0, self)


@dataclass(frozen=True, kw_only=True)
class ComputeSample:
    """Measured time of `layers` layers' forward (passes=1) or forward+backward (passes=3)."""

    flops: float
    """FLOPs of the pass (shapes.layer_forward_flops x layers x passes, plus the head)."""
    time_s: float
    """Measured seconds."""
    passes: int = 1
    """Forward-equivalent passes: 1 forward, 3 forward+backward, 4 with recomputation."""
    dtype: str = "bf16"
    """Dtype of the GEMMs."""
    layers: int = 1
    """Transformer layers the pass went through."""
    micro_batches: int = 1
    """Micro-batches of the pass."""
    busy: int = 1
    """Devices of the node computing while it was measured."""
    tp: int = 1
    """Tensor-parallel degree (flops are per device); only tp=1 samples are fitted when there
    are any, since at tp > 1 the time includes the TP collectives the estimator prices apart."""
    speed: bool = False
    """A sample of a larger layer (`hidden`) for the speed-by-size table: the main rate fit
    leaves it out and measures against it how much faster large matrices compute."""
    hidden: int = 0
    """Hidden size of the layers (0: not recorded, as in profiles before the speed samples)."""
    decode: bool = False
    """A speed sample of a decode step's shape (one token per sequence)."""

    def __post_init__(self) -> None:
        _check("needs flops > 0, time_s > 0, passes, layers, micro_batches, busy, tp >= 1, hidden >= 0 "
               "(> 0 for a speed sample)",
               self.flops > 0 and self.time_s > 0 and min(self.passes, self.layers, self.micro_batches,
                                                          self.busy, self.tp) >= 1
               and self.hidden >= 0 and (self.hidden > 0 or not self.speed), self)


@dataclass(frozen=True, kw_only=True)
class MemorySample:
    """Measured time of a memory-bound pass reading `bytes`."""

    bytes: float
    """Bytes read from device memory."""
    time_s: float
    """Measured seconds."""
    cache_bytes: float = 0.0
    """Last-level cache of the machine measured on (0: not recorded): a sample that records it
    reads well beyond it and measures the DRAM rate (`HardwareSpec.dram_bandwidth`)."""

    def __post_init__(self) -> None:
        _check("needs bytes > 0, time_s > 0 and cache_bytes >= 0",
               self.bytes > 0 and self.time_s > 0 and self.cache_bytes >= 0, self)


@dataclass(frozen=True, kw_only=True)
class DecodeSample:
    """Measured time of one KV-cached generation: a prefill, then `steps` decode steps."""

    steps: int
    """Decode steps after the prefill."""
    batch: int
    """Sequences decoded together."""
    layers: int
    """Transformer layers of the model (its shard on this device)."""
    bytes: float
    """Bytes one decode step reads (weights and the KV cache at the average context)."""
    prefill_flops: float
    """FLOPs of the prefill (layers and head)."""
    time_s: float
    """Measured seconds of the whole generation."""
    dtype: str = "bf16"
    """Dtype of the GEMMs."""
    busy: int = 1
    """Devices of the node computing while it was measured."""
    tp: int = 1
    """Tensor-parallel degree; only tp=1 samples are fitted when there are any (see ComputeSample)."""

    def __post_init__(self) -> None:
        _check("needs steps >= 0, batch, layers, busy, tp >= 1, bytes >= 0, prefill_flops >= 0, time_s > 0",
               self.steps >= 0 and min(self.batch, self.layers, self.busy, self.tp) >= 1 and self.bytes >= 0
               and self.prefill_flops >= 0 and self.time_s > 0, self)


@dataclass(frozen=True, kw_only=True)
class CollectiveSample:
    """Measured time of one collective or p2p send."""

    op: str
    """all_reduce, all_gather, reduce_scatter or p2p."""
    link: str
    """"intra" (one node) or "inter" (the group spans nodes)."""
    group_size: int
    """Devices in the group (2 for p2p)."""
    bytes: float
    """Buffer bytes per device (the full gathered size for all_gather / reduce_scatter)."""
    time_s: float
    """Measured seconds."""
    busy: int = 1
    """Devices of the node computing while it was measured."""

    def __post_init__(self) -> None:
        wire_factor(self.op, self.group_size)  # validates op
        if self.link not in LINKS:
            raise ValueError(f"collective sample link {self.link!r} must be one of {LINKS}")
        _check("needs group_size >= 2, bytes > 0, time_s > 0, busy >= 1",
               self.group_size >= 2 and self.bytes > 0 and self.time_s > 0 and self.busy >= 1, self)


@dataclass(frozen=True, kw_only=True)
class OptimizerSample:
    """Measured time of one optimizer step over `params` local parameters."""

    params: float
    """Parameters this device updates."""
    time_s: float
    """Measured seconds."""
    busy: int = 1
    """Devices of the node computing while it was measured."""

    def __post_init__(self) -> None:
        _check("needs params > 0, time_s > 0, busy >= 1",
               self.params > 0 and self.time_s > 0 and self.busy >= 1, self)


@dataclass(frozen=True, kw_only=True)
class CallSample:
    """What a call costs beyond its core work, measured on `dp` data-parallel ranks."""

    kind: str
    """generate, inference, train (a whole call), train_step (one optimizer step) or rule (a
    whole rule-based reward call)."""
    dp: int
    """Data-parallel ranks of the call."""
    overhead_s: float
    """Measured call time minus the measured core work of the same batch (noise may make it < 0)."""
    seqs: float = 0.0
    """Sequences per data-parallel rank."""
    busy: int = 1
    """Devices of the node computing while it was measured."""

    def __post_init__(self) -> None:
        if self.kind not in CALL_SAMPLE_KINDS:
            raise ValueError(f"call sample kind {self.kind!r} unknown; use one of {', '.join(CALL_SAMPLE_KINDS)}")
        _check("needs dp >= 1, busy >= 1 and a finite overhead_s",
               self.dp >= 1 and self.busy >= 1 and math.isfinite(self.overhead_s), self)


MOVE_KINDS = ("realloc", "data")


@dataclass(frozen=True, kw_only=True)
class MoveSample:
    """Measured time of one parameter reallocation or one data transfer between calls."""

    kind: str
    """realloc or data."""
    busiest_bytes: float
    """Bytes the busiest rank sends or receives over links (0 when every copy is local)."""
    peers: int
    """Most distinct peers one rank exchanges messages with."""
    time_s: float
    """Measured seconds."""
    busy: int = 1
    """Devices of the node computing while it was measured."""

    def __post_init__(self) -> None:
        if self.kind not in MOVE_KINDS:
            raise ValueError(f"move sample kind {self.kind!r} unknown; use one of {', '.join(MOVE_KINDS)}")
        _check("needs busiest_bytes >= 0, peers >= 0, time_s > 0, busy >= 1",
               self.busiest_bytes >= 0 and self.peers >= 0 and self.time_s > 0 and self.busy >= 1, self)


@dataclass(frozen=True, kw_only=True)
class ThreadSample:
    """Layers' forward+backward on one worker alone, with one torch thread and with more."""

    hidden: int
    """Hidden size of the layer (ffn twice that)."""
    threads: int
    """Torch threads of the second timing (>= 2)."""
    one_s: float
    """Seconds with one torch thread."""
    time_s: float
    """Seconds with `threads` torch threads."""
    layers: int = 1
    """Layers of the model timed: one (in the cache), or the co-run model's (beyond it, as a real
    model; where a size has both, the fit takes the deeper)."""

    def __post_init__(self) -> None:
        _check("needs hidden >= 1, threads >= 2, one_s > 0, time_s > 0, layers >= 1",
               self.hidden >= 1 and self.threads >= 2 and self.one_s > 0 and self.time_s > 0
               and self.layers >= 1, self)

    @property
    def efficiency(self) -> float:
        """What each thread beyond the first adds, as a fraction of the first (in [0, 1])."""
        return min(1.0, max(0.0, (self.one_s / self.time_s - 1.0) / (self.threads - 1)))


CORUN_KINDS = ("compute", "decode", "memory")


@dataclass(frozen=True, kw_only=True)
class CoRunSample:
    """The same work on one worker alone and on `workers` one-thread workers at once."""

    kind: str
    """"compute" (a forward+backward of layers of `hidden` size), "decode" (their forward of one
    token per sequence) or "memory" (a buffer read)."""
    workers: int
    """Workers that ran it at once (at most the cores)."""
    bytes: float
    """Weights (compute) or buffer (memory) bytes each worker reads."""
    alone_s: float
    """Seconds on one worker while the others wait."""
    together_s: float
    """Seconds per worker while all `workers` run it."""
    hidden: int = 0
    """Hidden size of the layers (compute and decode samples)."""

    def __post_init__(self) -> None:
        _check(f"needs kind in {CORUN_KINDS}, workers >= 2, bytes > 0, alone_s > 0, together_s > 0, "
               "hidden >= 1 unless memory",
               self.kind in CORUN_KINDS and self.workers >= 2 and self.bytes > 0 and self.alone_s > 0
               and self.together_s > 0 and (self.hidden >= 1 or self.kind == "memory"), self)

    @property
    def speed(self) -> float:
        """Speed of each worker at co-run relative to alone (at most 1: a faster co-run is noise)."""
        return min(1.0, self.alone_s / self.together_s)


SAMPLE_KINDS: dict[str, type] = {
    "contention": ContentionSample, "compute": ComputeSample, "memory": MemorySample,
    "decode": DecodeSample, "collectives": CollectiveSample, "optimizer": OptimizerSample,
    "calls": CallSample, "moves": MoveSample, "threads": ThreadSample, "corun": CoRunSample,
}


@dataclass(frozen=True, kw_only=True)
class Samples:
    """All measured samples of a profile."""

    contention: tuple[ContentionSample, ...] = ()
    compute: tuple[ComputeSample, ...] = ()
    memory: tuple[MemorySample, ...] = ()
    decode: tuple[DecodeSample, ...] = ()
    collectives: tuple[CollectiveSample, ...] = ()
    optimizer: tuple[OptimizerSample, ...] = ()
    calls: tuple[CallSample, ...] = ()
    moves: tuple[MoveSample, ...] = ()
    threads: tuple[ThreadSample, ...] = ()
    corun: tuple[CoRunSample, ...] = ()

    def __bool__(self) -> bool:
        return any(getattr(self, k) for k in SAMPLE_KINDS)

    def to_dict(self) -> dict[str, Any]:
        return {k: [dataclasses.asdict(s) for s in getattr(self, k)] for k in SAMPLE_KINDS}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Samples:
        for key in d:
            if key not in SAMPLE_KINDS:
                raise ValueError(f"profile samples: unknown kind {key!r}; known: {', '.join(SAMPLE_KINDS)}")
        out = {}
        for key, kind in SAMPLE_KINDS.items():
            try:
                out[key] = tuple(kind(**s) for s in d.get(key, ()))
            except TypeError as exc:
                raise ValueError(f"profile samples[{key!r}]: {exc}") from None
        return cls(**out)
