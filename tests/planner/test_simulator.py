"""Simulator timelines checked against schedules worked out by hand (see each docstring)."""

from __future__ import annotations

import itertools
import random

import pytest

from graph.placement.layout import Cluster
from planner.context import PlanContext
from planner.simulator import Simulator
from tests.planner.graphs import fan_graph, frozen_replica_graph, gen_train_graph, on, rule_graph
from tests.planner.synthetic import FixedCost, SyntheticCost, ppo_graph


def _entries(plan, label, iteration):
    return sorted({(e.start, e.end) for e in plan.timeline
                   if e.label == label and e.iteration == iteration})


def test_same_layout_runs_back_to_back():
    """gen 2 s then train 3 s on the same placement: no moves, 5 s per iteration."""
    g = gen_train_graph()
    cost = FixedCost(Cluster(num_nodes=1, devices_per_node=2), times={"gen": 2.0, "train": 3.0})
    plan = PlanContext(g, cost).evaluate({"gen": on(0, 2), "train": on(0, 2)}, "t")
    assert plan.iteration_time_s == pytest.approx(5.0)
    assert plan.reallocations == () and plan.transfers == ()
    assert _entries(plan, "gen", 1) == [(5.0, 7.0)]
    assert _entries(plan, "train", 3) == [(17.0, 20.0)]


def test_trained_model_replica_is_refreshed_every_iteration():
    """gen at tp2, train at dp2: realloc 1 + gen 2 + transfer 0.5 + train 3 = 6.5 s."""
    g = gen_train_graph()
    cost = FixedCost(Cluster(num_nodes=1, devices_per_node=2), times={"gen": 2.0, "train": 3.0})
    plan = PlanContext(g, cost).evaluate({"gen": on(0, 2, tp=2), "train": on(0, 2)}, "t")
    assert plan.iteration_time_s == pytest.approx(6.5)
    (step,) = plan.reallocations
    assert (step.model, step.before_call, step.every_iteration) == ("actor", "gen", True)
    assert step.src == on(0, 2) and step.dst == on(0, 2, tp=2)
    (move,) = plan.transfers
    assert (move.key, move.producer, move.consumer) == ("seq", "gen", "train")
    # iteration 1: realloc after train(0) ends at 6.5, gen 7.5-9.5, transfer, train 10-13
    assert _entries(plan, "actor->gen", 1) == [(6.5, 7.5)]
    assert _entries(plan, "gen", 1) == [(7.5, 9.5)]
    assert _entries(plan, "train", 1) == [(10.0, 13.0)]


def test_disjoint_meshes_overlap_and_transfers_delay_consumers():
    """The fan graph on two single-device meshes (worked in the docstring of the module).

    Iteration 0: gen [0] 0-2; seq -> ref_inf 2-2.5; ref_inf [1] 2.5-3.5; values [1]
    3.5-5; actor_train waits for val (5 + 0.5): 5.5-8.5; critic_train [1] 5-7.
    Iteration 1 starts gen at 8.5 (after actor_train): the period is the critical path
    2 + 0.5 + 1 + 1.5 + 0.5 + 3 = 8.5.
    """
    g = fan_graph()
    cost = FixedCost(Cluster(num_nodes=1, devices_per_node=2),
                     times={"gen": 2.0, "ref_inf": 1.0, "values": 1.5, "actor_train": 3.0,
                            "critic_train": 2.0})
    layouts = {"gen": on(0, 1), "actor_train": on(0, 1), "ref_inf": on(1, 1), "values": on(1, 1),
               "critic_train": on(1, 1)}
    plan = PlanContext(g, cost).evaluate(layouts, "t")
    assert _entries(plan, "values", 0) == [(3.5, 5.0)]
    assert _entries(plan, "actor_train", 0) == [(5.5, 8.5)]
    assert _entries(plan, "critic_train", 0) == [(5.0, 7.0)]
    assert _entries(plan, "critic_train", 1) == [(13.5, 15.5)]
    assert plan.iteration_time_s == pytest.approx(8.5)
    assert plan.reallocations == ()
    assert {(t.key, t.consumer) for t in plan.transfers} == {
        ("seq", "ref_inf"), ("seq", "values"), ("ref_logp", "actor_train"), ("val", "actor_train"),
        ("seq", "critic_train")}


def test_frozen_model_replica_is_filled_once():
    """ref lives on [1] (its first call); ref2 on [0] gets it in iteration 0 only.

    Iteration 0: gen 0-2, ref1 2.5-3.5, realloc [0,1] 3.5-4.5, ref2 4.5-5.5, train 5.5-8.5.
    Iteration 1: gen 8.5-10.5, ref1 11-12, ref2 10.5-11.5, train 12.5-15.5; then a 7 s period.
    """
    g = frozen_replica_graph()
    cost = FixedCost(Cluster(num_nodes=1, devices_per_node=2),
                     times={"gen": 2.0, "ref1": 1.0, "ref2": 1.0, "train": 3.0})
    layouts = {"gen": on(0, 1), "train": on(0, 1), "ref1": on(1, 1), "ref2": on(0, 1)}
    plan = PlanContext(g, cost).evaluate(layouts, "t")
    (step,) = plan.reallocations
    assert (step.model, step.before_call, step.every_iteration) == ("ref", "ref2", False)
    assert _entries(plan, "ref->ref2", 0) == [(3.5, 4.5)]
    assert _entries(plan, "ref->ref2", 1) == []
    assert _entries(plan, "train", 1) == [(12.5, 15.5)]
    assert plan.iteration_time_s == pytest.approx(7.0)


def test_memory_counts_replicas_and_the_largest_transient():
    """Device 0: actor replica max(10, 40) + transient max(25-10, 45-40) = 55.
    Device 1: ref 10 + critic max(10, 30) + transient max(2, 1, 5) = 45."""
    g = fan_graph()
    times = {"gen": 1.0, "ref_inf": 1.0, "values": 1.0, "actor_train": 1.0, "critic_train": 1.0}
    resident = {"gen": 10, "actor_train": 40, "ref_inf": 10, "values": 10, "critic_train": 30}
    peak = {"gen": 25, "actor_train": 45, "ref_inf": 12, "values": 11, "critic_train": 35}
    layouts = {"gen": on(0, 1), "actor_train": on(0, 1), "ref_inf": on(1, 1), "values": on(1, 1),
               "critic_train": on(1, 1)}
    cost = FixedCost(Cluster(num_nodes=1, devices_per_node=2), times=times, resident=resident,
                     peak=peak, device_memory_bytes=100.0)
    plan = PlanContext(g, cost).evaluate(layouts, "t")
    assert plan.device_peak_bytes == (55.0, 45.0)
    assert plan.feasible
    tight = FixedCost(Cluster(num_nodes=1, devices_per_node=2), times=times, resident=resident,
                      peak=peak, device_memory_bytes=50.0)
    bad = PlanContext(g, tight).evaluate(layouts, "t")
    assert not bad.feasible
    assert "device 0" in bad.reasons[0] and "actor_train" in bad.reasons[0]


def test_rule_reward_holds_no_replica():
    g = rule_graph()
    cost = FixedCost(Cluster(num_nodes=1, devices_per_node=2), times={"gen": 2, "rew": 1, "train": 3},
                     resident={"rew": 50.0}, peak={"rew": 7.0})
    plan = PlanContext(g, cost).evaluate({"gen": on(0, 2), "rew": on(1, 1), "train": on(0, 2)}, "t")
    assert plan.reallocations == ()
    assert plan.device_peak_bytes == (0.0, 7.0)
    # gen 0-2, score moves 2-2.5 ... seq needs none; rew [1] waits for the seq transfer
    assert plan.iteration_time_s == pytest.approx(2 + 0.5 + 1 + 0.5 + 3)


def test_blocking_tasks_never_overlap_on_a_device():
    """Random plans of the PPO graph: calls and reallocations on one device are disjoint."""
    g = ppo_graph(batch_size=32)
    cost = SyntheticCost(Cluster(num_nodes=1, devices_per_node=4))
    ctx = PlanContext(g, cost)
    rng = random.Random(3)
    sim = Simulator(g, cost)
    for _ in range(20):
        cands = [rng.choice(ctx.spaces[c.name].candidates) for c in g.calls]
        res = sim.simulate(cands, detail=True)
        by_device: dict[int, list[tuple[float, float]]] = {}
        for e in res.timeline:
            if e.what != "transfer":
                by_device.setdefault(e.device, []).append((e.start, e.end))
        for spans in by_device.values():
            spans.sort()
            for (_, end), (start, _) in itertools.pairwise(spans):
                assert start >= end - 1e-9
        assert res.iteration_time_s > 0
        assert res.iteration_time_s >= max(c.estimate.time_s for c in cands) - 1e-9


def test_needs_three_iterations():
    with pytest.raises(ValueError, match="num_iterations"):
        Simulator(gen_train_graph(), FixedCost(Cluster(num_nodes=1, devices_per_node=1), times={}),
                  num_iterations=2)


def test_move_prices_are_shared_across_node_shifts_and_match_the_cost_model():
    """Moves that differ only in which nodes they use are priced once; each price equals the
    analytic cost model's own estimate of the original (unshifted) move."""
    from cost_model.estimator import AnalyticCostModel
    from cost_model.profile import load_hardware
    from planner.space import make_candidate

    g = fan_graph()
    cluster = Cluster(num_nodes=4, devices_per_node=2)
    cost = AnalyticCostModel(load_hardware("h100-80g"), cluster)
    sim = Simulator(g, cost)
    actor = g.models["actor"]
    gen, train = g.call("gen"), g.call("actor_train")
    rng = random.Random(3)
    meshes = [(0, 2), (2, 2), (4, 2), (6, 2), (0, 4), (2, 4), (4, 4), (0, 8), (1, 1), (5, 1)]
    for _ in range(30):
        (s0, sn), (d0, dn) = rng.choice(meshes), rng.choice(meshes)
        src = on(s0, sn, tp=rng.choice([t for t in (1, 2) if sn % t == 0]))
        dst = on(d0, dn, tp=rng.choice([t for t in (1, 2) if dn % t == 0]))
        a = make_candidate(src, cost.call_estimate(train, actor, src))
        b = make_candidate(dst, cost.call_estimate(gen, actor, dst))
        direct = cost.realloc_estimate(actor, src, dst)
        assert sim._realloc("actor", a, b) == pytest.approx((direct.time_s, direct.bytes_total))
        moved = cost.data_estimate(gen, train, "seq", dst, src)
        assert sim._data(0, 3, "seq", b, a) == pytest.approx((moved.time_s, moved.bytes_total))
    # [0-1] -> [2-3] and [4-5] -> [6-7] are one move (nodes 0->1 and 2->3), priced once
    units = sim.work_units
    one = make_candidate(on(0, 2), cost.call_estimate(train, actor, on(0, 2)))
    two = make_candidate(on(2, 2), cost.call_estimate(gen, actor, on(2, 2)))
    three = make_candidate(on(4, 2), cost.call_estimate(train, actor, on(4, 2)))
    four = make_candidate(on(6, 2), cost.call_estimate(gen, actor, on(6, 2)))
    first = sim._realloc("actor", one, two)
    spent = sim.work_units
    assert sim._realloc("actor", three, four) == first
    assert sim.work_units == spent >= units


# ---------------------------------------------------------------------- devices sharing host cores
import dataclasses  # noqa: E402


@dataclasses.dataclass
class _SharedCoresCost(FixedCost):
    host_cores: float = 1.0


def _fan_cost(cls=FixedCost, **extra):
    return cls(Cluster(num_nodes=1, devices_per_node=2),
               times={"gen": 2.0, "ref_inf": 1.0, "values": 1.5, "actor_train": 3.0, "critic_train": 2.0},
               **extra)


FAN_LAYOUTS = {"gen": on(0, 1), "actor_train": on(0, 1), "ref_inf": on(1, 1), "values": on(1, 1),
               "critic_train": on(1, 1)}


def test_overlapping_calls_share_one_core():
    """The fan graph of `test_disjoint_meshes_overlap_and_transfers_delay_consumers` with both
    devices on ONE core: identical until 5.5, when actor_train [0] starts while critic_train [1]
    (from 5.0, 1.5 s of work left) runs: both at half speed, critic ends at 5.5 + 2 x 1.5 = 8.5,
    actor_train has 1.5 s left and runs alone to 10.0. Next gen waits for actor_train: period 10.
    """
    plan = PlanContext(fan_graph(), _fan_cost(_SharedCoresCost, host_cores=1.0)).evaluate(FAN_LAYOUTS, "t")
    assert _entries(plan, "values", 0) == [(3.5, 5.0)]
    assert _entries(plan, "critic_train", 0) == [(5.0, 8.5)]
    assert _entries(plan, "actor_train", 0) == [(5.5, 10.0)]
    assert _entries(plan, "gen", 1) == [(10.0, 12.0)]
    assert plan.iteration_time_s == pytest.approx(10.0)
    # with a core per device nothing changes: the 8.5 s of the unshared schedule
    enough = PlanContext(fan_graph(), _fan_cost(_SharedCoresCost, host_cores=2.0)).evaluate(FAN_LAYOUTS, "t")
    assert enough.iteration_time_s == pytest.approx(8.5)


def test_shared_schedule_without_shortage_equals_the_plain_one():
    """Processor sharing at full speed is the list schedule: the same start and end per task."""
    g = fan_graph()
    ctx = PlanContext(g, _fan_cost())
    for layouts in (FAN_LAYOUTS, {**FAN_LAYOUTS, "gen": on(0, 2, tp=2)}, {k: on(0, 2) for k in FAN_LAYOUTS}):
        cands = ctx.candidates_of(layouts)
        sim = Simulator(g, _fan_cost())
        tasks = sim._tasks(cands, sim.primaries(cands))
        plain_ends, plain_events = sim._schedule(tasks, True)
        sim.host_cores = 1e9
        shared_ends, shared_events = sim._schedule_shared(tasks, True)
        assert shared_ends == pytest.approx(plain_ends)

        def spans(events):
            return sorted((it, task.label, start, end) for task, start, end, it in events)

        assert [s[:2] for s in spans(shared_events)] == [s[:2] for s in spans(plain_events)]
        assert [t for s in spans(shared_events) for t in s[2:]] == pytest.approx(
            [t for s in spans(plain_events) for t in s[2:]])


@dataclasses.dataclass
class _BarrierCost(FixedCost):
    iteration_barrier: bool = True


def test_iteration_barrier_stops_iterations_overlapping():
    """Fan graph with a 5 s critic_train on [1]: iteration 0 ends at 10 (critic_train 5-10) while
    actor_train [0] ends at 8.5. Overlapping, gen(1) starts at 8.5 and the steady period is 8.5
    (critic_train 13.5-18.5, then 22-27); with the barrier gen(1) waits for 10 and every
    iteration takes its 10 s makespan. The processor-sharing schedule agrees."""
    times = {"gen": 2.0, "ref_inf": 1.0, "values": 1.5, "actor_train": 3.0, "critic_train": 5.0}
    cluster = Cluster(num_nodes=1, devices_per_node=2)
    free = PlanContext(fan_graph(), FixedCost(cluster, times=times)).evaluate(FAN_LAYOUTS, "t")
    assert _entries(free, "gen", 1) == [(8.5, 10.5)]
    assert _entries(free, "critic_train", 2) == [(22.0, 27.0)]
    assert free.iteration_time_s == pytest.approx(8.5)
    cost = _BarrierCost(cluster, times=times)
    held = PlanContext(fan_graph(), cost).evaluate(FAN_LAYOUTS, "t")
    assert _entries(held, "gen", 1) == [(10.0, 12.0)]
    assert held.iteration_time_s == pytest.approx(10.0)
    sim = Simulator(fan_graph(), cost)
    cands = PlanContext(fan_graph(), cost).candidates_of(FAN_LAYOUTS)
    tasks = sim._tasks(cands, sim.primaries(cands))
    sim.host_cores = 1e9
    ends, _ = sim._schedule_shared(tasks, False)
    assert ends == pytest.approx([10.0, 20.0, 30.0, 40.0])


@dataclasses.dataclass
class _BlockingCost(FixedCost):
    blocking_receives: bool = True


def test_blocking_receives_hold_the_receiver_in_its_step_order():
    """FAN_LAYOUTS when every receive blocks its rank and sends do not (transfers 0.5 s, each
    in its receiver's step order): gen [0] 0-2; seq->ref_inf holds [1] 2-2.5; ref_inf 2.5-3.5;
    seq->values 3.5-4; values 4-5.5; on [0] ref_logp->actor_train 3.5-4 (its sender, rank 1, is
    not held), val->actor_train 5.5-6, actor_train 6-9; on [1] seq->critic_train comes after
    values: 5.5-6, critic_train 6-8. (Sends blocking both ranks put critic_train at 10-12 behind
    actor_train's receives; fully asynchronous transfers at 5-7.)"""
    plan = PlanContext(fan_graph(), _fan_cost(_BlockingCost)).evaluate(FAN_LAYOUTS, "t")
    assert _entries(plan, "values", 0) == [(4.0, 5.5)]
    assert _entries(plan, "ref_logp:ref_inf->actor_train", 0) == [(3.5, 4.0)]
    assert _entries(plan, "actor_train", 0) == [(6.0, 9.0)]
    assert _entries(plan, "seq:gen->critic_train", 0) == [(5.5, 6.0)]
    assert _entries(plan, "critic_train", 0) == [(6.0, 8.0)]


def test_one_step_off_policy_overlaps_generation_with_training():
    """gen on [0], train on [1]; gen 2 s, train 3 s, realloc 1 s, transfer 0.5 s.

    On-policy: realloc + gen + transfer + train = 6.5 s. One step off-policy, iteration i:
    seq of batch i moves at the end of gen(i-1); the realloc waits for train(i-1) and holds
    [0, 1]; then gen(i+1) on [0] and train(i) on [1] run side by side: 1 + max(2, 3) = 4 s.
    Iteration 1: transfer 3-3.5, realloc 4-5, gen 5-7, train 5-8; iteration 2: realloc 8-9.
    """
    g = gen_train_graph()
    cost = FixedCost(Cluster(num_nodes=1, devices_per_node=2), times={"gen": 2.0, "train": 3.0})
    layouts = {"gen": on(0, 1), "train": on(1, 1)}
    assert PlanContext(g, cost).evaluate(layouts, "t").iteration_time_s == pytest.approx(6.5)
    plan = PlanContext(g, cost, off_policy_steps=1).evaluate(layouts, "t")
    assert plan.iteration_time_s == pytest.approx(4.0)
    assert _entries(plan, "seq:gen->train", 1) == [(3.0, 3.5)]
    assert _entries(plan, "actor->gen", 1) == [(4.0, 5.0)]
    assert _entries(plan, "gen", 1) == [(5.0, 7.0)]
    assert _entries(plan, "train", 1) == [(5.0, 8.0)]
    assert _entries(plan, "actor->gen", 2) == [(8.0, 9.0)]
    # on one shared device nothing overlaps: off-policy only reorders (1 device: no realloc)
    same = {"gen": on(0, 1), "train": on(0, 1)}
    assert PlanContext(g, cost, off_policy_steps=1).evaluate(same, "t").iteration_time_s == pytest.approx(5.0)


def _stream_graph(dist):
    from graph.lengths import LengthDist  # noqa: F401 -- the type of `dist`
    from graph.spec import Call, CallKind, ModelSpec
    from realloc.bench.synthetic import arch, fitted_graph

    lens = {"batch_size": 8, "prompt_len": 16, "response_len": 16}
    return fitted_graph(
        models=[ModelSpec(role="actor", arch=arch(), trainable=True), ModelSpec(role="ref", arch=arch())],
        calls=[Call(name="gen", model="actor", kind=CallKind.GENERATE, interface="generate", inputs=("prompts",),
                    outputs=("seq",), max_new_tokens=16, response_lengths=dist, **lens),
               Call(name="ref1", model="ref", kind=CallKind.INFERENCE, interface="logprobs", inputs=("seq",),
                    outputs=("a",), **lens),
               Call(name="train", model="actor", kind=CallKind.TRAIN, interface="ppo_actor",
                    inputs=("seq", "a"), outputs=(), **lens)],
        dataset_keys=("prompts",))


def test_streaming_overlaps_scoring_with_the_long_tail():
    """gen 4 s on [0] (its train's placement: no realloc), ref1 2 s on [1], train 3 s on [0];
    transfers 0.5 s.

    Unfused: gen 0-4, seq 4-4.5, ref1 4.5-6.5, a 6.5-7, train 7-10: 10 s per iteration.
    Streamed, 3/4 of responses are 1 token and 1/4 are 16 (batch 8): the expected longest is
    1 + 15 (1 - 0.75^8) = 14.50 steps, so by the end of gen's first quarter (3.62 steps) 3/4 of
    the samples are done, and the rest at the end. ref1 scores 0.75 x (2 + 0.5) = 1.875 s after
    gen's first piece (1-2.875) and the last 0.625 s after gen ends (4-4.625); a 4.625-5.125,
    train 5.125-8.125: 8.125 s. Without a length distribution streaming gains nothing (10 s).
    """
    from graph.lengths import LengthDist

    dist = LengthDist(probs=(0.75,) + (0.0,) * 14 + (0.25,))
    g = _stream_graph(dist)
    cost = FixedCost(Cluster(num_nodes=1, devices_per_node=2), times={"gen": 4.0, "ref1": 2.0, "train": 3.0})
    layouts = {"gen": on(0, 1), "ref1": on(1, 1), "train": on(0, 1)}
    off = PlanContext(g, cost).evaluate(layouts, "t")
    assert off.iteration_time_s == pytest.approx(10.0) and off.streamed == ()
    fused = PlanContext(g, cost, fusion="inter").evaluate(layouts, "t")
    assert fused.streamed == (("gen", "ref1"),)
    assert fused.iteration_time_s == pytest.approx(8.125)
    it = [e for e in fused.timeline if e.iteration == 0 and e.label == "ref1"]
    assert sorted((round(e.start, 3), round(e.end, 3)) for e in it) == [(1.0, 2.875), (4.0, 4.625)]
    fixed = _stream_graph(None)
    assert PlanContext(fixed, cost, fusion="inter").evaluate(layouts, "t").iteration_time_s == pytest.approx(10.0)
    # auto keeps the edge because it helps; on a shared device nothing can stream
    ctx = PlanContext(g, cost, fusion="auto")
    assert ctx.choose_streaming(ctx.candidates_of(layouts)) == (("gen", "ref1"),)
    shared = {**layouts, "ref1": on(0, 1)}
    assert PlanContext(g, cost, fusion="inter").evaluate(shared, "t").streamed == ()


def test_intra_fusion_saves_one_pipeline_fill_per_train_pair():
    """Everything on the same 4 devices (dp=2, pp=2; generation dp=4), so every call is on the critical path:
    fusing actor_train and critic_train lowers the iteration by exactly the priced saving,
    (pp - 1) x the smaller per-step bubble of the two calls (cost_model.pipeline_fusion), which
    is checked here from the two calls' own estimates."""
    from cost_model.estimator import AnalyticCostModel
    from cost_model.profile import load_hardware
    from realloc.bench.synthetic import arch

    g = ppo_graph(actor=arch(), critic=arch(), batch_size=64)
    cost = AnalyticCostModel(load_hardware("h100-80g"), Cluster(num_nodes=1, devices_per_node=4))
    layouts = {c.name: on(0, 4, pp=1 if c.name == "gen" else 2, mb=4) for c in g.calls}
    off = PlanContext(g, cost).evaluate(layouts, "t")
    ctx = PlanContext(g, cost, fusion="intra")
    fused = ctx.evaluate(layouts, "t")
    assert off.fused == () and fused.fused == (("actor_train", "critic_train"),)
    a, c = (ctx.candidate(g.call(n), layouts[n]).estimate for n in ("actor_train", "critic_train"))
    bubble_a, bubble_c = a.breakdown["pipeline_bubble_s"], c.breakdown["pipeline_bubble_s"]
    assert bubble_a > 0 and bubble_c > 0
    steps = 1  # ppo_graph's train calls take one optimizer step (1 epoch, 1 mini-batch)
    assert off.iteration_time_s - fused.iteration_time_s == pytest.approx(min(bubble_a, bubble_c) / steps, rel=1e-6)
    # auto keeps the pair (it helps); at pp=1 there is nothing to fuse
    auto = PlanContext(g, cost, fusion="auto")
    assert auto.choose_fused(auto.candidates_of(layouts)) == (("actor_train", "critic_train"),)
    flat = {n: on(0, 4, mb=4) for n in layouts}
    assert auto.choose_fused(auto.candidates_of(flat)) == ()
    assert PlanContext(g, cost, fusion="intra").evaluate(flat, "t").fused == ()
