"""Plan save/load round trips and matching a plan against an experiment."""

from __future__ import annotations

import dataclasses

import pytest

from graph.placement.layout import Cluster
from planner.context import PlanContext
from planner.plan import Plan, load_plan
from tests.planner.graphs import fan_graph, gen_train_graph, on
from tests.planner.synthetic import FixedCost

CLUSTER = Cluster(num_nodes=1, devices_per_node=2)
TIMES = {"gen": 2.0, "ref_inf": 1.0, "values": 1.5, "actor_train": 3.0, "critic_train": 2.0}


def _plan() -> Plan:
    layouts = {"gen": on(0, 2, tp=2), "actor_train": on(0, 2), "ref_inf": on(1, 1),
               "values": on(1, 1), "critic_train": on(0, 1, mb=2)}
    return PlanContext(fan_graph(), FixedCost(CLUSTER, times=TIMES)).evaluate(layouts, "manual")


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_round_trip(tmp_path, suffix):
    plan = _plan()
    assert plan.reallocations and plan.transfers
    back = load_plan(plan.save(tmp_path / f"plan{suffix}"))
    assert back.layouts == plan.layouts
    assert back.calls == plan.calls
    assert back.reallocations == plan.reallocations
    assert back.transfers == plan.transfers
    assert back.iteration_time_s == plan.iteration_time_s
    assert back.device_peak_bytes == plan.device_peak_bytes
    assert back.cluster == CLUSTER and back.source == "manual"
    assert back.timeline == ()  # not saved: re-simulate
    assert dataclasses.replace(back, timeline=plan.timeline) == plan


def test_threads_per_worker_round_trip_and_checks(tmp_path):
    plan = dataclasses.replace(_plan(), threads_per_worker=2)
    assert load_plan(plan.save(tmp_path / "plan.yaml")).threads_per_worker == 2
    assert _plan().threads_per_worker == 0  # the launcher's share
    data = plan.to_dict()
    data["threads_per_worker"] = -1
    with pytest.raises(ValueError, match="threads_per_worker must be an integer >= 0"):
        Plan.from_dict(data)
    del data["threads_per_worker"]  # files from before threads were planned
    assert Plan.from_dict(data).threads_per_worker == 0


def test_check_matches_names_the_call(tmp_path):
    plan = _plan()
    plan.check_matches(fan_graph(), CLUSTER)
    with pytest.raises(ValueError, match=r"plan file does not match the experiment: call 'train' has no layout"):
        plan.check_matches(gen_train_graph(), CLUSTER)
    with pytest.raises(ValueError, match=r"plan is for 1 x 2 devices, the experiment has 2 x 2"):
        plan.check_matches(fan_graph(), Cluster(num_nodes=2, devices_per_node=2))


def test_bad_files_say_what_is_wrong(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        load_plan(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\ncluster: {num_nodes: 1, devices_per_node: 2}\n")
    with pytest.raises(ValueError, match="missing field 'calls'"):
        load_plan(bad)
    bad.write_text("version: 7\n")
    with pytest.raises(ValueError, match="version 7 is not supported"):
        load_plan(bad)
    bad.write_text("version: 1\ncluster: {num_nodes: 1, devices_per_node: 2}\ncalls:\n"
                   "  - {name: gen, model: actor, devices: [0, 1], dp: 1, tp: 1, pp: 1}\n")
    with pytest.raises(ValueError, match=r"call 'gen'.*does not match mesh"):
        load_plan(bad)
    bad.write_text("version: 1\ncluster: {num_nodes: 1, devices_per_node: 2}\ncalls:\n"
                   "  - {name: gen, model: actor, devices: [2, 3], dp: 2, tp: 1, pp: 1}\n")
    with pytest.raises(ValueError, match=r"call 'gen': mesh \[2-3\] uses devices beyond"):
        load_plan(bad)
    with pytest.raises(ValueError, match="suffix"):
        _plan().save(tmp_path / "plan.txt")


def test_hand_written_minimal_file(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("version: 1\ncluster: {num_nodes: 1, devices_per_node: 2}\ncalls:\n"
                    "  - {name: gen, model: actor, devices: [0, 1], dp: 1, tp: 2, pp: 1}\n"
                    "  - {name: train, model: actor, devices: [0, 1], dp: 2, tp: 1, pp: 1, micro_batches: 2}\n")
    plan = load_plan(path)
    assert plan.layouts == {"gen": on(0, 2, tp=2), "train": on(0, 2, mb=2)}
    assert plan.iteration_time_s is None and plan.reallocations == ()
    plan.check_matches(gen_train_graph(), CLUSTER)


def test_streamed_edges_round_trip_and_are_checked(tmp_path):
    from planner.make import _from_file

    layouts = {"gen": on(0, 1), "actor_train": on(0, 1), "ref_inf": on(1, 1), "values": on(1, 1),
               "critic_train": on(1, 1)}
    ctx = PlanContext(fan_graph(), FixedCost(CLUSTER, times=TIMES), fusion="inter")
    plan = ctx.evaluate(layouts, "manual")
    assert plan.streamed == (("gen", "ref_inf"), ("gen", "values"))
    back = load_plan(plan.save(tmp_path / "plan.yaml"))
    assert back.streamed == plan.streamed
    assert "streamed" not in _plan().to_dict()  # unfused plan files stay as they were
    # a plan file may not stream an edge that cannot stream (here: both calls on device 0)
    bad = dataclasses.replace(back, streamed=(("gen", "actor_train"),))
    bad.save(tmp_path / "bad.yaml")
    with pytest.raises(ValueError, match="streamed edge gen -> actor_train cannot stream"):
        _from_file(ctx, str(tmp_path / "bad.yaml"))


def test_fused_pairs_round_trip_and_are_checked(tmp_path):
    from planner.make import _from_file

    pipe = on(0, 2, pp=2)
    layouts = {"gen": on(0, 1), "actor_train": pipe, "ref_inf": on(1, 1), "values": on(1, 1), "critic_train": pipe}
    ctx = PlanContext(fan_graph(), FixedCost(CLUSTER, times=TIMES), fusion="intra")
    plan = ctx.evaluate(layouts, "manual")
    assert plan.fused == (("actor_train", "critic_train"),)
    back = load_plan(plan.save(tmp_path / "plan.yaml"))
    assert back.fused == plan.fused
    assert "fused" not in _plan().to_dict()
    assert _from_file(ctx, str(tmp_path / "plan.yaml")).fused == plan.fused
    # a plan file may not fuse train calls on different layouts
    bad = dataclasses.replace(back, calls=tuple(dataclasses.replace(c, layout=on(0, 2)) if c.name == "critic_train"
                                                else c for c in back.calls))
    bad.save(tmp_path / "bad.yaml")
    with pytest.raises(ValueError, match="fused pair actor_train \\+ critic_train cannot fuse"):
        _from_file(ctx, str(tmp_path / "bad.yaml"))
