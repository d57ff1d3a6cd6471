"""`realloc run` end to end: a killed worker ends the run with a clear message, quickly."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def _descendants(pid: int) -> list[int]:
    out = []
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        out.append(int(child))
        out.extend(_descendants(int(child)))
    return out


def _is_worker(pid: int) -> bool:
    try:
        return "multiprocessing.spawn" in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="ignore")
    except OSError:
        return False


def test_a_killed_worker_ends_the_run(tmp_path):
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "realloc.cli", "run", "ppo_tiny", "train.iterations=500",
         f"train.run_dir={run_dir}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=Path(__file__).parents[2])
    try:
        deadline = time.monotonic() + 240
        metrics = run_dir / "metrics.jsonl"
        while not (metrics.exists() and metrics.read_text().count("\n") >= 2):
            assert proc.poll() is None, proc.communicate()[1][-2000:]
            assert time.monotonic() < deadline, "the run never reached iteration 2"
            time.sleep(0.5)
        workers = sorted(p for p in _descendants(proc.pid) if _is_worker(p))
        assert len(workers) == 4
        os.kill(workers[1], signal.SIGKILL)
        killed_at = time.monotonic()
        _, err = proc.communicate(timeout=90)
        assert time.monotonic() - killed_at < 60
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1
    last = err.strip().splitlines()[-1]
    assert last.startswith("realloc: error: rank ") and "killed by signal SIGKILL" in last
    assert "worker logs:" in last
    # what was written before the failure is intact
    assert len(metrics.read_text().splitlines()) >= 2


def _two_agents(args: list[str], plan: Path) -> None:
    """Two torchrun agents on loopback, 2 workers each, run `realloc worker ARGS --plan PLAN`."""
    from runtime.execution.launch import free_port

    port = free_port()
    agents = [subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "2",
         "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "--max-restarts", "0",
         "-m", "realloc.cli", "worker", *args, "--plan", str(plan)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=Path(__file__).parents[2])
        for _ in range(2)]
    outs = [a.communicate(timeout=300) for a in agents]
    for agent, (_, err) in zip(agents, outs):
        assert agent.returncode == 0, err[-3000:]


def test_two_torchrun_agents_run_one_plan(tmp_path):
    """Several machines: two torchrun agents on loopback, each a node of 2 workers, run a saved plan."""
    root = Path(__file__).parents[2]
    common = ["ppo_tiny", "cluster.nodes=2", "cluster.devices_per_node=2", "train.iterations=2",
              "graph.batch_size=8", f"train.run_dir={tmp_path / 'run'}"]
    plan = tmp_path / "plan.yaml"
    subprocess.run([sys.executable, "-m", "realloc.cli", "plan", *common, "--out", str(plan)],
                   check=True, capture_output=True, cwd=root)
    _two_agents(common, plan)
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2
    assert (tmp_path / "run" / "plan.yaml").exists()
    # the trained models are saved at the end as HF checkpoints transformers loads
    import transformers

    actor = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "run" / "models" / "actor")
    critic = transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path / "run" / "models" / "critic")
    assert actor.config.num_hidden_layers >= 1 and critic.config.num_labels == 1
    assert not (tmp_path / "run" / "models" / "ref").exists()
    # the same agents resume the run from its final checkpoint and train one iteration more
    resume = [*common[:3], "train.iterations=3", *common[4:], "train.resume=true"]
    _two_agents(resume, plan)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in records] == [1, 2, 3] and lines == [json.dumps(r, sort_keys=True)
                                                                       for r in records[:2]]
    checkpoints = tmp_path / "run" / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["iter_000002", "iter_000003"]
    assert json.loads((checkpoints / "iter_000003" / "meta.json").read_text())["world_size"] == 4


def test_a_user_error_raised_in_a_worker_exits_2():
    from realloc.run import _is_user_error

    assert _is_user_error("rank 0 failed: RewardFunctionError: reward function 'f.py:bad' raised ...")
    assert _is_user_error("rank 3 failed: DataError: data.path: row 2 ...")
    assert not _is_user_error("rank 1 failed: RuntimeError: Timed out waiting 120000ms")
    assert not _is_user_error("rank 1 failed: killed by signal SIGKILL")
