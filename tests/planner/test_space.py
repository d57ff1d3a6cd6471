"""Plan-space enumeration checked against hand-listed meshes and strategies."""

from __future__ import annotations

import pytest

from graph.placement.layout import Cluster
from graph.spec import CallKind
from planner.space import SpaceOptions, build_space, enumerate_meshes, strategies, tp_allowed
from tests.planner.graphs import gen_train_graph, rule_graph
from tests.planner.synthetic import GIB, SyntheticCost, arch, ppo_graph


def test_meshes_are_aligned_blocks_and_node_runs():
    meshes = {m.devices for m in enumerate_meshes(Cluster(num_nodes=2, devices_per_node=4))}
    expected = {(d,) for d in range(8)}
    expected |= {(0, 1), (2, 3), (4, 5), (6, 7), (0, 1, 2, 3), (4, 5, 6, 7), tuple(range(8))}
    assert meshes == expected


def test_mesh_shapes_follow_the_node_size():
    meshes = {m.devices for m in enumerate_meshes(Cluster(num_nodes=3, devices_per_node=2))}
    assert meshes == {(0,), (1,), (2,), (3,), (4,), (5,), (0, 1), (2, 3), (4, 5),
                      (0, 1, 2, 3), (2, 3, 4, 5), (0, 1, 2, 3, 4, 5)}
    capped = enumerate_meshes(Cluster(num_nodes=3, devices_per_node=2), max_mesh_nodes=1)
    assert max(m.size for m in capped) == 2


def test_tp_divides_heads_and_divides_or_replicates_kv_heads():
    from graph.spec import ModelSpec

    model = ModelSpec(role="m", arch=arch(heads=12, kv_heads=4, hidden=768))
    cluster = Cluster(num_nodes=1, devices_per_node=16)
    assert [tp for tp in range(1, 17) if tp_allowed(model, tp, cluster)] == [1, 2, 4, 12]
    small_node = Cluster(num_nodes=1, devices_per_node=2)
    assert [tp for tp in range(1, 17) if tp_allowed(model, tp, small_node)] == [1, 2]


def test_strategies_multiply_to_the_mesh_and_respect_pp_for_generation():
    g = gen_train_graph(arch(layers=2, heads=8, kv_heads=8))
    cluster = Cluster(num_nodes=1, devices_per_node=8)
    model = g.models["actor"]
    train = strategies(g.call("train"), model, 4, cluster, SpaceOptions())
    assert sorted(train) == sorted([(4, 1, 1), (2, 2, 1), (1, 4, 1), (2, 1, 2), (1, 2, 2)])
    gen = strategies(g.call("gen"), model, 4, cluster, SpaceOptions())
    assert sorted(gen) == [(1, 4, 1), (2, 2, 1), (4, 1, 1)]
    assert g.call("gen").kind is CallKind.GENERATE
    loose = strategies(g.call("gen"), model, 4, cluster, SpaceOptions(allow_pp_generate=True))
    assert sorted(loose) == sorted(train)


def test_space_is_feasible_pareto_and_sorted():
    g = ppo_graph(actor=arch(32, 4096, 32, 8), batch_size=64)
    cost = SyntheticCost(Cluster(num_nodes=1, devices_per_node=8), device_memory_bytes=40 * GIB)
    spaces = build_space(g, cost, SpaceOptions(micro_batch_choices=3))
    for space in spaces.values():
        times = [c.estimate.time_s for c in space.candidates]
        assert times == sorted(times)
        assert all(c.estimate.feasible and c.estimate.peak_bytes <= 40 * GIB for c in space.candidates)
        assert space.num_priced >= len(space.candidates)
    # the 7B actor's training does not fit on one 40 GiB device
    assert all(c.layout.mesh.size > 1 for c in spaces["actor_train"].candidates)


def test_rule_reward_gets_one_device_layouts():
    g = rule_graph()
    spaces = build_space(g, SyntheticCost(Cluster(num_nodes=1, devices_per_node=4)))
    layouts = [c.layout for c in spaces["rew"].candidates]
    assert {lay.mesh.size for lay in layouts} == {1}
    assert len({lay.mesh.devices for lay in layouts}) == 4


def test_cluster_too_small_names_the_call_and_the_shortfall():
    g = ppo_graph(actor=arch(32, 4096, 32, 8))
    cost = SyntheticCost(Cluster(num_nodes=1, devices_per_node=2), device_memory_bytes=16 * GIB)
    with pytest.raises(ValueError, match=r"call 'actor_train' does not fit.*by [0-9.]+ GiB"):
        build_space(g, cost)


def test_space_options_are_checked():
    with pytest.raises(ValueError, match="micro_batch_choices"):
        SpaceOptions(micro_batch_choices=0)


def test_large_clusters_place_meshes_on_a_grid_of_granules():
    """128 nodes of 8: granules of 8 nodes. Whole-granule runs at granule starts, power-of-two
    runs shorter than a granule at aligned starts, blocks inside the first node of each
    granule; every mesh shape of the full enumeration is still there."""
    from planner.space import mesh_granule

    assert [mesh_granule(n) for n in (1, 16, 17, 32, 128)] == [1, 1, 2, 2, 8]
    dpn = 8
    meshes = enumerate_meshes(Cluster(num_nodes=128, devices_per_node=dpn))
    # (a whole-node block is also a one-node run: counted once)
    assert len(meshes) == 16 * 17 // 2 + (128 + 64 + 32) + 16 * (15 - 1)
    for m in meshes:
        first, size = m.devices[0], m.size
        if size < dpn:
            assert (first // dpn) % 8 == 0 and first % size == 0
        elif size // dpn < 8:
            nodes = size // dpn
            assert nodes & (nodes - 1) == 0 and (first // dpn) % nodes == 0
        else:
            assert size % (8 * dpn) == 0 and first % (8 * dpn) == 0
    small = enumerate_meshes(Cluster(num_nodes=16, devices_per_node=dpn))  # unchanged up to 16 nodes
    assert len(small) == 16 * 17 // 2 + 16 * (15 - 1)


@pytest.mark.parametrize("mode", ["heuristic:symmetric", "search"])
def test_dynamic_sampling_prices_the_extra_generation(mode):
    """DAPO's generate and reward calls cost expected_sampling_rounds times one run; the
    other calls do not change, and the iteration's estimate rises with the factor."""
    from realloc.experiment import load_experiment
    from realloc.planning import plan_experiment

    plans = {}
    for rounds in (1.0, 2.0, 3.5):
        exp = load_experiment("dapo_tiny", [f"graph.train.expected_sampling_rounds={rounds}",
                                            f"plan.mode={mode}", "plan.time_budget_s=0.05"])
        plans[rounds] = plan_experiment(exp, compare=False, quiet=True).plan
    base = {c.name: c for c in plans[1.0].calls}
    times = [plans[r].iteration_time_s for r in (1.0, 2.0, 3.5)]
    assert times[0] < times[1] < times[2]
    for rounds in (2.0, 3.5):
        for c in plans[rounds].calls:
            if c.layout != base[c.name].layout:
                continue  # the search may move a call; compare like with like
            factor = rounds if c.name in ("actor_gen", "reward_inf") else 1.0
            assert c.time_s == pytest.approx(base[c.name].time_s * factor, rel=1e-9), (rounds, c.name)
    sym = {c.name: c for c in plans[3.5].calls}
    if mode.startswith("heuristic"):  # same layouts: every call compared
        assert sym["actor_gen"].time_s == pytest.approx(3.5 * base["actor_gen"].time_s)
