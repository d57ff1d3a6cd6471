"""The annealing search against the exact optimum, determinism and feasibility."""

from __future__ import annotations

import dataclasses
import math

import pytest

from graph.placement.layout import Cluster
from planner.context import PlanContext
from planner.search import SearchOptions, accept_probability, anneal_search, exact_search
from realloc.bench.synthetic import random_instance
from tests.planner.synthetic import GIB, SyntheticCost, arch, ppo_graph

NUM_SEEDS = 30


def _matches(polish_share: float) -> int:
    hits = 0
    for seed in range(NUM_SEEDS):
        ctx, exact = random_instance(seed)
        opts = SearchOptions(time_budget_s=0.05, seed=seed, polish_share=polish_share)
        found = anneal_search(ctx.sim, ctx.spaces, options=opts)
        assert found.sim.feasible
        # never better than the optimum: the exact search really is exhaustive
        assert found.sim.iteration_time_s >= exact.sim.iteration_time_s * (1 - 1e-9)
        hits += found.sim.iteration_time_s <= exact.sim.iteration_time_s * (1 + 1e-9)
    return hits


def test_annealing_alone_finds_the_exact_optimum_in_95_percent_of_seeds():
    assert _matches(polish_share=0.0) >= math.ceil(0.95 * NUM_SEEDS)


def test_search_with_polish_finds_the_exact_optimum_in_95_percent_of_seeds():
    assert _matches(polish_share=0.1) >= math.ceil(0.95 * NUM_SEEDS)


def test_exact_search_matches_brute_force_on_a_tiny_instance():
    import itertools

    ctx, exact = random_instance(1)
    cand_lists = [ctx.spaces[c.name].candidates for c in ctx.graph.calls]
    best = min(
        (r.iteration_time_s for combo in itertools.product(*cand_lists)
         if (r := ctx.sim.simulate(list(combo))).feasible),
    )
    assert exact.sim.iteration_time_s == pytest.approx(best, rel=1e-12)


def test_acceptance_is_relative_and_cools():
    assert accept_probability(9.0, 10.0, 0.05) == 1.0
    assert accept_probability(10.5, 10.0, 0.05) == pytest.approx(math.exp(-1.0))
    assert accept_probability(1050.0, 1000.0, 0.05) == pytest.approx(math.exp(-1.0))
    # a 1% worsening is (almost) never accepted once cold: ReaLHF's search always took it
    assert accept_probability(10.1, 10.0, 1e-4) < 1e-40
    assert accept_probability(math.inf, 10.0, 1.0) == 0.0
    assert accept_probability(1.0, 0.0, 1.0) == 0.0


def _ppo_ctx(devices_per_node: int = 8, memory_gib: float = 80) -> PlanContext:
    g = ppo_graph(actor=arch(32, 4096, 32, 8), critic=arch(24, 2048, 16, 16), batch_size=256)
    return PlanContext(g, SyntheticCost(Cluster(num_nodes=1, devices_per_node=devices_per_node),
                                        device_memory_bytes=memory_gib * GIB))


def test_same_seed_and_budget_give_the_same_plan():
    ctx = _ppo_ctx()
    opts = SearchOptions(time_budget_s=0.3, seed=7)
    a = anneal_search(ctx.sim, ctx.spaces, options=opts)
    b = anneal_search(PlanContext(ctx.graph, ctx.cost).sim, _ppo_ctx().spaces, options=opts)
    assert not a.stats.wall_clock_stop and not b.stats.wall_clock_stop
    assert a.choice == b.choice
    assert a.stats.num_steps == b.stats.num_steps
    assert [c.layout for c in a.candidates] == [c.layout for c in b.candidates]


def test_infeasible_plans_are_never_returned():
    """Tight memory: the fastest layout per call overflows when colocated; the result fits."""
    ctx = _ppo_ctx(memory_gib=40)
    fastest = [ctx.spaces[c.name].candidates[0] for c in ctx.graph.calls]
    assert not ctx.sim.simulate(fastest).feasible
    for seed in range(3):
        found = anneal_search(ctx.sim, ctx.spaces, options=SearchOptions(time_budget_s=0.1, seed=seed))
        assert found.sim.feasible and found.sim.reasons == ()
        assert max(found.sim.device_peak_bytes) <= ctx.cost.device_memory_bytes
        for c in found.candidates:
            assert c.estimate.feasible and c.estimate.peak_bytes <= ctx.cost.device_memory_bytes


def test_search_is_no_worse_than_its_start():
    ctx = _ppo_ctx()
    start = [ctx.spaces[c.name].candidates[-1] for c in ctx.graph.calls]  # slowest layouts
    start_time = ctx.time_of(start)
    found = anneal_search(ctx.sim, ctx.spaces, [start], SearchOptions(time_budget_s=0.1))
    assert found.sim.iteration_time_s <= start_time
    assert [t[2] for t in found.stats.trace] == sorted((t[2] for t in found.stats.trace), reverse=True)


def test_exact_search_refuses_large_spaces():
    ctx = _ppo_ctx()
    with pytest.raises(ValueError, match="max_plans"):
        exact_search(ctx.sim, ctx.spaces, max_plans=1000)


def test_search_options_are_checked():
    with pytest.raises(ValueError, match="time_budget_s"):
        SearchOptions(time_budget_s=0)
    with pytest.raises(ValueError, match="t_end"):
        SearchOptions(t_start=0.01, t_end=0.1)


def _problem():
    from planner.search import Problem

    ctx = _ppo_ctx(devices_per_node=4)
    return ctx, Problem(ctx.sim, ctx.spaces)


def _mesh(problem, state, i):
    return problem.cands[i][state[i]].key[0]


def test_structured_moves_do_what_they_say():
    import random

    ctx, problem = _problem()
    rng = random.Random(0)
    n = len(problem.cands)
    for _ in range(300):
        state = tuple(rng.randrange(len(c)) for c in problem.cands)
        i, k = rng.sample(range(n), 2)
        new = problem.change_strategy(rng, state, i)
        if new is not None:
            assert [a != b for a, b in zip(state, new)].count(True) == 1
            assert _mesh(problem, new, i) == _mesh(problem, state, i)
        new = problem.change_mesh(rng, state, i)
        if new is not None:
            assert all(a == b for j, (a, b) in enumerate(zip(state, new)) if j != i)
        new = problem.move_model(rng, state, i)
        if new is not None:  # the model's calls move together; the others stay
            same = [j for j in range(n) if ctx.graph.calls[j].model == ctx.graph.calls[i].model]
            assert len({_mesh(problem, new, j) for j in same}) == 1
            assert all(new[j] == state[j] for j in range(n) if j not in same)
        new = problem.colocate(rng, state, i, k)
        if new is not None:
            assert _mesh(problem, new, k) == _mesh(problem, state, i)
            ci, ck = problem.cands[i][state[i]], problem.cands[k][new[k]]
            if ci.key in problem.by_key[k]:
                assert ck.key == ci.key  # same placement: no reallocation between them
        new = problem.separate(rng, state, i, k)
        if new is not None:
            assert set(_mesh(problem, new, k)).isdisjoint(_mesh(problem, state, i))
        new = problem.split(rng, state, i, k)
        if new is not None:  # the two halves of i's old mesh
            mi, mk = _mesh(problem, new, i), _mesh(problem, new, k)
            assert set(mi).isdisjoint(mk) and len(mi) == len(mk)
            assert tuple(sorted(mi + mk)) == _mesh(problem, state, i)
        new = problem.swap(rng, state, i, k)
        if new is not None:
            assert _mesh(problem, new, i) == _mesh(problem, state, k)
            assert _mesh(problem, new, k) == _mesh(problem, state, i)
        for new in (problem.propose(rng, state) for _ in range(5)):
            if new is not None:
                assert new != state and all(0 <= j < len(c) for j, c in zip(new, problem.cands))


def test_no_feasible_plan_is_an_error_not_a_plan():
    from planner.space import build_space
    from tests.planner.graphs import frozen_replica_graph
    from tests.planner.synthetic import FixedCost

    g = frozen_replica_graph()
    cost = FixedCost(Cluster(num_nodes=1, devices_per_node=1),
                     times={"gen": 1, "ref1": 1, "ref2": 1, "train": 1},
                     resident={"gen": 60, "train": 60, "ref1": 60, "ref2": 60},
                     peak={"gen": 60, "train": 60, "ref1": 60, "ref2": 60})
    ctx = PlanContext(g, cost)
    spaces = build_space(g, cost)  # every call fits alone
    with pytest.raises(ValueError, match=r"no feasible plan found: device 0 needs"):
        anneal_search(ctx.sim, spaces, options=SearchOptions(time_budget_s=0.01))
    with pytest.raises(ValueError, match="no feasible plan exists"):
        exact_search(ctx.sim, spaces)


def _analytic_ppo_ctx(memory_gib: float) -> PlanContext:
    """A ~1B-parameter PPO on one node of 8 H100s (memory cut to `memory_gib`), analytic costs."""
    import dataclasses

    from cost_model.estimator import AnalyticCostModel
    from cost_model.profile import load_hardware

    hw = load_hardware("h100-80g")
    hw = dataclasses.replace(hw, memory_bytes=memory_gib * GIB + hw.reserved_bytes)
    g = ppo_graph(actor=arch(16, 2048, 16, 16), critic=arch(8, 1024, 8, 8), batch_size=64,
                  prompt_len=128, response_len=128)
    return PlanContext(g, AnalyticCostModel(hw, Cluster(num_nodes=1, devices_per_node=8)))


def _visited(monkeypatch, ctx: PlanContext, options: SearchOptions, starts=()) -> tuple[set, float]:
    """The states a search simulates, and its plan's iteration time."""
    from planner.search import Problem

    seen: set = set()
    energy = Problem.energy

    def recording(self, state):
        seen.add(state)
        return energy(self, state)

    monkeypatch.setattr(Problem, "energy", recording)
    found = anneal_search(ctx.sim, ctx.spaces, starts, options)
    monkeypatch.setattr(Problem, "energy", energy)
    return seen, found.sim.iteration_time_s


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_ten_times_larger_budget_simulates_a_superset_and_is_never_worse(monkeypatch, seed):
    """The rounds do not depend on the total budget: 10x the budget runs more of the same
    sequence (and the caches it fills are the same), so it simulates every state the smaller
    budget did and returns a plan at least as fast."""
    for memory_gib in (6.0, 10.0):
        small_ctx, big_ctx = _analytic_ppo_ctx(memory_gib), _analytic_ppo_ctx(memory_gib)
        guard = dict(wall_clock_factor=1e6, wall_clock_slack_s=1e9)
        small, t_small = _visited(monkeypatch, small_ctx, SearchOptions(time_budget_s=0.03, seed=seed, **guard))
        big, t_big = _visited(monkeypatch, big_ctx, SearchOptions(time_budget_s=0.3, seed=seed, **guard))
        assert small <= big and len(big) > len(small)
        assert t_big <= t_small


def _fastest_per_mesh(space, k: int):
    """The fastest candidate on each of the k meshes whose best candidate is fastest."""
    best = {}
    for c in space.candidates:  # fastest first
        best.setdefault(c.key[0], c)
    return dataclasses.replace(space, candidates=tuple(list(best.values())[:k]))


@pytest.mark.parametrize("memory_gib", [7.0, 8.0])
def test_search_with_the_analytic_cost_model_equals_exact_search(memory_gib):
    """Each call chooses among its fastest layouts on 4 different meshes (4^6 = 4096 plans),
    so the exact search can enumerate them all; memory is tight enough that every call at
    its fastest does not fit."""
    ctx = _analytic_ppo_ctx(memory_gib)
    spaces = {name: _fastest_per_mesh(s, 4) for name, s in ctx.spaces.items()}
    assert not ctx.sim.simulate([s.candidates[0] for s in spaces.values()]).feasible
    exact = exact_search(ctx.sim, spaces)
    for seed in range(3):
        found = anneal_search(ctx.sim, spaces, options=SearchOptions(time_budget_s=0.2, seed=seed))
        assert found.sim.feasible
        assert found.sim.iteration_time_s == pytest.approx(exact.sim.iteration_time_s, rel=1e-12)


def test_the_budget_counts_pricing_the_moves(monkeypatch):
    """Pricing a move the simulator has not seen is charged to the budget (at 128 GPUs it
    costs far more than a simulation): dearer moves leave room for fewer plans."""
    import planner.work_units as units

    def evaluations() -> tuple[int, float]:
        ctx = _analytic_ppo_ctx(10.0)
        found = anneal_search(ctx.sim, ctx.spaces, options=SearchOptions(time_budget_s=0.05, seed=1))
        return found.stats.num_evaluations, ctx.sim.work_units

    cheap, cheap_units = evaluations()
    monkeypatch.setattr(units, "REALLOC_BASE_UNITS", 100 * units.REALLOC_BASE_UNITS)
    dear, dear_units = evaluations()
    assert cheap_units > 0 and dear_units > cheap_units
    assert dear < cheap / 2
