"""`realloc run` end to end: a killed worker ends the run with a clear message, quickly."""

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
