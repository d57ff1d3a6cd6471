"""Fitting achieved rates from samples and applying them over the analytic defaults."""

from __future__ import annotations

import pytest

from cost_model.calibration import Calibration, apply_calibration, fit_calibration, samples_from
from cost_model.collectives import collective_time
from cost_model.estimator import AnalyticCostModel
from cost_model.hardware import HardwareSpec, preset
from cost_model.samples import CollectiveSample, ComputeSample, MemorySample
from graph.placement.layout import Cluster, DeviceMesh, Layout
from graph.spec import Call, CallKind, ModelArch, ModelSpec


def _synthetic_samples() -> list:
    # ground truth: 2e10 FLOP/s fp32 with 1e-4 s per pass; 5e9 B/s memory; intra link 1e9 B/s,
    # 5e-4 s per step; inter link 2e8 B/s, 1e-3 s per step
    compute = [ComputeSample(flops=f, passes=p, dtype="fp32", time_s=p * 1e-4 + f / 2e10)
               for f in (1e8, 4e8, 1.6e9) for p in (1, 3)]
    memory = [MemorySample(bytes=b, time_s=2e-5 + b / 5e9) for b in (1e6, 1e7, 1e8)]
    coll = []
    for link, bw, lat in (("intra", 1e9, 5e-4), ("inter", 2e8, 1e-3)):
        for n in (2, 4):
            for nbytes in (1e4, 1e6, 1e7):
                for op, factor, steps in (("all_reduce", 2 * (n - 1) / n, 2 * (n - 1)),
                                          ("all_gather", (n - 1) / n, n - 1)):
                    coll.append(CollectiveSample(op=op, link=link, group_size=n, bytes=nbytes,
                                                 time_s=steps * lat + factor * nbytes / bw))
    return [compute, memory, coll]


def test_fit_recovers_ground_truth() -> None:
    cal = fit_calibration(samples_from(*_synthetic_samples()))
    assert cal.flops["fp32"] == pytest.approx(2e10, rel=1e-6)
    assert cal.layer_overhead_s == pytest.approx(1e-4, rel=1e-6)
    assert cal.memory_bandwidth == pytest.approx(5e9, rel=1e-6)
    assert cal.link_bandwidth["intra"] == pytest.approx(1e9, rel=1e-6)
    assert cal.link_latency["inter"] == pytest.approx(1e-3, rel=1e-6)


def test_fitted_rates_override_the_defaults() -> None:
    base = preset("cpu-gloo")
    cal = fit_calibration(samples_from(*_synthetic_samples()))
    spec = apply_calibration(base, cal)
    assert spec.flops("fp32") == pytest.approx(2e10)
    assert spec.achieved_memory_bandwidth == pytest.approx(5e9)  # above the preset's peak: peak raised
    assert spec.link_bandwidth(False) == pytest.approx(1e9) and spec.link_latency(True) == pytest.approx(1e-3)
    cluster = Cluster(num_nodes=2, devices_per_node=2)
    # a collective priced with the calibrated spec reproduces the measured time
    assert collective_time("all_reduce", 1e6, [0, 1], spec, cluster) == pytest.approx(2 * 5e-4 + 1e6 / 1e9)
    # and the estimator's forward time follows the fitted FLOP/s
    arch = ModelArch(family="llama", num_layers=2, hidden_size=64, ffn_hidden_size=128, num_heads=8,
                     num_kv_heads=4, vocab_size=128)
    call = Call(name="lp", model="ref", kind=CallKind.INFERENCE, interface="logprobs", batch_size=4,
                prompt_len=8, response_len=8)
    lay = Layout(mesh=DeviceMesh.span(0, 1), dp=1, tp=1, pp=1)
    slow = AnalyticCostModel(base, cluster, dtype="fp32").call_estimate(call, ModelSpec(role="ref", arch=arch), lay)
    fast = AnalyticCostModel(spec, cluster, dtype="fp32").call_estimate(call, ModelSpec(role="ref", arch=arch), lay)
    assert fast.breakdown["compute_s"] < slow.breakdown["compute_s"]


def test_bad_samples_are_rejected() -> None:
    with pytest.raises(ValueError, match="unknown collective 'allreduce'"):
        CollectiveSample(op="allreduce", link="intra", group_size=2, bytes=1, time_s=1)
    with pytest.raises(ValueError, match="link 'nvlink'"):
        CollectiveSample(op="all_reduce", link="nvlink", group_size=2, bytes=1, time_s=1)
    with pytest.raises(ValueError, match="unknown field 'flop'"):
        Calibration.from_dict({"flop": {}})


# ---------------------------------------------------------------------- overheads and contention
from cost_model.calibration import fit_host_cores, slowdown  # noqa: E402
from cost_model.samples import (  # noqa: E402
    CallSample,
    ContentionSample,
    DecodeSample,
    MoveSample,
    OptimizerSample,
    Samples,
)


def _overhead_samples() -> Samples:
    # ground truth (a device alone): 1e9 FLOP/s, 2e-3 s per layer pass, 5e-3 s per micro-batch pass;
    # 4 devices share 2 cores, so samples taken with 4 busy devices run 2x slower
    compute = []
    for layers in (1, 2):
        for flops in (1e7, 5e7):
            for passes in (1, 3):
                for busy in (1, 4):
                    solo = passes * (5e-3 + layers * 2e-3) + passes * flops / 1e9
                    compute.append(ComputeSample(flops=passes * flops, time_s=solo * (2 if busy == 4 else 1),
                                                 passes=passes, dtype="fp32", layers=layers, busy=busy))
    # decode: fixed 1e-2, 3e-3 per sampled token, 1e-4 per sequence per sampled token (steps + 1
    # tokens: the prefill samples the first), 1e8 B/s per decode step, plus the prefill and the
    # per-layer overhead the compute fit knows
    decode = []
    for steps in (1, 5, 11):
        for batch in (2, 8):
            for layers in (1, 2):
                nbytes = 1e5 * layers + 1e3 * batch
                prefill = 5e-3 + layers * 2e-3 + 1e6 * batch / 1e9
                t = (1e-2 + prefill + steps * (layers * 2e-3 + nbytes / 1e8) + (steps + 1) * (3e-3 + batch * 1e-4))
                decode.append(DecodeSample(steps=steps, batch=batch, layers=layers, bytes=nbytes,
                                           prefill_flops=1e6 * batch, time_s=t, dtype="fp32"))
    optimizer = [OptimizerSample(params=p, time_s=4e-3 + p * 1e-7) for p in (1e4, 1e5)]
    calls = [CallSample(kind="train_step", dp=1, overhead_s=6e-3),
             CallSample(kind="inference", dp=1, overhead_s=0.02 + 4 * 1e-3, seqs=4),
             CallSample(kind="inference", dp=1, overhead_s=0.02 + 16 * 1e-3, seqs=16),
             CallSample(kind="inference", dp=4, overhead_s=2 * (0.02 + 4e-3 + 3 * (0.01 + 4 * 5e-4)), seqs=4,
                        busy=4),
             CallSample(kind="inference", dp=4, overhead_s=2 * (0.02 + 16e-3 + 3 * (0.01 + 16 * 5e-4)), seqs=16,
                        busy=4),
             CallSample(kind="generate", dp=1, overhead_s=0.03)]
    contention = [ContentionSample(devices=4, alone_s=0.1, together_s=0.2)]
    # no collective samples: no link time to take off; 2 ms per reallocation + 4 ms per peer (the
    # 3-peer one measured with 4 busy devices: twice as long); 3 ms per data transfer
    moves = [MoveSample(kind="realloc", busiest_bytes=0.0, peers=p, time_s=(0.002 + 0.004 * p) * (2 if p == 3 else 1),
                        busy=4 if p == 3 else 1) for p in (0, 1, 3)]
    moves.append(MoveSample(kind="data", busiest_bytes=1e4, peers=1, time_s=0.003))
    return Samples(compute=tuple(compute), decode=tuple(decode), optimizer=tuple(optimizer),
                   calls=tuple(calls), contention=tuple(contention), moves=tuple(moves))


def test_contention_gives_effective_cores_and_slowdown() -> None:
    assert fit_host_cores([ContentionSample(devices=4, alone_s=0.1, together_s=0.2)]) == pytest.approx(2.0)
    # under 15% slower: the devices do not share cores
    assert fit_host_cores([ContentionSample(devices=4, alone_s=0.1, together_s=0.11)]) == 0.0
    assert slowdown(4, 2.0) == 2.0 and slowdown(2, 2.0) == 1.0 and slowdown(8, 0.0) == 1.0
    # outside load hid most of the slowdown (4 x 0.1 / 0.12 = 3.3 cores) but the node has 2: 2
    assert fit_host_cores([ContentionSample(devices=4, alone_s=0.1, together_s=0.12, cores=2)]) == 2.0
    # as many cores as devices: nothing is shared, whatever the noise says
    assert fit_host_cores([ContentionSample(devices=4, alone_s=0.1, together_s=0.3, cores=4)]) == 0.0
    # the median of several samples: 4 x 0.1 / {0.2, 0.21, 0.5}
    samples = [ContentionSample(devices=4, alone_s=0.1, together_s=t) for t in (0.2, 0.5, 0.21)]
    assert fit_host_cores(samples) == pytest.approx(0.4 / 0.21)


def test_fit_recovers_overheads_by_hand() -> None:
    cal = fit_calibration(_overhead_samples())
    assert cal.host_cores == pytest.approx(2.0)
    assert cal.flops["fp32"] == pytest.approx(1e9, rel=1e-6)
    assert cal.layer_overhead_s == pytest.approx(2e-3, rel=1e-6)
    assert cal.micro_batch_overhead_s == pytest.approx(5e-3, rel=1e-6)
    assert cal.decode_step_overhead_s == pytest.approx(3e-3, rel=1e-6)
    assert cal.decode_sample_overhead_s == pytest.approx(1e-4, rel=1e-6)
    assert cal.memory_bandwidth == pytest.approx(1e8, rel=1e-6)
    assert cal.optimizer_param_time_s == pytest.approx(1e-7, rel=1e-6)
    # train step: 6e-3 measured beyond forward+backward and optimizer, plus the optimizer's fixed 4e-3
    assert cal.train_step_overhead_s == pytest.approx(1e-2, rel=1e-6)
    # inference: 0.02 fixed, 0.01 per extra dp rank (the dp=4 samples ran 2x slow: 4 busy on 2 cores)
    assert cal.call_overhead_s["inference"] == pytest.approx(0.02, rel=1e-6)
    assert cal.call_dp_overhead_s["inference"] == pytest.approx(0.01, rel=1e-6)
    assert cal.call_seq_overhead_s["inference"] == pytest.approx(1e-3, rel=1e-6)  # per sequence per rank
    assert cal.call_dp_seq_overhead_s["inference"] == pytest.approx(5e-4, rel=1e-6)  # gathered per sequence
    # generate: 0.03 measured around the generation plus the generation's own fixed 1e-2
    assert cal.call_overhead_s["generate"] == pytest.approx(0.04, rel=1e-6)
    assert cal.realloc_overhead_s == pytest.approx(0.002) and cal.realloc_peer_overhead_s == pytest.approx(0.004)
    assert cal.data_overhead_s == pytest.approx(0.003)
    spec = apply_calibration(preset("cpu-gloo"), cal)
    assert spec.host_cores == pytest.approx(2.0) and spec.slowdown(4) == pytest.approx(2.0)
    assert spec.call_overhead("inference", 3) == pytest.approx(0.04)
    assert spec.call_overhead("inference", 3, seqs_per_rank=5) == pytest.approx(0.02 + 5e-3 + 2 * (0.01 + 5 * 5e-4))
    assert spec.train_step_overhead_s == pytest.approx(1e-2)


def test_rule_reward_calls_fit_a_fixed_and_a_per_sequence_cost():
    from cost_model.calibration import apply_calibration, fit_calibration
    from cost_model.hardware import preset
    from cost_model.samples import CallSample, Samples

    samples = Samples(calls=tuple(CallSample(kind="rule", dp=1, overhead_s=2e-4 + n * 5e-5, seqs=n)
                                  for n in (16, 64, 128)))
    cal = fit_calibration(samples)
    assert cal.rule_call_overhead_s == pytest.approx(2e-4) and cal.rule_seq_overhead_s == pytest.approx(5e-5)
    assert "rule" not in cal.call_overhead_s and "rule" not in cal.call_seq_overhead_s
    spec = apply_calibration(preset("cpu-gloo"), cal)
    assert spec.rule_seq_overhead_s == pytest.approx(5e-5)


def test_thread_samples_fit_an_efficiency_per_hidden_size_by_hand():
    from cost_model.calibration import Calibration, apply_calibration, fit_calibration
    from cost_model.samples import Samples, ThreadSample

    samples = Samples(threads=(
        # hidden 64: 1.0 -> 0.9 s with 2 threads is 1.111x: (1/0.9 - 1) / 1 = 0.111; a slower second
        # timing (threads hurt) clips to 0; median of (0.111, 0, 0.25) = 0.111
        ThreadSample(hidden=64, threads=2, one_s=1.0, time_s=0.9),
        ThreadSample(hidden=64, threads=2, one_s=1.0, time_s=1.2),
        ThreadSample(hidden=64, threads=2, one_s=1.0, time_s=0.8),
        # hidden 512 on 4 threads: 1.0 -> 0.4 s is 2.5x: (2.5 - 1) / 3 = 0.5
        ThreadSample(hidden=512, threads=4, one_s=1.0, time_s=0.4)))
    cal = fit_calibration(samples)
    assert cal.thread_efficiency_by_hidden == pytest.approx({64: 1 / 0.9 - 1, 512: 0.5})
    assert ThreadSample(hidden=8, threads=2, one_s=1.0, time_s=0.25).efficiency == 1.0  # clipped at 1
    # a deeper sample of a size (a model beyond the cache) is taken over its one-layer ones:
    # 1.0 -> 0.55 s is (1/0.55 - 1) = 0.818
    deep = Samples(threads=(*samples.threads, ThreadSample(hidden=64, threads=2, one_s=1.0, time_s=0.55, layers=6)))
    assert fit_calibration(deep).thread_efficiency_by_hidden == pytest.approx({64: 1 / 0.55 - 1, 512: 0.5})
    spec = apply_calibration(preset("cpu-gloo"), cal)
    assert spec.thread_efficiency_by_hidden == cal.thread_efficiency_by_hidden
    assert Calibration.from_dict(cal.to_dict()) == cal  # via JSON's string keys too
    assert Samples.from_dict(samples.to_dict()) == samples
    with pytest.raises(ValueError, match="threads >= 2"):
        ThreadSample(hidden=64, threads=1, one_s=1.0, time_s=1.0)


def test_in_pass_tp_collectives_fit_a_fixed_and_a_per_step_cost_by_hand() -> None:
    from cost_model.calibration import tp_collectives
    from cost_model.samples import DecodeSample

    # ground truth: 1e9 FLOP/s, nothing else fixed; link latency 1e-4 per step; a tp collective
    # costs 2e-3 fixed + 5e-4 per ring step beyond the link (tp 2: 2 steps, tp 4: 6 steps)
    one = [ComputeSample(flops=f, passes=p, dtype="fp32", layers=2, time_s=f / 1e9) for f in (1e6, 4e6)
           for p in (1, 3)]
    coll = [CollectiveSample(op="all_reduce", link="intra", group_size=2, bytes=b, time_s=2 * 1e-4 + b / 1e9)
            for b in (1e3, 1e6, 1e7)]

    def extra(tp: int) -> float:
        return 2e-3 + 2 * (tp - 1) * (5e-4 + 1e-4)

    tp = [ComputeSample(flops=f, passes=p, dtype="fp32", layers=2, tp=t, busy=t,
                        time_s=f / 1e9 + p * 2 * 2 * extra(t)) for f in (1e6, 4e6) for p in (1, 3) for t in (2, 4)]
    decode = [DecodeSample(steps=7, batch=4, layers=2, bytes=0.0, prefill_flops=1e6, time_s=1e6 / 1e9, dtype="fp32")]
    tp_decode = [DecodeSample(steps=7, batch=4, layers=2, bytes=0.0, prefill_flops=5e5, tp=t, busy=t, dtype="fp32",
                              time_s=5e5 / 1e9 + 8 * (2 * 2 + 1) * extra(t)) for t in (2, 4)]
    # a decode of 7 steps after the prefill samples 8 tokens: 8 x (2 per layer + the logits' all-gather)
    assert tp_collectives(tp_decode[0]) == 8 * 5 and tp_collectives(tp[2]) == 3 * 2 * 2
    cal = fit_calibration(samples_from(one + tp, collectives=coll, decode=decode + tp_decode))
    assert cal.tp_collective_overhead_s == pytest.approx(2e-3, rel=1e-6)
    assert cal.tp_step_overhead_s == pytest.approx(5e-4, rel=1e-6)
    spec = apply_calibration(preset("cpu-gloo"), cal)
    assert spec.tp_collective_extra(1) == 0.0
    assert spec.tp_collective_extra(4) == pytest.approx(2e-3 + 6 * 5e-4)
    # without tp = 1 samples the tp > 1 ones fit the rates and nothing is left for this term
    assert fit_calibration(samples_from(tp, collectives=coll)).tp_collective_overhead_s is None


def test_speed_samples_fit_how_much_faster_large_layers_compute_by_hand() -> None:
    from cost_model.calibration import fit_compute_speed
    from cost_model.samples import Samples

    # main fit's truth: 2e10 FLOP/s, 1e-4 s per pass, at hidden 128
    main = [ComputeSample(flops=f, passes=p, dtype="fp32", hidden=128, time_s=p * 1e-4 + f / 2e10)
            for f in (1e8, 4e8, 1.6e9) for p in (1, 3)]
    # hidden 576 computes at 5e10 FLOP/s (2.5x): 1e9 FLOPs in one pass take 1e-4 + 0.02 s, three in 3e-4 + 0.06 s;
    # a third, noisy sample at 3x; the median is 2.5
    speed = [ComputeSample(flops=1e9, passes=1, dtype="fp32", hidden=576, speed=True, time_s=1e-4 + 1e9 / 5e10),
             ComputeSample(flops=3e9, passes=3, dtype="fp32", hidden=576, speed=True, time_s=3e-4 + 3e9 / 5e10),
             ComputeSample(flops=1e9, passes=1, dtype="fp32", hidden=576, speed=True, time_s=1e-4 + 1e9 / 6e10),
             # hidden 256 at 3e10 FLOP/s (1.5x)
             ComputeSample(flops=6e8, passes=3, dtype="fp32", hidden=256, speed=True, time_s=3e-4 + 6e8 / 3e10)]
    # a decode-shaped pass (one token per sequence) at hidden 576 reaches only 1.6e10 FLOP/s (0.8x)
    skinny = ComputeSample(flops=1.6e8, passes=1, dtype="fp32", hidden=576, speed=True, decode=True,
                           time_s=1e-4 + 1.6e8 / 1.6e10)
    cal = fit_calibration(Samples(compute=tuple(main + speed + [skinny])))
    assert cal.decode_speed_by_hidden == pytest.approx({128: 1.0, 576: 0.8})
    # the speed samples do not move the main fit
    assert cal.flops["fp32"] == pytest.approx(2e10, rel=1e-6) and cal.layer_overhead_s == pytest.approx(1e-4)
    assert cal.compute_speed_by_hidden == pytest.approx({128: 1.0, 256: 1.5, 576: 2.5})
    assert fit_compute_speed(speed[:1], 0.0, {"fp32": 2e10}, 1e-4, 0.0) == pytest.approx({576: 2.5})  # no anchor
    spec = apply_calibration(preset("cpu-gloo"), cal)
    assert spec.compute_speed_by_hidden == cal.compute_speed_by_hidden
    # between measured sizes in log(hidden): 384 is halfway from 256 to 576 by log? log(384/256)/log(576/256) = 0.5
    assert spec.compute_speed_at(384) == pytest.approx(1.5 + 0.5 * 1.0)
    assert spec.compute_speed_at(64) == 1.0 and spec.compute_speed_at(4096) == pytest.approx(2.5)
    assert spec.compute_speed_at(576, decode=True) == pytest.approx(0.8)
    assert preset("cpu-gloo").compute_speed_at(576) == 1.0  # nothing measured
    assert Calibration.from_dict(cal.to_dict()) == cal and Samples.from_dict(Samples(compute=tuple(speed)).to_dict()) \
        == Samples(compute=tuple(speed))
    with pytest.raises(ValueError, match="hidden"):
        ComputeSample(flops=1e9, time_s=1.0, speed=True)  # a speed sample must say its size


def test_all_gather_and_reduce_scatter_fit_a_slowdown_against_the_ring_fit_by_hand() -> None:
    # the link: 1e9 B/s, 5e-4 s per step, from all-reduces and sends; gloo's all-gather moves its
    # bytes 3x slower than a ring, its reduce-scatter 4x
    lat, bw = 5e-4, 1e9
    coll = []
    for nbytes in (1e6, 1e7, 1e8):
        coll.append(CollectiveSample(op="all_reduce", link="intra", group_size=2, bytes=nbytes,
                                     time_s=2 * lat + nbytes / bw))
        coll.append(CollectiveSample(op="p2p", link="intra", group_size=2, bytes=nbytes, time_s=lat + nbytes / bw))
        for op, slow in (("all_gather", 3.0), ("reduce_scatter", 4.0)):
            coll.append(CollectiveSample(op=op, link="intra", group_size=2, bytes=nbytes,
                                         time_s=lat + slow * 0.5 * nbytes / bw))
    # an all-gather whose bytes term (5e4 / 1e9 = 50 us) is under 10 latency steps (5 ms) says nothing
    coll.append(CollectiveSample(op="all_gather", link="intra", group_size=2, bytes=1e5, time_s=0.1))
    cal = fit_calibration(samples_from(collectives=coll))
    assert cal.link_bandwidth["intra"] == pytest.approx(bw, rel=1e-6)
    assert cal.link_latency["intra"] == pytest.approx(lat, rel=1e-6)
    assert cal.collective_slowdown == pytest.approx({"all_gather": 3.0, "reduce_scatter": 4.0})
    spec = apply_calibration(preset("cpu-gloo"), cal)
    cluster = Cluster(num_nodes=1, devices_per_node=2)
    # a 2-rank reduce-scatter of 2e8 bytes: one latency step + 4 x (1/2 x 2e8) / 1e9 = 0.4005 s
    assert collective_time("reduce_scatter", 2e8, (0, 1), spec, cluster) == pytest.approx(lat + 0.4)
    assert collective_time("all_reduce", 2e8, (0, 1), spec, cluster) == pytest.approx(2 * lat + 0.2)
    assert Calibration.from_dict(cal.to_dict()) == cal
    with pytest.raises(ValueError, match="collective_slowdown"):
        preset("cpu-gloo").replace(collective_slowdown={"all_reduce": 2.0})


def test_reads_beyond_the_cache_stream_at_the_dram_rate_by_hand() -> None:
    from cost_model.samples import Samples

    # DRAM: 2e9 B/s and 1e-4 s per read, measured beyond a 32 MB cache
    memory = tuple(MemorySample(bytes=b, time_s=1e-4 + b / 2e9, cache_bytes=32e6) for b in (128e6, 256e6))
    cal = fit_calibration(Samples(memory=memory))
    assert cal.dram_bandwidth == pytest.approx(2e9) and cal.cache_bytes == 32e6
    assert cal.memory_bandwidth is None  # the in-cache rate comes from the decode samples
    spec = apply_calibration(preset("cpu-gloo").replace(memory_bandwidth=8e9, memory_efficiency=1.0), cal)
    # 100 MB of weights: 32 MB from the cache at 8e9 B/s (4 ms), 68 MB from DRAM at 2e9 (34 ms)
    assert spec.read_time(100e6) == pytest.approx(32e6 / 8e9 + 68e6 / 2e9)
    assert spec.read_time(16e6) == pytest.approx(16e6 / 8e9)  # all in the cache
    assert spec.with_threads(2, None).read_time(100e6) == pytest.approx(spec.read_time(100e6) / 1.6)  # eff 0.6
    # without a DRAM rate every read streams at the memory bandwidth (GPU presets)
    assert preset("h100-80g").read_time(1e9) == pytest.approx(1e9 / preset("h100-80g").achieved_memory_bandwidth)
    # old profiles' memory samples (no cache recorded) still fit the memory bandwidth
    old = fit_calibration(Samples(memory=tuple(MemorySample(bytes=b, time_s=b / 5e9) for b in (1e6, 1e7, 1e8))))
    assert old.memory_bandwidth == pytest.approx(5e9) and old.dram_bandwidth is None
    assert Calibration.from_dict(cal.to_dict()) == cal


def test_corun_samples_fit_a_speed_per_kind_and_hidden_size_by_hand() -> None:
    from cost_model.samples import CoRunSample, Samples

    def s(kind: str, alone: float, together: float, hidden: int = 0, workers: int = 2) -> CoRunSample:
        return CoRunSample(kind=kind, hidden=hidden, workers=workers, bytes=64e6, alone_s=alone, together_s=together)

    samples = Samples(corun=(
        # compute at 576: speeds 0.8, 0.5, and 1.25 clipped to 1 (a faster co-run is noise); median 0.8
        s("compute", 0.8, 1.0, 576), s("compute", 0.5, 1.0, 576), s("compute", 1.25, 1.0, 576),
        s("compute", 0.9, 1.0, 256),
        s("decode", 0.65, 1.0, 576),
        # memory: median of 0.6 and 0.7
        s("memory", 0.6, 1.0), s("memory", 0.7, 1.0)))
    cal = fit_calibration(samples)
    assert cal.corun_speed_by_hidden == pytest.approx({256: 0.9, 576: 0.8})
    assert cal.corun_decode_speed_by_hidden == pytest.approx({576: 0.65})
    assert cal.corun_memory_speed == pytest.approx(0.65) and cal.corun_workers == 2
    spec = apply_calibration(preset("cpu-gloo"), cal)
    assert spec.corun_workers == 2 and spec.corun_memory_speed == pytest.approx(0.65)
    assert spec.corun_speed_by_hidden == cal.corun_speed_by_hidden
    assert Calibration.from_dict(cal.to_dict()) == cal
    assert Samples.from_dict(samples.to_dict()) == samples
    # without co-run samples the spec keeps "none measured"
    assert apply_calibration(preset("cpu-gloo"), fit_calibration(Samples())).corun_workers == 0
    with pytest.raises(ValueError, match="workers >= 2"):
        s("compute", 1.0, 1.0, 576, workers=1)
    with pytest.raises(ValueError, match="hidden >= 1 unless memory"):
        s("decode", 1.0, 1.0, 0)


def test_collectives_beyond_the_cache_fit_their_own_slowdown_by_hand() -> None:
    # the link (1e9 B/s, 5e-4 s per step) from buffers in a 32 MB cache; beyond it gloo's
    # all-reduce moves its bytes 2x slower than in it, its reduce-scatter 6x slower than a ring
    # (3x in the cache), a send 1.1x
    lat, bw, cache = 5e-4, 1e9, 32e6
    coll = []
    for nbytes, beyond in ((1e6, False), (1e7, False), (2e7, False), (1.28e8, True), (2.56e8, True)):
        ar, rs, p2p = (2.0, 6.0, 1.1) if beyond else (1.0, 3.0, 1.0)
        coll += [CollectiveSample(op="all_reduce", link="intra", group_size=2, bytes=nbytes,
                                  time_s=2 * lat + ar * nbytes / bw),
                 CollectiveSample(op="p2p", link="intra", group_size=2, bytes=nbytes, time_s=lat + p2p * nbytes / bw),
                 CollectiveSample(op="reduce_scatter", link="intra", group_size=2, bytes=nbytes,
                                  time_s=lat + rs * 0.5 * nbytes / bw)]
    memory = [MemorySample(bytes=4 * cache, time_s=0.1, cache_bytes=cache)]
    cal = fit_calibration(samples_from(collectives=coll, memory=memory))
    # the link fit leaves the samples beyond the cache out
    assert cal.link_bandwidth["intra"] == pytest.approx(bw, rel=1e-6)
    assert cal.link_latency["intra"] == pytest.approx(lat, rel=1e-6)
    assert cal.collective_slowdown == pytest.approx({"reduce_scatter": 3.0})
    assert cal.collective_slowdown_beyond_cache == pytest.approx({"all_reduce": 2.0, "p2p": 1.1, "reduce_scatter": 6.0})
    spec = apply_calibration(preset("cpu-gloo"), cal)
    cluster = Cluster(num_nodes=1, devices_per_node=2)
    # a 2-rank reduce-scatter of 2e8 bytes (beyond the cache): one step + 6 x (1/2 x 2e8) / 1e9
    assert collective_time("reduce_scatter", 2e8, (0, 1), spec, cluster) == pytest.approx(lat + 0.6)
    # of 2e7 bytes (in it): 3 x 1e7 / 1e9
    assert collective_time("reduce_scatter", 2e7, (0, 1), spec, cluster) == pytest.approx(lat + 0.03)
    # an all-gather, not measured beyond the cache, keeps its in-cache factor (none here: the ring's)
    assert collective_time("all_gather", 2e8, (0, 1), spec, cluster) == pytest.approx(lat + 0.1)
    assert Calibration.from_dict(cal.to_dict()) == cal
    assert HardwareSpec.from_dict(spec.to_dict()) == spec
    # without a cache recorded (older profiles) every sample is "in the cache", as before
    old = fit_calibration(samples_from(collectives=coll))
    assert old.collective_slowdown_beyond_cache == {}
    with pytest.raises(ValueError, match="collective_slowdown_beyond_cache"):
        preset("cpu-gloo").replace(collective_slowdown_beyond_cache={"broadcast": 2.0})
