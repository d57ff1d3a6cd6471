"""Atoms and the two schedules: scheduling atoms equals scheduling every device."""

from __future__ import annotations

import dataclasses
import random

import pytest

from graph.placement.layout import Cluster
from planner.context import PlanContext
from planner.timeline import Atoms, list_schedule, shared_schedule
from tests.planner.synthetic import SyntheticCost, arch, ppo_graph


def test_atoms_partition_every_set():
    rng = random.Random(0)
    for _ in range(200):
        sets = []
        for _ in range(rng.randrange(1, 6)):
            a = rng.randrange(0, 30)
            run = tuple(range(a, a + rng.randrange(1, 10)))
            extra = tuple(rng.sample(range(40, 50), rng.randrange(0, 3)))
            sets.append(tuple(sorted(set(run + extra))))
        cut = rng.choice([0, 4])
        atoms = Atoms(sets, cut_every=cut)
        for s in sets:
            got = [d for a in atoms.of(s) for d in atoms.devices(a)]
            assert got == list(s)
        covered = [d for a in range(len(atoms)) for d in atoms.devices(a)]
        assert len(covered) == len(set(covered))  # atoms are disjoint
        for a in range(len(atoms)):  # a device's atom holds exactly the devices of the same sets
            members = [s for s in sets if atoms.first_device(a) in s]
            assert all(all(d in s for d in atoms.devices(a)) for s in members)
            if cut:
                assert len({d // cut for d in atoms.devices(a)}) == 1


@dataclasses.dataclass
class _Shared(SyntheticCost):
    host_cores: float = 3.0
    blocking_receives: bool = True


@pytest.mark.parametrize("shared", [False, True])
def test_scheduling_atoms_equals_scheduling_devices(shared):
    """Random plans of PPO on 2 nodes of 4: the simulator's atom schedule gives every task
    the start and end the per-device schedule gives it, and the same memory per device."""
    cluster = Cluster(num_nodes=2, devices_per_node=4)
    cost = (_Shared if shared else SyntheticCost)(cluster)
    g = ppo_graph(actor=arch(8, 1024, 8, 8), batch_size=64)
    ctx = PlanContext(g, cost)
    sim = ctx.sim
    assert bool(sim.host_cores) == shared
    rng = random.Random(1)
    names = [c.name for c in g.calls]
    for _ in range(40):
        cands = [rng.choice(ctx.spaces[n].candidates) for n in names]
        res = sim.simulate(cands, detail=True)
        tasks = sim._tasks(cands, sim.primaries(cands))
        held = [t.devices for t in tasks]
        if shared:
            ends, events = shared_schedule(tasks, held, cluster.num_devices, sim.num_iterations,
                                           node_of=[d // 4 for d in range(8)], size_of=[1] * 8,
                                           cores=3.0, barrier=sim.iteration_barrier, detail=True)
        else:
            ends, events = list_schedule(tasks, held, cluster.num_devices, sim.num_iterations,
                                         barrier=sim.iteration_barrier, detail=True)
        assert list(res.iteration_ends) == pytest.approx(ends)
        want = sorted((it, t.label, d, round(s, 12), round(e, 12)) for t, s, e, it in events if e > s
                      for d in t.shown)
        got = sorted((e.iteration, e.label, e.device, round(e.start, 12), round(e.end, 12)) for e in res.timeline)
        assert got == want
        assert list(res.device_peak_bytes) == pytest.approx(_memory_by_device(g, cands, 8))


def _memory_by_device(g, cands, num_devices):
    """Per device: every replica it holds plus the largest transient of its calls."""
    resident, transient = {}, [0.0] * num_devices
    for call, c in zip(g.calls, cands):
        est = c.estimate
        weighted = g.models[call.model].arch is not None
        if weighted:
            resident[(call.model, c.key)] = max(resident.get((call.model, c.key), 0.0), est.resident_bytes)
        extra = max(0.0, est.peak_bytes - est.resident_bytes) if weighted else est.peak_bytes
        for d in c.key[0]:
            transient[d] = max(transient[d], extra)
    for (_model, key), nbytes in resident.items():
        for d in key[0]:
            transient[d] += nbytes
    return transient
