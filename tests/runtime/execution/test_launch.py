"""The launcher: results from every rank, failures named within bounded time, bad input."""

import os
import signal
import socket
import time

import pytest
import torch
import torch.distributed as dist

from runtime.execution.launch import LaunchSpec, WorkerFailed, check_port, launch

pytestmark = pytest.mark.slow


def _sum_ranks(ctx, scale):
    t = torch.tensor([float(ctx.rank + 1)])
    dist.all_reduce(t)
    return {"rank": ctx.rank, "world": ctx.world_size, "sum": float(t) * scale}


def _fail_on_rank_1(ctx, how):
    if ctx.rank == 1:
        if how == "raise":
            raise ValueError("bad shard on purpose")
        os.kill(os.getpid(), signal.SIGKILL)
    # the other rank waits in a collective the dead one never joins
    t = torch.zeros(1)
    dist.all_reduce(t)
    return "unreachable"


def test_launch_returns_every_rank(tmp_path):
    results = launch(_sum_ranks, (10.0,), LaunchSpec(nproc_per_node=2, log_dir=str(tmp_path)))
    assert results == {0: {"rank": 0, "world": 2, "sum": 30.0}, 1: {"rank": 1, "world": 2, "sum": 30.0}}


@pytest.mark.parametrize("how,message", [("raise", "ValueError: bad shard on purpose"),
                                         ("kill", "killed by signal SIGKILL")])
def test_a_failing_worker_ends_the_run(tmp_path, how, message):
    start = time.monotonic()
    with pytest.raises(WorkerFailed) as info:
        launch(_fail_on_rank_1, (how,), LaunchSpec(nproc_per_node=2, log_dir=str(tmp_path),
                                                   shutdown_timeout_s=3))
    assert info.value.rank == 1
    assert message in str(info.value)
    assert time.monotonic() - start < 60


def test_port_in_use_and_bad_spec():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(ValueError, match=f"port {port} on 127.0.0.1 is already in use; set cluster.port"):
            check_port("127.0.0.1", port)
        with pytest.raises(ValueError, match="already in use"):
            launch(_sum_ranks, (1.0,), LaunchSpec(nproc_per_node=2, port=port))
    with pytest.raises(ValueError, match="backend must be gloo or nccl"):
        LaunchSpec(nproc_per_node=2, backend="mpi")
    with pytest.raises(ValueError, match="needs an explicit rendezvous port"):
        LaunchSpec(nproc_per_node=2, nnodes=2)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="this machine has 0 CUDA device"):
            launch(_sum_ranks, (1.0,), LaunchSpec(nproc_per_node=2, backend="nccl"))


_TWO_NODE_AGENT = """
import json, sys
from runtime.execution.launch import LaunchSpec, launch
from tests.runtime.execution.test_launch import _sum_ranks
results = launch(_sum_ranks, (1.0,), LaunchSpec(nproc_per_node=2, nnodes=2, port=int(sys.argv[1]),
                                                log_dir=sys.argv[2]))
print(json.dumps({str(k): v for k, v in results.items()}))
"""


def test_two_agents_on_loopback_form_one_world(tmp_path):
    """Two launcher agents, each standing in for a node, join one c10d rendezvous."""
    import json
    import subprocess
    import sys

    from runtime.execution.launch import free_port

    port = free_port()
    procs = [subprocess.Popen([sys.executable, "-c", _TWO_NODE_AGENT, str(port), str(tmp_path / f"n{i}")],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    for p, (_out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-2000:]
    seen = {}
    for out, _ in outs:
        seen.update(json.loads(out.strip().splitlines()[-1]))
    # 4 workers over 2 agents: world size 4, and the all-reduce sums 1+2+3+4
    assert sorted(int(r) for r in seen) == [0, 1, 2, 3]
    assert all(v["world"] == 4 and v["sum"] == 10.0 for v in seen.values())


def _threads(ctx):
    return torch.get_num_threads()


def test_workers_share_the_cores(tmp_path):
    import os

    results = launch(_threads, (), LaunchSpec(nproc_per_node=2, log_dir=str(tmp_path)))
    assert set(results.values()) == {max(1, (os.cpu_count() or 1) // 2)}
