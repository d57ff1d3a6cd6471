"""Calibration: fit achieved rates and fixed overheads from measured samples
(`cost_model.samples`, which describes each kind and the form it is fitted with).

The fitted result (`Calibration`) and `apply_calibration`, which rewrites a HardwareSpec
with it, live in `cost_model.calibrated` (no numpy there, so planning from a profile does not
import it) and are re-exported here.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from cost_model.calibrated import SCALAR_OVERHEADS as SCALAR_OVERHEADS
from cost_model.calibrated import Calibration as Calibration
from cost_model.calibrated import apply_calibration as apply_calibration
from cost_model.collectives import wire_factor
from cost_model.samples import (
    CALL_SAMPLE_KINDS,
    LINKS,
    MOVE_KINDS,
    CallSample,
    CollectiveSample,
    ComputeSample,
    ContentionSample,
    CoRunSample,
    DecodeSample,
    MemorySample,
    Samples,
    ThreadSample,
)

NO_SHARING_SLOWDOWN = 1.15
"""Below this measured slowdown the devices are taken not to share cores."""


def _nonneg_lstsq(design: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Least squares t ~ design @ coef with coef >= 0 (drops negative columns and refits)."""
    keep = list(range(design.shape[1]))
    out = np.zeros(design.shape[1])
    while keep:
        sub = np.linalg.lstsq(design[:, keep], t, rcond=None)[0]
        if np.all(sub >= 0):
            out[keep] = sub
            return out
        keep = [k for k, c in zip(keep, sub) if c > 0]
    return out


OUTLIER_FACTOR = 4.0
"""A sample whose relative residual exceeds this many times the median one is dropped (once)."""


def _fit_nonneg(design: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Non-negative fit of t ~ design @ coef minimising RELATIVE errors, robust to outliers.

    Rows are weighted by 1 / t (so a 1 ms sample counts as much as a 1 s one: the estimates
    are judged by relative error), then samples far off the first fit (timing noise from
    other processes on a busy machine) are dropped and the fit repeated.
    """
    positive = t > 0
    if not np.all(positive) or len(t) < design.shape[1] + 2:
        return _nonneg_lstsq(design, t)
    w = 1.0 / t
    coef = _nonneg_lstsq(design * w[:, None], t * w)
    resid = np.abs(design @ coef - t) / t
    cut = OUTLIER_FACTOR * max(float(np.median(resid)), 1e-9)
    keep = resid <= cut
    if keep.all() or keep.sum() < design.shape[1] + 1:
        return coef
    return _nonneg_lstsq(design[keep] * w[keep, None], t[keep] * w[keep])


def slowdown(busy: int, host_cores: float) -> float:
    """Per-device slowdown with `busy` devices computing on `host_cores` shared cores (0: none)."""
    if host_cores <= 0 or busy <= host_cores:
        return 1.0
    return busy / host_cores


def fit_host_cores(samples: Sequence[ContentionSample]) -> float:
    """Effective shared cores: median of devices * alone / together; 0 when the slowdown is small."""
    cores = [s.devices * s.alone_s / s.together_s for s in samples]
    slow = float(np.median([s.together_s / s.alone_s for s in samples]))
    physical = min((s.cores for s in samples if s.cores > 0), default=0)
    if physical and physical >= max(s.devices for s in samples):
        return 0.0  # a core per device: nothing to share
    if slow < NO_SHARING_SLOWDOWN and not physical:
        return 0.0
    return min(float(np.median(cores)), physical or math.inf)


def _fit_compute(samples: Sequence[ComputeSample], cores: float) -> tuple[dict[str, float], float | None,
                                                                           float | None]:
    """(FLOP/s per dtype, layer overhead, micro-batch overhead)."""
    flops: dict[str, float] = {}
    layer, mb = [], []
    by_dtype: dict[str, list[ComputeSample]] = defaultdict(list)
    for s in samples:
        by_dtype[s.dtype].append(s)
    for dtype, group in by_dtype.items():
        t = np.array([s.time_s / slowdown(s.busy, cores) for s in group])
        split = any(s.layers != 1 for s in group)
        if split:
            design = np.array([[s.passes * s.micro_batches, s.passes * s.micro_batches * s.layers, s.flops]
                               for s in group], dtype=float)
        else:
            design = np.array([[s.passes * s.micro_batches, s.flops] for s in group], dtype=float)
        coef = _fit_nonneg(design, t)
        if coef[-1] > 0:
            flops[dtype] = float(1.0 / coef[-1])
        layer.append(float(coef[1] if split else coef[0]))
        if split:
            mb.append(float(coef[0]))
    return (flops, float(np.mean(layer)) if layer else None, float(np.mean(mb)) if mb else None)


def fit_compute_speed(samples: Sequence[ComputeSample], cores: float, flops: Mapping[str, float],
                      layer: float, mb: float, anchor: int = 0) -> dict[int, float]:
    """How many times faster than the fitted FLOP/s each speed sample's layer size computes: per
    hidden size the median of (FLOPs / fitted FLOP/s) / (time less the fit's per-pass and
    per-layer overheads). `anchor` (the main fit's largest layer size, when recorded) gets 1."""
    by_hidden: dict[int, list[float]] = defaultdict(list)
    for s in samples:
        rate = _achieved(flops, s.dtype)
        busy = s.time_s / slowdown(s.busy, cores) - s.passes * s.micro_batches * (mb + s.layers * layer)
        if math.isfinite(rate) and busy > 0:
            by_hidden[s.hidden].append(s.flops / rate / busy)
    out = {h: float(np.median(v)) for h, v in sorted(by_hidden.items())}
    if out and anchor > 0 and anchor < min(out):
        out = {anchor: 1.0, **out}
    return out


SLOWDOWN_BYTES_FACTOR = 10.0
"""A collective sample says how its bytes move only where they outweigh its latency steps this much."""

RING_OPS = ("all_reduce", "p2p")
"""Collectives the link fit is taken from (bandwidth-optimal on gloo and NCCL alike)."""


def _fit_links(samples: Sequence[CollectiveSample], cores: float,
               cache: float = 0.0) -> tuple[dict[str, float], dict[str, float]]:
    """Per link (latency per step, bandwidth) from the ring ops' samples in the cache (buffers
    beyond a known `cache` have their own slowdown: `fit_collective_slowdown`)."""
    bws: dict[str, float] = {}
    lats: dict[str, float] = {}
    for link in LINKS:
        group = [s for s in samples if s.link == link]
        group = [s for s in group if s.op in RING_OPS] or group
        group = [s for s in group if not 0 < cache < s.bytes] or group
        if not group:
            continue
        rows = []
        for s in group:
            factor, steps = wire_factor(s.op, s.group_size)
            rows.append([steps, factor * s.bytes])
        t = np.array([s.time_s / slowdown(s.busy, cores) for s in group])
        coef = _fit_nonneg(np.array(rows, dtype=float), t)
        if coef[1] > 0:
            bws[link] = float(1.0 / coef[1])
        lats[link] = float(coef[0])
    return bws, lats


def fit_collective_slowdown(samples: Sequence[CollectiveSample], cores: float, bws: Mapping[str, float],
                            lats: Mapping[str, float], cache: float = 0.0) -> tuple[dict[str, float], dict[str, float]]:
    """(in the cache, beyond it): per op, the median over its samples whose bytes term the link
    fit prices at least SLOWDOWN_BYTES_FACTOR times its latency steps of (measured time less
    the latency steps) / (the fit's bytes term). In the cache (every sample when `cache` is 0)
    for all_gather and reduce_scatter (the link fit is taken from the others); beyond it
    (buffers over `cache` bytes, which stream from memory) for every op."""
    inside: dict[str, list[float]] = defaultdict(list)
    beyond: dict[str, list[float]] = defaultdict(list)
    for s in samples:
        if s.link not in bws:
            continue
        factor, steps = wire_factor(s.op, s.group_size)
        wire = factor * s.bytes / bws[s.link]
        latency = steps * lats.get(s.link, 0.0)
        if wire <= 0 or wire < SLOWDOWN_BYTES_FACTOR * latency:
            continue
        ratio = max(s.time_s / slowdown(s.busy, cores) - latency, 0.0) / wire
        if cache > 0 and s.bytes > cache:
            beyond[s.op].append(ratio)
        elif s.op not in RING_OPS:
            inside[s.op].append(ratio)
    return tuple({op: float(np.median(v)) for op, v in sorted(d.items()) if float(np.median(v)) > 0}
                 for d in (inside, beyond))


def _achieved(flops: Mapping[str, float], dtype: str) -> float:
    """Fitted FLOP/s of `dtype` (else of any fitted dtype; infinite when none was fitted)."""
    return flops.get(dtype) or (next(iter(flops.values())) if flops else math.inf)


def _decode_layers(s: DecodeSample, flops: Mapping[str, float], layer: float, mb: float) -> float:
    """What the compute fits already price of a generation: the prefill, and the per-layer
    overhead of every decode step."""
    return mb + s.layers * layer + s.prefill_flops / _achieved(flops, s.dtype) + s.steps * s.layers * layer


def _fit_decode(samples: Sequence[DecodeSample], cores: float, flops: Mapping[str, float],
                layer: float, mb: float) -> tuple[float, float, float, float | None]:
    """(fixed, per-step overhead, per-sequence-step overhead, bandwidth or None)."""
    rows, t = [], []
    for s in samples:
        t.append(s.time_s / slowdown(s.busy, cores) - _decode_layers(s, flops, layer, mb))
        sampled = s.steps + 1  # the prefill samples the first token, each decode step one more
        rows.append([1.0, sampled, sampled * s.batch, s.steps * s.bytes])
    coef = _fit_nonneg(np.array(rows, dtype=float), np.array(t))
    bw = float(1.0 / coef[3]) if coef[3] > 0 else None
    return float(coef[0]), float(coef[1]), float(coef[2]), bw


def tp_collectives(sample: ComputeSample | DecodeSample) -> int:
    """In-pass tensor-parallel collectives of a sample, counted as the estimator counts them:
    two per layer per forward-equivalent pass, plus the sampling all-gather of the logits per
    decoded token (the prefill samples one, each decode step one more)."""
    if isinstance(sample, DecodeSample):
        return (sample.steps + 1) * (2 * sample.layers + 1)
    return sample.passes * sample.micro_batches * 2 * sample.layers


def _fit_tp_collectives(compute: Sequence[ComputeSample], decode: Sequence[DecodeSample], cores: float,
                        flops: Mapping[str, float], values: Mapping[str, float],
                        latency: float) -> tuple[float, float] | None:
    """(seconds per in-pass tp collective, seconds per ring step of one) beyond the link latency.

    What tp > 1 samples measure beyond the tp = 1 fits (compute at the rank's share of the FLOPs,
    overheads, decode terms) and the link latency of their collectives, fitted as
    n_collectives x (fixed + ring steps x per step). The bytes of these collectives are small
    (activations of one micro-batch; one token per sequence when decoding), so the link
    bandwidth term, which the estimator still adds, is left out of the fit."""
    layer, mb = values["layer"], values["mb"]
    rows, t = [], []
    for s in [*compute, *decode]:
        if isinstance(s, DecodeSample):
            sampled = s.steps + 1
            base = (_decode_layers(s, flops, layer, mb) + values["decode_fixed"]
                    + sampled * (values["step"] + s.batch * values["per_seq"]) + s.steps * s.bytes / values["bw"])
        else:
            base = s.passes * s.micro_batches * (mb + s.layers * layer) + s.flops / _achieved(flops, s.dtype)
        n, steps = tp_collectives(s), 2 * (s.tp - 1)
        t.append(s.time_s / slowdown(s.busy, cores) - base - n * steps * latency)
        rows.append([n, n * steps])
    if not rows:
        return None
    design = np.array(rows, dtype=float)
    cols = [0, 1] if len({r[1] // max(r[0], 1) for r in rows}) > 1 else [0]  # per step needs two tp sizes
    coef = np.zeros(2)
    coef[cols] = _nonneg_lstsq(design[:, cols], np.array(t))
    return float(coef[0]), float(coef[1])


def _fit_calls(samples: Sequence[CallSample], cores: float) -> dict[str, dict[str, float]]:
    """Per kind: fixed, per sequence, per extra dp rank, per extra dp rank per sequence (seconds).

    overhead = fixed + seqs * per_seq + (dp - 1) * (per_rank + seqs * per_rank_seq); each term is
    fitted only where the samples vary in it."""
    out: dict[str, dict[str, float]] = {k: {} for k in ("fixed", "seq", "dp", "dp_seq")}
    for kind in CALL_SAMPLE_KINDS:
        group = [s for s in samples if s.kind == kind]
        if not group:
            continue
        multi_dp = any(s.dp > 1 for s in group)
        multi_seq = len({s.seqs for s in group}) > 1
        design = np.array([[1.0, s.seqs, s.dp - 1, (s.dp - 1) * s.seqs] for s in group])
        cols = [0] + ([1] if multi_seq else []) + ([2] if multi_dp else []) + ([3] if multi_dp and multi_seq else [])
        coef = np.zeros(4)
        coef[cols] = _nonneg_lstsq(design[:, cols],
                                   np.array([s.overhead_s / slowdown(s.busy, cores) for s in group]))
        for name, col in (("fixed", 0), ("seq", 1), ("dp", 2), ("dp_seq", 3)):
            if col in cols:
                out[name][kind] = float(coef[col])
    return out


def fit_thread_efficiency(samples: Sequence[ThreadSample]) -> dict[int, float]:
    """Thread efficiency per hidden size: the median of the efficiencies of its deepest samples."""
    deepest: dict[int, int] = {}
    for s in samples:
        deepest[s.hidden] = max(deepest.get(s.hidden, 0), s.layers)
    by_hidden: dict[int, list[float]] = defaultdict(list)
    for s in samples:
        if s.layers == deepest[s.hidden]:
            by_hidden[s.hidden].append(s.efficiency)
    return {h: float(np.median(v)) for h, v in sorted(by_hidden.items())}


def fit_corun(samples: Sequence[CoRunSample]) -> tuple[dict[int, float], dict[int, float], float | None,
                                                        int | None]:
    """(compute speed per hidden size, decode speed per hidden size, memory speed, workers) of the
    co-run samples: the median speed per kind and hidden size; the workers of the most samples."""
    by_hidden: dict[str, dict[int, list[float]]] = {"compute": defaultdict(list), "decode": defaultdict(list)}
    memory = []
    for s in samples:
        if s.kind == "memory":
            memory.append(s.speed)
        else:
            by_hidden[s.kind][s.hidden].append(s.speed)
    workers = [s.workers for s in samples]
    compute, decode = ({h: float(np.median(v)) for h, v in sorted(by_hidden[k].items())} for k in ("compute", "decode"))
    return (compute, decode, float(np.median(memory)) if memory else None,
            max(sorted(set(workers)), key=workers.count) if workers else None)


def fit_calibration(samples: Samples) -> Calibration:
    """Fit achieved rates and overheads from samples (each fit needs its kind of sample)."""
    cores = fit_host_cores(samples.contention) if samples.contention else 0.0
    speed = [s for s in samples.compute if s.speed]
    compute = [s for s in samples.compute if s.tp == 1 and not s.speed] or \
        [s for s in samples.compute if not s.speed]
    decode = [s for s in samples.decode if s.tp == 1] or samples.decode
    flops, layer, mb = _fit_compute(compute, cores)
    memory_bw = dram_bw = None
    cache = max((s.cache_bytes for s in samples.memory), default=0.0)
    if samples.memory:
        design = np.array([[1.0, s.bytes] for s in samples.memory])
        coef = _fit_nonneg(design, np.array([s.time_s for s in samples.memory]))
        rate = float(1.0 / coef[1]) if coef[1] > 0 else None
        if cache > 0:  # reads beyond the cache: the DRAM rate
            dram_bw = rate
        else:
            memory_bw = rate
    bws, lats = _fit_links(samples.collectives, cores, cache)
    values: dict[str, Any] = {}
    fitted = _fit_calls(samples.calls, cores)
    call_fixed, call_dp, call_seq, call_dp_seq = fitted["fixed"], fitted["dp"], fitted["seq"], fitted["dp_seq"]
    decode_terms = {"layer": layer or 0.0, "mb": mb or 0.0, "decode_fixed": 0.0, "step": 0.0, "per_seq": 0.0,
                    "bw": math.inf}
    if decode:
        fixed, step, per_seq, bw = _fit_decode(decode, cores, flops, layer or 0.0, mb or 0.0)
        values.update(decode_step_overhead_s=step, decode_sample_overhead_s=per_seq)
        call_fixed["generate"] = call_fixed.get("generate", 0.0) + fixed
        memory_bw = bw or memory_bw
        decode_terms.update(decode_fixed=fixed, step=step, per_seq=per_seq, bw=memory_bw or math.inf)
    # the tp = 1 samples fit the rest; without them the tp > 1 ones did, and nothing is left
    tp_compute = [s for s in samples.compute if s.tp > 1 and not s.speed] if compute and compute[0].tp == 1 else []
    tp_decode = [s for s in samples.decode if s.tp > 1] if any(s.tp == 1 for s in samples.decode) else []
    tp_fit = _fit_tp_collectives(tp_compute, tp_decode, cores, flops, decode_terms, lats.get("intra", 0.0))
    if tp_fit is not None:
        values.update(tp_collective_overhead_s=tp_fit[0], tp_step_overhead_s=tp_fit[1])
    step_fixed = call_fixed.pop("train_step", None)
    optimizer = [s for s in samples.optimizer if s.busy == 1] or samples.optimizer
    if optimizer:  # like compute and decode: samples of one worker alone when there are any
        design = np.array([[1.0, s.params] for s in optimizer])
        t = np.array([s.time_s / slowdown(s.busy, cores) for s in optimizer])
        coef = _fit_nonneg(design, t)
        values["optimizer_param_time_s"] = float(coef[1])
        step_fixed = (step_fixed or 0.0) + float(coef[0])
    if step_fixed is not None:
        values["train_step_overhead_s"] = step_fixed
    call_dp.pop("train_step", None)
    call_seq.pop("train_step", None)
    call_dp_seq.pop("train_step", None)
    if "rule" in call_fixed:
        values["rule_call_overhead_s"] = call_fixed.pop("rule")
        values["rule_seq_overhead_s"] = call_seq.pop("rule", 0.0)
    call_dp.pop("rule", None)
    call_dp_seq.pop("rule", None)
    for kind in MOVE_KINDS:
        group = [m for m in samples.moves if m.kind == kind]
        if group:
            lat, bw = lats.get("intra", 0.0), bws.get("intra", math.inf)
            extra = [m.time_s / slowdown(m.busy, cores) - m.peers * lat - m.busiest_bytes / bw for m in group]
            if kind == "realloc":
                coef = _nonneg_lstsq(np.array([[1.0, m.peers] for m in group]), np.array(extra))
                values.update(realloc_overhead_s=float(coef[0]), realloc_peer_overhead_s=float(coef[1]))
            else:
                values["data_overhead_s"] = max(0.0, float(np.median(extra)))
    if dram_bw is not None:
        values.update(cache_bytes=cache, dram_bandwidth=dram_bw)
    anchor = max((s.hidden for s in compute), default=0)
    corun_speed, corun_decode, corun_memory, corun_workers = fit_corun(samples.corun)
    slow_inside, slow_beyond = fit_collective_slowdown(samples.collectives, cores, bws, lats, cache)
    values.update(corun_memory_speed=corun_memory, corun_workers=corun_workers)
    return Calibration(flops=flops, layer_overhead_s=layer, memory_bandwidth=memory_bw, link_bandwidth=bws,
                       link_latency=lats, host_cores=cores if samples.contention else None,
                       micro_batch_overhead_s=mb, call_overhead_s=call_fixed, call_dp_overhead_s=call_dp,
                       call_seq_overhead_s=call_seq, call_dp_seq_overhead_s=call_dp_seq,
                       thread_efficiency_by_hidden=fit_thread_efficiency(samples.threads),
                       compute_speed_by_hidden=fit_compute_speed([s for s in speed if not s.decode], cores, flops,
                                                                 layer or 0.0, mb or 0.0, anchor),
                       decode_speed_by_hidden=fit_compute_speed([s for s in speed if s.decode], cores, flops,
                                                                layer or 0.0, mb or 0.0, anchor),
                       collective_slowdown=slow_inside, collective_slowdown_beyond_cache=slow_beyond,
                       corun_speed_by_hidden=corun_speed, corun_decode_speed_by_hidden=corun_decode, **values)


def samples_from(compute: Sequence[ComputeSample] = (), memory: Sequence[MemorySample] = (),
                 collectives: Sequence[CollectiveSample] = (), **others: Sequence[Any]) -> Samples:
    """Convenience constructor from lists."""
    return Samples(compute=tuple(compute), memory=tuple(memory), collectives=tuple(collectives),
                   **{k: tuple(v) for k, v in others.items()})
