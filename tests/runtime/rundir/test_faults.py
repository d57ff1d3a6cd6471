"""Faults while a checkpoint is written, each in a real 1-process gloo world (a subprocess)
writing real DCP files: a full disk (ENOSPC) stops with one line and leaves the previous
checkpoint intact; SIGKILL in the middle of a save leaves the previous one in charge."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from runtime.rundir import checkpoints as rc

ROOT = Path(__file__).parents[3]

SCRIPT = r"""
import errno, os, sys, time
from pathlib import Path
import torch.distributed as dist
from runtime.rundir import checkpoints as rc, rank_state

root = Path(sys.argv[1])
dist.init_process_group("gloo", init_method=f"file://{root}.store", rank=0, world_size=1)

class NoEngines:
    homes, by_key = {}, {}
    def get(self, role, layout): return None

def save(it, write=rank_state._write):
    return rank_state.save_checkpoint(root, it, NoEngines(), [], rank=0, world_size=1, fingerprint={"seed": 1},
                                      layouts={}, keep=5, write=write)

def full_disk(state, path):  # DCP's own writer finds the disk full
    from torch.distributed.checkpoint import filesystem

    real = filesystem._write_item
    def write_item(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")
    filesystem._write_item = write_item
    try:
        rank_state._write(state, path)
    finally:
        filesystem._write_item = real

def hang(state, path):
    rank_state._write(state, path)
    (root / "writing").touch()
    time.sleep(600)

save(1)
try:
    save(2, full_disk)
except rc.CheckpointWriteError as exc:
    print("ERROR", exc, flush=True)
(root / "after-enospc").write_text(" ".join(sorted(p.name for p in root.iterdir())))
save(3, hang)
dist.destroy_process_group()
"""


def test_a_full_disk_stops_with_one_line_then_sigkill_mid_save_leaves_the_previous_in_charge(tmp_path):
    """One process: checkpoint 1; checkpoint 2 hits ENOSPC; checkpoint 3 is killed mid-save."""
    ckpt = tmp_path / "ckpt"
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, str(ckpt)], env={**os.environ, "PYTHONPATH": str(ROOT)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (ckpt / "writing").exists():
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        assert time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    out, _ = proc.communicate(timeout=60)
    # ENOSPC: one line, the partial checkpoint removed, the previous one intact
    [line] = [line for line in out.splitlines() if line.startswith("ERROR")]
    assert line == (f"ERROR writing checkpoint iter_000002 under {str(ckpt)!r} failed (OSError: "
                    "[Errno 28] No space left on device (rank 0)); the previous checkpoints are intact: free disk space "
                    "(or set train.run_dir elsewhere) and resume with train.resume=true")
    assert (ckpt / "after-enospc").read_text() == "iter_000001"
    # SIGKILL after the DCP files of checkpoint 3, before its meta.json
    tmp = ckpt / ".iter_000003.tmp"
    assert any(p.name.endswith(".distcp") for p in tmp.iterdir()) and not (tmp / "meta.json").exists()
    point = rc.find_resume_point(ckpt)
    assert point.path.name == "iter_000001" and point.warnings == ()
    assert [r.status for r in rc.list_checkpoints(ckpt)] == ["ok", "being written (or abandoned)"]
