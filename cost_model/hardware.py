"""What a device and its links can do: HardwareSpec and the built-in presets.

A HardwareSpec holds peak rates (FLOP/s per dtype, memory and link bandwidth) and
achievable-efficiency factors; the estimator only ever uses *achieved* rates
(`peak * efficiency`). Measured profiles (see `cost_model.profile` for the JSON file
format) replace the efficiency factors and latencies by fitted values.

Presets: `a100-40g`, `a100-80g`, `h100-80g`, `h200` (SXM parts in 8-GPU HGX/DGX
nodes) and `cpu-gloo` (one CPU worker process per "device", gloo over shared memory;
rough defaults that a measured profile should replace). Each number cites its source.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

GiB = 1024**3
KINDS = ("gpu", "cpu-gloo")
DTYPE_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}
CALL_KINDS = ("generate", "inference", "train")
OVERHEAD_FIELDS = ("micro_batch_overhead_s", "decode_step_overhead_s", "decode_sample_overhead_s",
                   "tp_collective_overhead_s", "tp_step_overhead_s", "train_step_overhead_s",
                   "optimizer_param_time_s", "realloc_overhead_s", "realloc_peer_overhead_s",
                   "data_overhead_s", "rule_call_overhead_s", "rule_seq_overhead_s")


@dataclass(frozen=True, kw_only=True)
class HardwareSpec:
    """One kind of device, its node and its links."""

    name: str
    """Preset or profile name, e.g. "a100-80g"."""
    kind: str = "gpu"
    """"gpu" (NCCL) or "cpu-gloo" (a device is a CPU worker process, gloo links)."""
    devices_per_node: int = 8
    """Devices per node (GPUs, or worker processes)."""
    peak_flops: Mapping[str, float] = field(default_factory=dict)
    """Peak dense FLOP/s per dtype ("bf16", "fp16", "fp32")."""
    memory_bytes: float = 80 * GiB
    """Device memory capacity."""
    reserved_bytes: float = 2 * GiB
    """Memory the runtime itself takes (CUDA context, NCCL buffers, allocator slack)."""
    memory_bandwidth: float = 2.0e12
    """Peak device memory bandwidth, bytes/s."""
    intra_node_bandwidth: float = 300e9
    """Peak per-device, per-direction bandwidth to another device of its node, bytes/s."""
    intra_node_latency: float = 2e-6
    """Latency of one intra-node message (one step of a ring collective), s."""
    inter_node_bandwidth: float = 25e9
    """Peak per-device, per-direction bandwidth to a device of another node, bytes/s."""
    inter_node_latency: float = 8e-6
    """Latency of one inter-node message, s."""
    cache_bytes: float = 0.0
    """Last-level cache the weights of a small model stay in between decode steps (CPU profiles:
    the L3 size); reads beyond it stream at `dram_bandwidth`. 0: none (GPUs)."""
    dram_bandwidth: float = 0.0
    """Achieved bytes/s of reads beyond `cache_bytes` (0: the achieved memory bandwidth)."""
    matmul_efficiency: float = 0.6
    """Achievable fraction of peak FLOP/s in a transformer layer's GEMMs."""
    memory_efficiency: float = 0.8
    """Achievable fraction of peak memory bandwidth when streaming weights / KV cache."""
    intra_link_efficiency: float = 0.75
    """Achievable fraction of intra-node link bandwidth (NCCL bus bandwidth / peak)."""
    inter_link_efficiency: float = 0.85
    """Achievable fraction of inter-node link bandwidth."""
    layer_overhead_s: float = 40e-6
    """Fixed time per layer per forward pass (kernel launches, small ops); dominates decoding."""
    micro_batch_overhead_s: float = 0.0
    """Fixed time per micro-batch per forward-equivalent pass outside the layers (schedule,
    embedding, head and loss bookkeeping)."""
    decode_step_overhead_s: float = 0.0
    """Fixed time per decode step outside the layers (sampling, stop checks)."""
    decode_sample_overhead_s: float = 0.0
    """Time per decode step per sequence decoded (per-row sampling and bookkeeping)."""
    tp_collective_overhead_s: float = 0.0
    """Extra seconds per tensor-parallel collective issued inside a pass, beyond the link model
    (latency and bytes): the host work of the collective and waking the group's processes
    between two layers' compute. On CPU workers that share cores this, not the link, is most
    of a small collective's cost; `realloc profile` fits it from its tp > 1 samples."""
    tp_step_overhead_s: float = 0.0
    """Extra seconds per ring step of such a collective (2(n-1) steps for an all-reduce over n)."""
    train_step_overhead_s: float = 0.0
    """Fixed time per optimizer step (zeroing and finalising grads, clipping, the step's fixed part)."""
    optimizer_param_time_s: float = 0.0
    """Optimizer seconds per local parameter; 0 prices Adam's memory traffic with memory_bandwidth."""
    call_overhead_s: Mapping[str, float] = field(default_factory=dict)
    """Fixed seconds per call by kind ("generate", "inference", "train"): splitting and
    gathering the batch, the interface's own Python work."""
    call_dp_overhead_s: Mapping[str, float] = field(default_factory=dict)
    """Extra seconds per call by kind for each data-parallel rank beyond the first
    (gathering the replicas' results, reducing loss statistics)."""
    call_seq_overhead_s: Mapping[str, float] = field(default_factory=dict)
    """Extra seconds per call by kind for each sequence a data-parallel rank handles
    (per-sequence Python: splitting, assembling fields, per-sequence statistics)."""
    call_dp_seq_overhead_s: Mapping[str, float] = field(default_factory=dict)
    """Extra seconds per call by kind per sequence per rank for each data-parallel rank beyond
    the first (results gathered from every replica are serialised per sequence)."""
    realloc_overhead_s: float = 0.0
    """Fixed seconds per reallocation beyond its link time (planning, packing, local copies)."""
    realloc_peer_overhead_s: float = 0.0
    """Extra seconds per reallocation for each peer the busiest rank exchanges messages with."""
    data_overhead_s: float = 0.0
    """Fixed seconds per data transfer between calls beyond its link time (serialising the batch)."""
    rule_call_overhead_s: float = 0.0
    """Fixed seconds of a rule-based reward call (no model: the host runs it)."""
    rule_seq_overhead_s: float = 0.0
    """Seconds per sequence of a rule-based reward call (detokenising prompt and response, the rule)."""
    host_cores: float = 0.0
    """Cores the devices of one node share (CPU workers); 0 when devices do not share cores.
    With more devices busy than cores the simulator slows every busy device down."""
    thread_efficiency: float = 0.6
    """CPU workers: the compute of a worker with t torch threads runs 1 + (t - 1) x this
    times as fast as with one (see `with_threads`), where `thread_efficiency_by_hidden` has
    no measurement; the default is a guess for small models on few cores."""
    thread_efficiency_by_hidden: Mapping[int, float] = field(default_factory=dict)
    """Thread efficiency measured by `realloc profile` per hidden size of a layer (threads
    help more the larger the matrices); between measured sizes it is interpolated in
    log(hidden), beyond them the nearest is used (`thread_efficiency_at`)."""
    compute_speed_by_hidden: Mapping[int, float] = field(default_factory=dict)
    """How many times faster than `flops()` a layer of each hidden size computes, measured by
    `realloc profile` (larger matrices use the cores better: on a 2-core CPU a hidden-576 layer
    runs about twice the FLOP/s of the hidden-64/128 layers the main fit is taken from);
    interpolated in log(hidden) like the thread efficiency; 1 where none is measured."""
    decode_speed_by_hidden: Mapping[int, float] = field(default_factory=dict)
    """The same for a decode step's passes (one token per sequence: skinny matrices, which
    large layers do not speed up as much); 1 where none is measured."""
    corun_speed_by_hidden: Mapping[int, float] = field(default_factory=dict)
    """CPU workers: how fast (at most 1, relative to alone) each of `corun_workers` one-thread
    workers computes layers of each hidden size while they all compute at once and their
    weights outgrow the last-level cache (they share it and the memory bandwidth), measured by
    `realloc profile`; interpolated in log(hidden); 1 where none is measured."""
    corun_decode_speed_by_hidden: Mapping[int, float] = field(default_factory=dict)
    """The same for a decode step's passes (one token per sequence)."""
    corun_memory_speed: float = 1.0
    """The same for reads beyond the cache (decode steps' weight reads, optimizer steps)."""
    corun_workers: int = 0
    """Workers the co-run speeds were measured with (0: none measured); fewer co-running
    workers slow down in proportion (`corun_speed_at`)."""
    collective_slowdown: Mapping[str, float] = field(default_factory=dict)
    """How many times longer than the ring model's bytes term an all_gather or reduce_scatter
    takes (gloo does not run them as bandwidth-optimal rings), measured by `realloc profile`
    against the link fit of all-reduces and sends; 1 where none is measured."""
    collective_slowdown_beyond_cache: Mapping[str, float] = field(default_factory=dict)
    """The same per op (all_reduce, all_gather, reduce_scatter, p2p) for buffers larger than
    `cache_bytes`, whose bytes stream from memory (a gradient buffer); measured by `realloc
    profile`; where an op has none, `collective_slowdown` applies."""
    threads_per_device: int = 1
    """Torch threads each worker runs with; compute figures above are for this many (1 for a
    profile, which measures one-thread workers). Set by `with_threads`."""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"hardware {self.name!r}: kind {self.kind!r} unknown; use one of {KINDS}")
        if not isinstance(self.devices_per_node, int) or self.devices_per_node < 1:
            raise ValueError(f"hardware {self.name!r}: devices_per_node must be >= 1, got {self.devices_per_node!r}")
        if not self.peak_flops:
            raise ValueError(f"hardware {self.name!r}: peak_flops needs at least one dtype, e.g. {{'bf16': 312e12}}")
        for dtype, value in self.peak_flops.items():
            if dtype not in DTYPE_BYTES or not _positive(value):
                raise ValueError(
                    f"hardware {self.name!r}: peak_flops[{dtype!r}] = {value!r}; dtypes are "
                    f"{', '.join(DTYPE_BYTES)} with positive FLOP/s"
                )
        for name in ("memory_bytes", "memory_bandwidth", "intra_node_bandwidth",
                     "inter_node_bandwidth", "matmul_efficiency", "memory_efficiency",
                     "intra_link_efficiency", "inter_link_efficiency"):
            if not _positive(getattr(self, name)):
                raise ValueError(f"hardware {self.name!r}: {name} must be > 0, got {getattr(self, name)!r}")
        for name in ("reserved_bytes", "cache_bytes", "dram_bandwidth", "intra_node_latency", "inter_node_latency",
                     "layer_overhead_s",
                     *OVERHEAD_FIELDS, "host_cores"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or value < 0 or math.isnan(value):
                raise ValueError(f"hardware {self.name!r}: {name} must be >= 0, got {value!r}")
        for name in ("call_overhead_s", "call_dp_overhead_s", "call_seq_overhead_s", "call_dp_seq_overhead_s"):
            for kind, value in getattr(self, name).items():
                if kind not in CALL_KINDS or not isinstance(value, int | float) or value < 0 or math.isnan(value):
                    raise ValueError(f"hardware {self.name!r}: {name}[{kind!r}] = {value!r}; kinds are "
                                     f"{', '.join(CALL_KINDS)} with seconds >= 0")
        if not (isinstance(self.thread_efficiency, int | float) and 0 <= self.thread_efficiency <= 1):
            raise ValueError(f"hardware {self.name!r}: thread_efficiency must be in [0, 1], got "
                             f"{self.thread_efficiency!r}")
        for hidden, eff in self.thread_efficiency_by_hidden.items():
            if not (isinstance(hidden, int) and hidden >= 1 and isinstance(eff, int | float) and 0 <= eff <= 1):
                raise ValueError(f"hardware {self.name!r}: thread_efficiency_by_hidden[{hidden!r}] = {eff!r}; "
                                 f"hidden sizes are integers >= 1 with efficiencies in [0, 1]")
        for name in ("compute_speed_by_hidden", "decode_speed_by_hidden", *CORUN_TABLES):
            for hidden, speed in getattr(self, name).items():
                if not (isinstance(hidden, int) and hidden >= 1 and _positive(speed)
                        and (speed <= 1 or name not in CORUN_TABLES)):
                    raise ValueError(f"hardware {self.name!r}: {name}[{hidden!r}] = {speed!r}; "
                                     f"hidden sizes are integers >= 1 with speeds > 0"
                                     + (" and <= 1" if name in CORUN_TABLES else ""))
        if not (_positive(self.corun_memory_speed) and self.corun_memory_speed <= 1):
            raise ValueError(f"hardware {self.name!r}: corun_memory_speed must be in (0, 1], got "
                             f"{self.corun_memory_speed!r}")
        if not isinstance(self.corun_workers, int) or self.corun_workers < 0 or self.corun_workers == 1:
            raise ValueError(f"hardware {self.name!r}: corun_workers must be 0 (none measured) or an integer "
                             f">= 2, got {self.corun_workers!r}")
        for op, factor in self.collective_slowdown.items():
            if op not in ("all_gather", "reduce_scatter") or not _positive(factor):
                raise ValueError(f"hardware {self.name!r}: collective_slowdown[{op!r}] = {factor!r}; "
                                 f"ops are all_gather and reduce_scatter with factors > 0")
        for op, factor in self.collective_slowdown_beyond_cache.items():
            if op not in ("all_reduce", "all_gather", "reduce_scatter", "p2p") or not _positive(factor):
                raise ValueError(f"hardware {self.name!r}: collective_slowdown_beyond_cache[{op!r}] = {factor!r}; "
                                 f"ops are all_reduce, all_gather, reduce_scatter and p2p with factors > 0")
        if not isinstance(self.threads_per_device, int) or self.threads_per_device < 1:
            raise ValueError(f"hardware {self.name!r}: threads_per_device must be an integer >= 1, got "
                             f"{self.threads_per_device!r}")
        if self.reserved_bytes >= self.memory_bytes:
            raise ValueError(
                f"hardware {self.name!r}: reserved_bytes {self.reserved_bytes:.3g} leaves no memory "
                f"of memory_bytes {self.memory_bytes:.3g}; lower reserved_bytes"
            )

    # ------------------------------------------------------------------ achieved rates
    def flops(self, dtype: str) -> float:
        """Achieved GEMM FLOP/s in `dtype` (falls back to fp32 for a dtype without a peak)."""
        peak = self.peak_flops.get(dtype)
        if peak is None:
            if "fp32" not in self.peak_flops:
                raise ValueError(
                    f"hardware {self.name!r} has no peak FLOP/s for dtype {dtype!r}; "
                    f"known: {', '.join(self.peak_flops)}"
                )
            peak = self.peak_flops["fp32"]
        return peak * self.matmul_efficiency

    @property
    def usable_memory_bytes(self) -> float:
        """Device memory a plan may fill: capacity minus the runtime's reservation."""
        return self.memory_bytes - self.reserved_bytes

    @property
    def achieved_memory_bandwidth(self) -> float:
        """Achieved bytes/s when streaming device memory."""
        return self.memory_bandwidth * self.memory_efficiency

    def read_time(self, nbytes: float) -> float:
        """Seconds to read `nbytes` of weights and cache once: what fits in `cache_bytes` at the
        achieved memory bandwidth, the rest at `dram_bandwidth`."""
        if self.dram_bandwidth <= 0:
            return nbytes / self.achieved_memory_bandwidth
        cached = min(nbytes, self.cache_bytes)
        return cached / self.achieved_memory_bandwidth + (nbytes - cached) / self.dram_bandwidth

    def link_bandwidth(self, inter_node: bool) -> float:
        """Achieved per-device, per-direction bytes/s of an intra- or inter-node link."""
        if inter_node:
            return self.inter_node_bandwidth * self.inter_link_efficiency
        return self.intra_node_bandwidth * self.intra_link_efficiency

    def tp_collective_extra(self, tp: int) -> float:
        """Seconds one in-pass tensor-parallel collective over `tp` devices costs beyond the link model."""
        if tp <= 1:
            return 0.0
        return self.tp_collective_overhead_s + 2 * (tp - 1) * self.tp_step_overhead_s

    def link_latency(self, inter_node: bool) -> float:
        """Latency of one message over an intra- or inter-node link."""
        return self.inter_node_latency if inter_node else self.intra_node_latency

    def call_overhead(self, kind: str, dp: int, seqs_per_rank: float = 0.0) -> float:
        """Fixed seconds of one call of `kind` on `dp` data-parallel ranks of `seqs_per_rank` sequences."""
        per_rank = self.call_dp_overhead_s.get(kind, 0.0) + seqs_per_rank * self.call_dp_seq_overhead_s.get(kind, 0.0)
        return (self.call_overhead_s.get(kind, 0.0) + seqs_per_rank * self.call_seq_overhead_s.get(kind, 0.0)
                + (dp - 1) * per_rank)

    def thread_efficiency_at(self, hidden: int | None) -> float:
        """Thread efficiency for layers of `hidden` size: interpolated in log(hidden) between the
        measured sizes, the nearest measured one outside them, `thread_efficiency` with none
        measured or no size given."""
        return by_hidden(self.thread_efficiency_by_hidden, hidden, self.thread_efficiency)

    def compute_speed_at(self, hidden: int | None, *, decode: bool = False) -> float:
        """`compute_speed_by_hidden` (`decode_speed_by_hidden` for a decode step) at a layer size
        (1 with none measured or no size given)."""
        return by_hidden(self.decode_speed_by_hidden if decode else self.compute_speed_by_hidden, hidden, 1.0)

    def corun_speed_at(self, hidden: int | None, busy: int, *, memory: bool = False, decode: bool = False) -> float:
        """Speed (at most 1) of each of `busy` workers of one node computing layers of `hidden`
        size (`decode`: a decode step's passes; `memory`: reading beyond the cache) at once: the
        measured co-run speed at `corun_workers` of them, in proportion between one worker (1)
        and that many (beyond it the cores are shared, which `slowdown` prices)."""
        if busy <= 1 or self.corun_workers < 2:
            return 1.0
        table = self.corun_decode_speed_by_hidden if decode else self.corun_speed_by_hidden
        full = self.corun_memory_speed if memory else by_hidden(table, hidden, 1.0)
        share = (min(busy, self.corun_workers) - 1) / (self.corun_workers - 1)
        return 1.0 - share * (1.0 - full)

    def thread_speedup(self, threads: int, hidden: int | None = None) -> float:
        """How much faster a worker's compute (layers of `hidden` size) runs with `threads`
        torch threads than with one."""
        return 1.0 + (threads - 1) * self.thread_efficiency_at(hidden)

    def thread_options(self) -> tuple[int, ...]:
        """Torch threads per worker a plan may choose: 1 up to the node's cores (CPU workers that
        share cores); just the current count elsewhere."""
        if self.kind != "cpu-gloo" or self.host_cores <= 0 or self.threads_per_device != 1:
            return (self.threads_per_device,)
        return tuple(range(1, max(1, round(self.host_cores)) + 1))

    def with_threads(self, threads: int, hidden: int | None = None) -> HardwareSpec:
        """This spec (of one-thread workers) with every worker running `threads` torch threads:
        its compute (peak FLOP/s, memory bandwidth, the optimizer's time per parameter) sped up by
        `thread_speedup(threads, hidden)` (`hidden`: the models' layer size, None for the
        unmeasured default), fixed overheads unchanged, and each busy worker taking
        `threads` of the node's `host_cores`, so the simulator shares `host_cores / threads`
        among the busy workers."""
        if self.threads_per_device != 1:
            raise ValueError(f"hardware {self.name!r} already has {self.threads_per_device} threads per device")
        if not isinstance(threads, int) or threads < 1:
            raise ValueError(f"threads must be an integer >= 1, got {threads!r}")
        if threads == 1:
            return self
        k = self.thread_speedup(threads, hidden)
        return self.replace(
            peak_flops={d: v * k for d, v in self.peak_flops.items()}, memory_bandwidth=self.memory_bandwidth * k,
            dram_bandwidth=self.dram_bandwidth * k,
            optimizer_param_time_s=self.optimizer_param_time_s / k,
            host_cores=self.host_cores / threads if self.host_cores > 0 else 0.0, threads_per_device=threads)

    def slowdown(self, busy_devices: int) -> float:
        """How much slower each device runs when `busy_devices` of one node compute at once."""
        if self.host_cores <= 0 or busy_devices <= self.host_cores:
            return 1.0
        return busy_devices / self.host_cores

    # ------------------------------------------------------------------ plain data
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dictionary (the "hardware" section of a profile file)."""
        out = dataclasses.asdict(self)
        for name in ("peak_flops", "call_overhead_s", "call_dp_overhead_s", "call_seq_overhead_s",
                     "call_dp_seq_overhead_s"):
            out[name] = dict(getattr(self, name))
        for name in HIDDEN_TABLES:
            out[name] = {str(k): v for k, v in getattr(self, name).items()}
        for name in SLOWDOWN_TABLES:
            out[name] = dict(getattr(self, name))
        return out

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], *, where: str = "hardware") -> HardwareSpec:
        """Build from a dictionary, naming any unknown key."""
        known = {f.name for f in dataclasses.fields(cls)}
        for key in values:
            if key not in known:
                raise ValueError(f"{where}: unknown field {key!r}; known: {', '.join(sorted(known))}")
        values = dict(values)
        for name in ("peak_flops", "call_overhead_s", "call_dp_overhead_s", "call_seq_overhead_s",
                     "call_dp_seq_overhead_s"):
            if name in values:
                values[name] = {str(k): float(v) for k, v in dict(values[name]).items()}
        for name in HIDDEN_TABLES:
            if name in values:
                try:
                    values[name] = {int(k): float(v) for k, v in dict(values[name]).items()}
                except (TypeError, ValueError):
                    raise ValueError(f"{where}: {name} must map hidden sizes to numbers, "
                                     f"got {values[name]!r}") from None
        for name in SLOWDOWN_TABLES:
            if name in values:
                values[name] = {str(k): float(v) for k, v in dict(values[name]).items()}
        return cls(**values)

    def replace(self, **changes: Any) -> HardwareSpec:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)


SLOWDOWN_TABLES = ("collective_slowdown", "collective_slowdown_beyond_cache")
CORUN_TABLES = ("corun_speed_by_hidden", "corun_decode_speed_by_hidden")
HIDDEN_TABLES = ("thread_efficiency_by_hidden", "compute_speed_by_hidden", "decode_speed_by_hidden", *CORUN_TABLES)
"""HardwareSpec fields keyed by a layer's hidden size."""


def by_hidden(table: Mapping[int, float], hidden: int | None, default: float) -> float:
    """A per-hidden-size table at `hidden`: interpolated in log(hidden) between the measured
    sizes, the nearest measured one outside them, `default` with none measured or no size given."""
    points = sorted(table.items())
    if not points or hidden is None:
        return default
    if hidden <= points[0][0]:
        return float(points[0][1])
    for (h0, e0), (h1, e1) in zip(points, points[1:], strict=False):
        if hidden <= h1:
            w = math.log(hidden / h0) / math.log(h1 / h0)
            return float(e0 + w * (e1 - e0))
    return float(points[-1][1])


def _positive(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value > 0 and math.isfinite(value)


# ---------------------------------------------------------------------- presets
# Sources:
#  [A100] NVIDIA A100 Tensor Core GPU datasheet (2021): BF16/FP16 dense 312 TFLOPS,
#         TF32 156 TFLOPS, FP32 19.5 TFLOPS; HBM2 40GB at 1,555 GB/s, HBM2e 80GB at
#         2,039 GB/s; NVLink 3: 600 GB/s total (300 GB/s per direction).
#  [DGXA100] NVIDIA DGX A100 system architecture white paper: 8x Mellanox HDR
#         200 Gb/s InfiniBand for compute, i.e. 25 GB/s per GPU per direction.
#  [H100] NVIDIA H100 Tensor Core GPU datasheet (SXM5): BF16 dense 989 TFLOPS
#         (1,979 with sparsity), FP32 67 TFLOPS, HBM3 80GB at 3.35 TB/s, NVLink 4
#         900 GB/s total (450 GB/s per direction).
#  [DGXH100] NVIDIA DGX H100 user guide: 8x ConnectX-7 400 Gb/s, 50 GB/s per GPU.
#  [H200] NVIDIA H200 Tensor Core GPU datasheet (SXM): same compute as H100 SXM,
#         141GB HBM3e at 4.8 TB/s, NVLink 900 GB/s. torch reports ~139.8 GiB total.
#  [NCCL] nccl-tests all_reduce on DGX A100/H100: bus bandwidth ~230 GB/s (A100) and
#         ~360-370 GB/s (H100) for large messages, i.e. ~75-80% of the per-direction
#         NVLink peak; small-message latency ~10-30 us over 8 GPUs.
#  [MFU]  A100: fitted (experiments/bench/gpu_components.py --fit) so that the estimated
#         training MFU of Megatron-LM's GPT 22B/175B/530B/1T runs on A100 matches the
#         published 41.5/51.4/56.0/56.3% (Korthikanti et al. 2022, arXiv 2205.05198, selective
#         recomputation + sequence parallelism) and a 7B model's ~64% on 8 A100s (MosaicML
#         llm-foundry benchmarks): 0.71 of peak in the layers' GEMMs, the rest of the gap to
#         MFU being TP collectives, bubbles, gradient sync and the optimizer.
#         H100/H200: no H100 bf16 training MFU we can cite precisely; 0.62, the A100 value
#         scaled by the lower share of dense peak H100 GEMMs reach (range 0.55-0.70).
#  [MBU]  Decode model-bandwidth utilisation (bytes a step must read / step time / peak
#         bandwidth): about 60% for a 7B model at batch 1 on one A100 (Databricks/MosaicML,
#         "LLM Inference Performance Engineering: Best Practices", 2023), lower under tensor
#         parallelism; 50-80% across serving stacks. realloc's engine decodes with eager
#         Megatron-core (no CUDA graphs, no paged attention): 0.6, the middle.
#  [LAUNCH] An unfused Megatron-core layer (local spec) launches ~12-20 kernels per forward;
#         eager PyTorch pays ~4-8 us of host time per launch (NVIDIA's CUDA Graphs blog and
#         PyTorch CUDA-graph docs put launch overhead in the microseconds), so a layer whose
#         kernels are tiny (decode) costs 50-150 us whatever its arithmetic: 80 us here.
#  [HOST] Host-side fixed costs of a step in eager PyTorch + Megatron-core, engineering
#         estimates (ranges): per micro-batch (schedule, embedding/head/loss launches) 1-5 ms;
#         per sampled token (sampling over the vocabulary, stop checks, one host sync) 1-10 ms;
#         per optimizer step (grad finalisation, clip-norm, optimizer launches) 10-100 ms.
#  [CPUPROF] Python work per call, sequence and data-parallel rank, measured by `realloc
#         profile` on this project's CPU machines (experiments/profiles/cpu-2core-4proc.json:
#         0.3-1.4 ms per call, 5-60 us per sequence, 0.5-3 ms per extra rank, ~1 ms per batch
#         sent between calls, ~60 us per sequence of a rule-based reward) and halved for a
#         GPU node's faster host cores.
#         None of [LAUNCH], [HOST], [CPUPROF] is a GPU measurement: `realloc profile` on a
#         GPU (experiments/bench/gpu_check.sh) replaces them.
#  [GLOO] measured on this project's CPU machines (shared/notes/megatron-on-cpu.md):
#         gloo all_reduce latency ~1.5 ms with 2 processes; the rest are rough
#         defaults to be replaced by `realloc profile`.
GPU_FIXED_COSTS: dict[str, Any] = {
    "memory_efficiency": 0.6,  # [MBU]
    "layer_overhead_s": 80e-6,  # [LAUNCH]
    "micro_batch_overhead_s": 2e-3,  # [HOST]
    "decode_step_overhead_s": 3e-3,  # [HOST]
    "train_step_overhead_s": 30e-3,  # [HOST]
    "decode_sample_overhead_s": 2e-5,  # [CPUPROF]
    "call_overhead_s": {"generate": 1e-3, "inference": 0.5e-3, "train": 1e-3},  # [CPUPROF]
    "call_seq_overhead_s": {"generate": 10e-6, "inference": 30e-6, "train": 10e-6},  # [CPUPROF]
    "call_dp_overhead_s": {"generate": 1.5e-3, "inference": 1.5e-3, "train": 0.5e-3},  # [CPUPROF]
    "realloc_overhead_s": 1e-3,  # [CPUPROF]
    "data_overhead_s": 0.5e-3,  # [CPUPROF]
    "rule_seq_overhead_s": 30e-6,  # [CPUPROF]: detokenising and scoring a sequence in Python
}
"""Fixed costs every GPU preset carries (see the sources above); a measured profile replaces them."""

PRESETS: dict[str, HardwareSpec] = {
    "a100-40g": HardwareSpec(
        name="a100-40g", devices_per_node=8,
        peak_flops={"bf16": 312e12, "fp16": 312e12, "fp32": 19.5e12},  # [A100]
        memory_bytes=40 * GiB, memory_bandwidth=1555e9,  # [A100]
        intra_node_bandwidth=300e9, intra_node_latency=2e-6,  # [A100], [NCCL]
        inter_node_bandwidth=25e9, inter_node_latency=8e-6,  # [DGXA100]
        matmul_efficiency=0.71,  # [MFU]
        intra_link_efficiency=0.77, inter_link_efficiency=0.85,  # [NCCL]
        **GPU_FIXED_COSTS,
    ),
    "a100-80g": HardwareSpec(
        name="a100-80g", devices_per_node=8,
        peak_flops={"bf16": 312e12, "fp16": 312e12, "fp32": 19.5e12},  # [A100]
        memory_bytes=80 * GiB, memory_bandwidth=2039e9,  # [A100]
        intra_node_bandwidth=300e9, intra_node_latency=2e-6,  # [A100], [NCCL]
        inter_node_bandwidth=25e9, inter_node_latency=8e-6,  # [DGXA100]
        matmul_efficiency=0.71,  # [MFU]
        intra_link_efficiency=0.77, inter_link_efficiency=0.85,  # [NCCL]
        **GPU_FIXED_COSTS,
    ),
    "h100-80g": HardwareSpec(
        name="h100-80g", devices_per_node=8,
        peak_flops={"bf16": 989e12, "fp16": 989e12, "fp32": 67e12},  # [H100]
        memory_bytes=80 * GiB, memory_bandwidth=3350e9,  # [H100]
        intra_node_bandwidth=450e9, intra_node_latency=2e-6,  # [H100], [NCCL]
        inter_node_bandwidth=50e9, inter_node_latency=6e-6,  # [DGXH100]
        matmul_efficiency=0.62,  # [MFU]: H100 GEMMs reach less of peak
        intra_link_efficiency=0.8, inter_link_efficiency=0.85,  # [NCCL]
        **GPU_FIXED_COSTS,
    ),
    "h200": HardwareSpec(
        name="h200", devices_per_node=8,  # same compute as H100 SXM
        peak_flops={"bf16": 989e12, "fp16": 989e12, "fp32": 67e12},  # [H200]
        memory_bytes=139.8 * GiB, memory_bandwidth=4800e9,  # [H200]
        intra_node_bandwidth=450e9, intra_node_latency=2e-6,  # [H200], [NCCL]
        inter_node_bandwidth=50e9, inter_node_latency=6e-6,  # [DGXH100]-class networking
        matmul_efficiency=0.62,  # [MFU]
        intra_link_efficiency=0.8, inter_link_efficiency=0.85,  # [NCCL]
        **GPU_FIXED_COSTS,
    ),
    "cpu-gloo": HardwareSpec(
        name="cpu-gloo", kind="cpu-gloo", devices_per_node=2,
        peak_flops={"fp32": 50e9, "bf16": 10e9},  # one core, AVX2 FMA; bf16 is emulated
        memory_bytes=8 * GiB, reserved_bytes=1 * GiB, memory_bandwidth=10e9,
        intra_node_bandwidth=2e9, intra_node_latency=0.75e-3,  # [GLOO]: ~1.5 ms per 2-rank all_reduce
        inter_node_bandwidth=1.25e9, inter_node_latency=1e-3,  # 10 GbE
        matmul_efficiency=0.5, memory_efficiency=0.5,
        intra_link_efficiency=0.5, inter_link_efficiency=0.7,
        layer_overhead_s=200e-6,
    ),
}


def preset(name: str) -> HardwareSpec:
    """The built-in spec called `name`; an unknown name lists the known ones."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(
            f"unknown hardware preset {name!r}; known: {', '.join(PRESETS)} "
            "(or pass a measured profile JSON file)"
        ) from None
