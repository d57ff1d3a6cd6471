"""The fitted calibration of a profile (`Calibration`) and `apply_calibration`, which rewrites a
HardwareSpec so that its achieved rates equal the fitted ones (efficiency = fitted / peak; a peak
below the fitted rate is raised) and its overhead fields equal the fitted overheads.

Apart from the fits (`cost_model.calibration`, which needs numpy) so that loading a profile to
plan with imports no numpy (a tenth of a second of `realloc plan`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cost_model.hardware import HIDDEN_TABLES, SLOWDOWN_TABLES, HardwareSpec


@dataclass(frozen=True, kw_only=True)
class Calibration:
    """Fitted achieved rates and overheads; None (or empty) where no sample measured them."""

    flops: Mapping[str, float] = field(default_factory=dict)
    """Achieved GEMM FLOP/s per dtype."""
    layer_overhead_s: float | None = None
    """Fixed seconds per layer pass."""
    memory_bandwidth: float | None = None
    """Achieved bytes/s streaming device memory (on CPUs: the decode fit's, whose small models'
    weights stay in cache)."""
    cache_bytes: float | None = None
    """Last-level cache the DRAM samples were measured beyond."""
    dram_bandwidth: float | None = None
    """Achieved bytes/s reading beyond the cache (the memory samples that record a cache)."""
    link_bandwidth: Mapping[str, float] = field(default_factory=dict)
    """Achieved bytes/s per link ("intra", "inter")."""
    link_latency: Mapping[str, float] = field(default_factory=dict)
    """Seconds per message step per link."""
    host_cores: float | None = None
    """Effective cores the devices of a node share (0: no sharing)."""
    micro_batch_overhead_s: float | None = None
    """Fixed seconds per micro-batch per pass outside the layers."""
    decode_step_overhead_s: float | None = None
    """Fixed seconds per decode step."""
    decode_sample_overhead_s: float | None = None
    """Seconds per decode step per sequence."""
    tp_collective_overhead_s: float | None = None
    """Extra seconds per in-pass tensor-parallel collective beyond the link model."""
    tp_step_overhead_s: float | None = None
    """Extra seconds per ring step of an in-pass tensor-parallel collective."""
    train_step_overhead_s: float | None = None
    """Fixed seconds per optimizer step."""
    optimizer_param_time_s: float | None = None
    """Optimizer seconds per local parameter."""
    call_overhead_s: Mapping[str, float] = field(default_factory=dict)
    """Fixed seconds per call by kind."""
    call_dp_overhead_s: Mapping[str, float] = field(default_factory=dict)
    """Seconds per call by kind per data-parallel rank beyond the first."""
    call_seq_overhead_s: Mapping[str, float] = field(default_factory=dict)
    """Seconds per call by kind per sequence per data-parallel rank."""
    call_dp_seq_overhead_s: Mapping[str, float] = field(default_factory=dict)
    """Seconds per call by kind per sequence per rank for each data-parallel rank beyond the first."""
    realloc_overhead_s: float | None = None
    """Fixed seconds per reallocation beyond its link time."""
    realloc_peer_overhead_s: float | None = None
    """Seconds per reallocation per peer of the busiest rank beyond its link time."""
    data_overhead_s: float | None = None
    """Fixed seconds per data transfer beyond its link time."""
    rule_call_overhead_s: float | None = None
    """Fixed seconds of a rule-based reward call."""
    rule_seq_overhead_s: float | None = None
    """Seconds per sequence of a rule-based reward call."""
    thread_efficiency_by_hidden: Mapping[int, float] = field(default_factory=dict)
    """Thread efficiency per hidden size (median of the thread samples of that size)."""
    compute_speed_by_hidden: Mapping[int, float] = field(default_factory=dict)
    """Compute speed relative to `flops` per hidden size (the speed samples' sizes, and the
    main fit's largest at 1)."""
    decode_speed_by_hidden: Mapping[int, float] = field(default_factory=dict)
    """The same from the decode-shaped speed samples."""
    corun_speed_by_hidden: Mapping[int, float] = field(default_factory=dict)
    """Speed of each co-running worker relative to alone per hidden size (compute co-run samples)."""
    corun_decode_speed_by_hidden: Mapping[int, float] = field(default_factory=dict)
    """The same for decode-shaped passes (decode co-run samples)."""
    corun_memory_speed: float | None = None
    """The same for reads beyond the cache (memory co-run samples)."""
    corun_workers: int | None = None
    """Workers of the co-run samples."""
    collective_slowdown: Mapping[str, float] = field(default_factory=dict)
    """Bytes-term factor of all_gather / reduce_scatter against the all-reduce and send fit."""
    collective_slowdown_beyond_cache: Mapping[str, float] = field(default_factory=dict)
    """Bytes-term factor per op of buffers beyond the last-level cache against the same fit."""

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        for name in HIDDEN_TABLES:
            out[name] = {str(k): v for k, v in getattr(self, name).items()}
        for name in ("flops", "link_bandwidth", "link_latency", "call_overhead_s", "call_dp_overhead_s",
                     "call_seq_overhead_s", "call_dp_seq_overhead_s", *SLOWDOWN_TABLES):
            out[name] = dict(getattr(self, name))
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Calibration:
        known = {f.name for f in dataclasses.fields(cls)}
        for key in d:
            if key not in known:
                raise ValueError(f"profile calibration: unknown field {key!r}; known: {', '.join(sorted(known))}")
        d = dict(d)
        for name in HIDDEN_TABLES:
            if name in d:
                d[name] = {int(k): float(v) for k, v in d[name].items()}
        return cls(**d)


def _rate(peak: float, achieved: float) -> tuple[float, float]:
    """(peak, efficiency) with peak * efficiency == achieved and efficiency <= 1."""
    if achieved > peak:
        return achieved, 1.0
    return peak, achieved / peak


SCALAR_OVERHEADS = ("cache_bytes", "dram_bandwidth", "layer_overhead_s", "host_cores", "micro_batch_overhead_s",
                    "decode_step_overhead_s", "decode_sample_overhead_s", "tp_collective_overhead_s",
                    "tp_step_overhead_s", "train_step_overhead_s", "optimizer_param_time_s", "realloc_overhead_s",
                    "realloc_peer_overhead_s", "data_overhead_s", "rule_call_overhead_s", "rule_seq_overhead_s",
                    "corun_memory_speed", "corun_workers")


def apply_calibration(spec: HardwareSpec, cal: Calibration) -> HardwareSpec:
    """`spec` with every fitted rate and overhead replacing its analytic default."""
    changes: dict[str, Any] = {}
    if cal.flops:
        main = "bf16" if "bf16" in cal.flops else sorted(cal.flops)[0]
        peak_main, eff = _rate(spec.peak_flops.get(main, cal.flops[main]), cal.flops[main])
        peaks = dict(spec.peak_flops)
        peaks[main] = peak_main
        for dtype, achieved in cal.flops.items():
            if dtype != main:
                peaks[dtype] = achieved / eff
        changes.update(peak_flops=peaks, matmul_efficiency=eff)
    for name in SCALAR_OVERHEADS:
        if getattr(cal, name) is not None:
            changes[name] = getattr(cal, name)
    for name in ("call_overhead_s", "call_dp_overhead_s", "call_seq_overhead_s", "call_dp_seq_overhead_s"):
        if getattr(cal, name):
            changes[name] = {**getattr(spec, name), **getattr(cal, name)}
    for name in (*HIDDEN_TABLES, *SLOWDOWN_TABLES):
        if getattr(cal, name):
            changes[name] = dict(getattr(cal, name))
    if cal.memory_bandwidth is not None:
        changes["memory_bandwidth"], changes["memory_efficiency"] = _rate(spec.memory_bandwidth,
                                                                          cal.memory_bandwidth)
    for link, prefix in (("intra", "intra_node"), ("inter", "inter_node")):
        if link in cal.link_bandwidth:
            peak, eff = _rate(getattr(spec, f"{prefix}_bandwidth"), cal.link_bandwidth[link])
            changes[f"{prefix}_bandwidth"] = peak
            changes[f"{link}_link_efficiency"] = eff
        if link in cal.link_latency:
            changes[f"{prefix}_latency"] = cal.link_latency[link]
    return spec.replace(**changes)
