"""Heuristic baselines checked against their definitions and brute force."""

from __future__ import annotations

import dataclasses
import itertools

import pytest

from cost_model.estimator import AnalyticCostModel
from cost_model.profile import load_hardware
from graph.catalog import PPOActorArgs, PPOCriticArgs
from graph.dataflow import DataflowGraph
from graph.placement.layout import Cluster, DeviceMesh, Layout
from graph.spec import ModelArch
from planner.context import PlanContext
from planner.heuristics import (
    get_heuristic,
    known_heuristics,
    register_heuristic,
    run_heuristic,
    split_devices,
)
from tests.planner.synthetic import GIB, SyntheticCost, arch, ppo_graph


def _ctx(nodes: int = 1, dpn: int = 8, memory_gib: float = 80, rule: bool = False) -> PlanContext:
    g = ppo_graph(actor=arch(16, 2048, 16, 4), critic=arch(8, 1024, 8, 8), batch_size=64,
                  rule_reward=rule)
    return PlanContext(g, SyntheticCost(Cluster(num_nodes=nodes, devices_per_node=dpn),
                                        device_memory_bytes=memory_gib * GIB))


def test_registry_lists_the_three_baselines_and_explains_a_miss():
    assert known_heuristics()[:3] == ("symmetric", "colocated-dp", "disaggregated")
    with pytest.raises(ValueError, match=r"unknown heuristic 'symetric' \(did you mean 'symmetric'\?\); known: colocated-dp, disaggregated, symmetric"):
        get_heuristic("symetric")
    with pytest.raises(ValueError, match="registered twice"):
        register_heuristic("symmetric")(lambda ctx: None)


def test_symmetric_is_the_best_shared_layout_by_brute_force():
    ctx = _ctx()
    plan = run_heuristic("symmetric", ctx)
    assert plan.source == "heuristic:symmetric"
    strategies = {c.layout.strategy for c in plan.calls}
    assert len(strategies) == 1 and all(c.layout.mesh.size == 8 for c in plan.calls)
    best = float("inf")
    mesh = DeviceMesh.span(0, 8)
    for dp, tp, pp in itertools.product([1, 2, 4, 8], repeat=3):
        if dp * tp * pp != 8:
            continue
        per_call = []
        for call in ctx.graph.calls:
            # generation may not pipeline: its share of a pp > 1 layout folds pp into dp
            s = (dp * pp, tp, 1) if call.name == "gen" else (dp, tp, pp)
            opts = [ctx.try_candidate(call, Layout(mesh=mesh, dp=s[0], tp=s[1], pp=s[2],
                                                   micro_batches=m)) for m in (1, 2, 4)]
            per_call.append([o for o in opts if o is not None])
        for combo in itertools.product(*per_call):
            best = min(best, ctx.time_of(list(combo)))
    assert plan.iteration_time_s == pytest.approx(best, rel=1e-12)


def test_colocated_dp_is_data_parallel_with_generation_tp():
    ctx = _ctx()
    plan = run_heuristic("colocated-dp", ctx)
    for c in plan.calls:
        assert c.layout.mesh.size == 8 and c.layout.pp == 1
        if c.name != "gen":
            assert c.layout.strategy == (8, 1, 1)
    gen_tp = plan.layout("gen").tp
    for tp in (1, 2, 4, 8):  # the chosen generation tp is the fastest one
        layouts = dict(plan.layouts)
        layouts["gen"] = Layout(mesh=DeviceMesh.span(0, 8), dp=8 // tp, tp=tp, pp=1)
        other = ctx.evaluate(layouts, "t")
        assert plan.iteration_time_s <= other.iteration_time_s + 1e-12 or tp == gen_tp


def test_colocated_dp_raises_tp_when_pure_dp_does_not_fit():
    ctx = _ctx(memory_gib=6)
    plan = run_heuristic("colocated-dp", ctx)
    assert plan.feasible
    assert plan.layout("actor_train").tp > 1


def test_disaggregated_gives_each_model_group_its_own_devices():
    ctx = _ctx(nodes=2, dpn=8)
    plan = run_heuristic("disaggregated", ctx)
    mesh_of = {}
    for c in plan.calls:
        mesh_of.setdefault(c.model, set()).add(c.layout.mesh.devices)
    assert all(len(m) == 1 for m in mesh_of.values())  # a model's calls share its group
    models = ctx.graph.models
    for a, b in itertools.combinations(mesh_of, 2):
        ma, mb = next(iter(mesh_of[a])), next(iter(mesh_of[b]))
        if ma == mb:  # only a frozen model next to its trained twin
            frozen, trained = sorted((a, b), key=lambda r: ctx.graph.train_call(r) is not None)
            assert ctx.graph.train_call(frozen) is None and ctx.graph.train_call(trained) is not None
            assert models[frozen].arch == models[trained].arch
        else:
            assert set(ma).isdisjoint(mb)
    # the trained 16-layer actor gets the largest group
    assert len(next(iter(mesh_of["actor"]))) == max(len(next(iter(m))) for m in mesh_of.values())


def test_disaggregated_one_group_per_model_when_it_is_faster():
    ctx = _ctx(nodes=2, dpn=8)
    from planner.heuristics import _disaggregated_plan

    alone = _disaggregated_plan(ctx, [["actor"], ["critic"], ["ref"], ["reward"]])
    groups = [c.layout.mesh.devices for c in alone.calls if c.name in ("gen", "values", "ref_inf", "rew")]
    for a, b in itertools.combinations(groups, 2):
        assert set(a).isdisjoint(b)
    assert run_heuristic("disaggregated", ctx).iteration_time_s <= alone.iteration_time_s


def test_split_devices_by_hand():
    sizes = split_devices(8, 8, [8.0, 1.0, 1.0, 1.0])
    assert [m.devices for m in sizes] == [(0, 1, 2, 3), (4, 5), (6,), (7,)]
    halves = split_devices(32, 8, [1.0, 1.0])
    assert [m.devices for m in halves] == [tuple(range(16)), tuple(range(16, 32))]
    assert split_devices(2, 2, [1.0, 1.0, 1.0]) is None


def test_heuristic_without_a_plan_says_why():
    ctx = _ctx(nodes=1, dpn=2, memory_gib=3)
    with pytest.raises(ValueError, match="heuristic 'disaggregated'") as err:
        run_heuristic("disaggregated", ctx)
    assert str(err.value).count("has no feasible plan") == 1  # said once, not once per layer


LLAMA_7B = ModelArch(family="llama", num_layers=32, hidden_size=4096, ffn_hidden_size=11008,
                     num_heads=32, num_kv_heads=32, vocab_size=32000, max_position_embeddings=4096)


def _paper_7b_ctx() -> PlanContext:
    """7B actor / critic / ref / reward PPO on one node of 8 H100s with the analytic cost
    model, shaped like experiments/paper/ppo-7b-7b-8gpu (512 prompts, up to 512 new tokens,
    4 mini-batches)."""
    g = ppo_graph(actor=LLAMA_7B, critic=LLAMA_7B, batch_size=512, prompt_len=128, response_len=256)
    args = {"actor_train": PPOActorArgs(mini_batches=4), "critic_train": PPOCriticArgs(mini_batches=4)}
    calls = [dataclasses.replace(c, args=args[c.name]) if c.name in args
             else dataclasses.replace(c, max_new_tokens=512) if c.name == "gen" else c for c in g.calls]
    g = DataflowGraph(models=list(g.models.values()), calls=calls, dataset_keys=g.dataset_keys)
    return PlanContext(g, AnalyticCostModel(load_hardware("h100-80g"), Cluster(num_nodes=1, devices_per_node=8)))


def test_disaggregated_pairs_frozen_models_with_their_trained_twin():
    ctx = _paper_7b_ctx()  # all four models share one architecture: heads decide
    from planner.heuristics import _groupings

    alone, paired = _groupings(ctx, ["actor", "critic", "ref", "reward"])
    assert alone == [["actor"], ["critic"], ["ref"], ["reward"]]
    assert sorted(map(sorted, paired)) == [["actor", "ref"], ["critic", "reward"]]


def test_disaggregated_walks_out_of_an_overflowing_start():
    """With the analytic cost model the fastest layout of each call on its group overflows
    memory (actor_gen next to actor_train); the heuristic still finds a plan that fits, and
    no other single-call change of its layouts makes it faster."""
    ctx = _paper_7b_ctx()
    from planner.heuristics import _disaggregated_plan

    plan = run_heuristic("disaggregated", ctx)
    assert plan.feasible and max(plan.device_peak_bytes) <= ctx.cost.device_memory_bytes
    groups = [["actor"], ["ref"], ["critic"], ["reward"]]
    alone = _disaggregated_plan(ctx, groups)
    meshes = {c.model: c.layout.mesh for c in alone.calls}
    fastest = []
    for call in ctx.graph.calls:  # every call at its fastest layout on its group
        mesh = meshes[call.model]
        opts = [ctx.try_candidate(call, Layout(mesh=mesh, dp=mesh.size // (tp * pp), tp=tp, pp=pp,
                                               micro_batches=m))
                for tp in (1, 2, 4, 8) for pp in (1, 2, 4, 8) for m in (1, 2, 4)
                if mesh.size % (tp * pp) == 0 and (pp == 1 or call.name != "gen")]
        fastest.append(min((o for o in opts if o is not None), key=lambda o: o.estimate.time_s))
    assert not ctx.sim.simulate(fastest).feasible  # the start the old descent stuck in
    assert alone.feasible
