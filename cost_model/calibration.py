"""Calibration: fit achieved rates from measured samples; they override the analytic defaults.

Three kinds of samples, each a frozen dataclass (and a JSON object in a profile file):
- ComputeSample: one transformer layer's forward (passes=1) or forward+backward
  (passes=3) over some tokens: `flops` and measured `time_s`. Fitted per dtype by
  least squares as time = passes * layer_overhead + flops / achieved_flops.
- MemorySample: a memory-bound pass (a decode step of one layer): `bytes` read and
  `time_s`; fitted as time = a + bytes / achieved_bandwidth.
- CollectiveSample: `op` (all_reduce, all_gather, reduce_scatter, p2p) over
  `group_size` devices on an "intra" or "inter" node link, buffer `bytes`, `time_s`;
  fitted per link as time = steps * latency + wire_bytes / achieved_bandwidth with the
  ring factors of `cost_model.collectives`.

`apply_calibration` rewrites a HardwareSpec so that its achieved rates equal the
fitted ones (efficiency = fitted / peak; a peak below the fitted rate is raised).
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cost_model.collectives import wire_factor
from cost_model.hardware import HardwareSpec

LINKS = ("intra", "inter")


@dataclass(frozen=True, kw_only=True)
class ComputeSample:
    """Measured time of one layer's forward (passes=1) or forward+backward (passes=3)."""

    flops: float
    """FLOPs of the pass (shapes.layer_forward_flops x passes)."""
    time_s: float
    """Measured seconds."""
    passes: int = 1
    """Forward-equivalent passes: 1 forward, 3 forward+backward, 4 with recomputation."""
    dtype: str = "bf16"
    """Dtype of the GEMMs."""

    def __post_init__(self) -> None:
        if self.flops <= 0 or self.time_s <= 0 or self.passes < 1:
            raise ValueError(f"compute sample needs flops > 0, time_s > 0, passes >= 1, got {self}")


@dataclass(frozen=True, kw_only=True)
class MemorySample:
    """Measured time of a memory-bound pass reading `bytes`."""

    bytes: float
    """Bytes read from device memory."""
    time_s: float
    """Measured seconds."""

    def __post_init__(self) -> None:
        if self.bytes <= 0 or self.time_s <= 0:
            raise ValueError(f"memory sample needs bytes > 0 and time_s > 0, got {self}")


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

    def __post_init__(self) -> None:
        wire_factor(self.op, self.group_size)  # validates op
        if self.link not in LINKS:
            raise ValueError(f"collective sample link {self.link!r} must be one of {LINKS}")
        if self.group_size < 2 or self.bytes <= 0 or self.time_s <= 0:
            raise ValueError(f"collective sample needs group_size >= 2, bytes > 0, time_s > 0, got {self}")


@dataclass(frozen=True, kw_only=True)
class Samples:
    """All measured samples of a profile."""

    compute: tuple[ComputeSample, ...] = ()
    memory: tuple[MemorySample, ...] = ()
    collectives: tuple[CollectiveSample, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {k: [dataclasses.asdict(s) for s in getattr(self, k)] for k in ("compute", "memory", "collectives")}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Samples:
        kinds = {"compute": ComputeSample, "memory": MemorySample, "collectives": CollectiveSample}
        for key in d:
            if key not in kinds:
                raise ValueError(f"profile samples: unknown kind {key!r}; known: {', '.join(kinds)}")
        return cls(**{k: tuple(kinds[k](**s) for s in d.get(k, ())) for k in kinds})


@dataclass(frozen=True, kw_only=True)
class Calibration:
    """Fitted achieved rates; None where no sample measured them."""

    flops: Mapping[str, float] = field(default_factory=dict)
    """Achieved GEMM FLOP/s per dtype."""
    layer_overhead_s: float | None = None
    """Fixed seconds per layer pass."""
    memory_bandwidth: float | None = None
    """Achieved bytes/s streaming device memory."""
    link_bandwidth: Mapping[str, float] = field(default_factory=dict)
    """Achieved bytes/s per link ("intra", "inter")."""
    link_latency: Mapping[str, float] = field(default_factory=dict)
    """Seconds per message step per link."""

    def to_dict(self) -> dict[str, Any]:
        return {"flops": dict(self.flops), "layer_overhead_s": self.layer_overhead_s,
                "memory_bandwidth": self.memory_bandwidth, "link_bandwidth": dict(self.link_bandwidth),
                "link_latency": dict(self.link_latency)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Calibration:
        known = {f.name for f in dataclasses.fields(cls)}
        for key in d:
            if key not in known:
                raise ValueError(f"profile calibration: unknown field {key!r}; known: {', '.join(sorted(known))}")
        return cls(**d)


def _fit_nonneg(design: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Least squares t ~ design @ coef with coef >= 0 (drops a negative column and refits)."""
    coef = np.linalg.lstsq(design, t, rcond=None)[0]
    if np.all(coef >= 0):
        return coef
    out = np.zeros(design.shape[1])
    keep = [i for i in range(design.shape[1]) if coef[i] > 0] or [design.shape[1] - 1]
    sub = np.linalg.lstsq(design[:, keep], t, rcond=None)[0]
    out[keep] = np.maximum(sub, 0.0)
    return out


def fit_calibration(samples: Samples) -> Calibration:
    """Fit achieved rates from samples (each fit needs at least one sample)."""
    flops: dict[str, float] = {}
    overheads = []
    by_dtype: dict[str, list[ComputeSample]] = defaultdict(list)
    for s in samples.compute:
        by_dtype[s.dtype].append(s)
    for dtype, group in by_dtype.items():
        design = np.array([[s.passes, s.flops] for s in group], dtype=float)
        coef = _fit_nonneg(design, np.array([s.time_s for s in group]))
        if coef[1] > 0:
            flops[dtype] = float(1.0 / coef[1])
            overheads.append(float(coef[0]))
    memory_bw = None
    if samples.memory:
        design = np.array([[1.0, s.bytes] for s in samples.memory])
        coef = _fit_nonneg(design, np.array([s.time_s for s in samples.memory]))
        memory_bw = float(1.0 / coef[1]) if coef[1] > 0 else None
    bws: dict[str, float] = {}
    lats: dict[str, float] = {}
    for link in LINKS:
        group = [s for s in samples.collectives if s.link == link]
        if not group:
            continue
        rows = []
        for s in group:
            factor, steps = wire_factor(s.op, s.group_size)
            rows.append([steps, factor * s.bytes])
        coef = _fit_nonneg(np.array(rows, dtype=float), np.array([s.time_s for s in group]))
        if coef[1] > 0:
            bws[link] = float(1.0 / coef[1])
        lats[link] = float(coef[0])
    return Calibration(flops=flops, layer_overhead_s=float(np.mean(overheads)) if overheads else None,
                       memory_bandwidth=memory_bw, link_bandwidth=bws, link_latency=lats)


def _rate(peak: float, achieved: float) -> tuple[float, float]:
    """(peak, efficiency) with peak * efficiency == achieved and efficiency <= 1."""
    if achieved > peak:
        return achieved, 1.0
    return peak, achieved / peak


def apply_calibration(spec: HardwareSpec, cal: Calibration) -> HardwareSpec:
    """`spec` with every fitted rate replacing its analytic default."""
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
    if cal.layer_overhead_s is not None:
        changes["layer_overhead_s"] = cal.layer_overhead_s
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


def samples_from(compute: Sequence[ComputeSample] = (), memory: Sequence[MemorySample] = (),
                 collectives: Sequence[CollectiveSample] = ()) -> Samples:
    """Convenience constructor from lists."""
    return Samples(compute=tuple(compute), memory=tuple(memory), collectives=tuple(collectives))
