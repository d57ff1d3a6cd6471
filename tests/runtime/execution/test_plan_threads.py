"""The runtime runs every worker with the plan's torch threads (over the launcher's share)."""

from __future__ import annotations

import os

import torch

from graph.placement.layout import DeviceMesh, Layout
from realloc.experiment import load_experiment
from realloc.run import make_job
from runtime.execution.launch import LaunchSpec, launch


def _threads_of_a_worker(ctx, jobs):
    from runtime.execution.worker import Worker

    out = []
    for job in jobs:
        Worker(ctx, job)  # builds the engines: the threads are set before any work
        out.append(torch.get_num_threads())
    return out


def test_workers_run_with_the_plans_threads(tmp_path):
    exp = load_experiment("grpo_tiny", ["cluster.devices_per_node=2", "graph.batch_size=2", "graph.group_size=2",
                                        f"train.run_dir={tmp_path}"])
    one = Layout(mesh=DeviceMesh.span(0, 1), dp=1, tp=1, pp=1)
    layouts = {c.name: one for c in exp.graph.calls}  # worker 1 idles
    planned = make_job(exp, layouts, threads_per_worker=3)
    default = make_job(exp, layouts)
    assert (planned.threads_per_worker, default.threads_per_worker) == (3, 0)
    # two jobs in one process, the planned one first: the second gets the launcher's share back
    results = launch(_threads_of_a_worker, ([planned, default],), LaunchSpec(nproc_per_node=2,
                                                                             log_dir=str(tmp_path / "logs")))
    share = max(1, (os.cpu_count() or 1) // 2)  # the launcher's equal share of the cores
    assert share != 3
    assert results == {0: [3, share], 1: [3, share]}
