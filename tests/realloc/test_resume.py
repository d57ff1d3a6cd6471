"""Checkpoint and resume end to end: a run killed with SIGKILL after a checkpoint, its newest
checkpoint then corrupted, resumes from the previous one and ends with the same metrics,
models and EMA as an uninterrupted run; the EMA follows its recurrence.

Three launches of 2 workers: the uninterrupted run and the run to kill go at the same time,
then the resumption. The plan puts the calls on different layouts (TP, DP, PP), so the
checkpoint holds sharded optimizer state and the resumed run re-fills replicas by
reallocation.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from graph.errors import UserError
from realloc.experiment import ConfigError, load_experiment
from realloc.run import run_experiment

slow = pytest.mark.slow

ROOT = Path(__file__).parents[2]
ITERATIONS = 8
DECAY = 0.9
LAYOUTS = {"actor_gen": "tp=2", "reward_inf": None, "ref_inf": "dp=2", "critic_inf": "tp=2",
           "actor_train": "dp=2", "critic_train": "pp=2"}


def _overrides(run_dir: Path, *extra: str) -> list[str]:
    out = ["cluster.devices_per_node=2", f"train.iterations={ITERATIONS}", "graph.batch_size=8",
           f"train.ema_decay={DECAY}", f"train.run_dir={run_dir}", "plan.mode=manual"]
    for call, strategy in LAYOUTS.items():
        if strategy is None:  # one device
            out += [f"plan.layouts.{call}.start=1", f"plan.layouts.{call}.size=1"]
        else:
            out += [f"plan.layouts.{call}.start=0", f"plan.layouts.{call}.size=2", f"plan.layouts.{call}.{strategy}"]
    return out + list(extra)


def _start(run_dir: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "realloc.cli", "run", "ppo_tiny", *_overrides(run_dir, *extra)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env,
                            start_new_session=True)


def _descendants(pid: int) -> list[int]:
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return []
    return [p for c in children for p in (int(c), *_descendants(int(c)))]


def _kill_when(proc: subprocess.Popen, ready: Path, timeout_s: float = 400) -> None:
    """SIGKILL the launcher and every worker at once as soon as `ready` exists."""
    deadline = time.monotonic() + timeout_s
    while not ready.exists():
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.monotonic() < deadline, f"{ready} never appeared"
        time.sleep(0.02)
    pids = [proc.pid, *_descendants(proc.pid)]
    os.killpg(proc.pid, signal.SIGKILL)  # the session this test started
    for pid in pids:  # anything that left the process group
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.communicate(timeout=60)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    full, killed = root / "full", root / "killed"
    a = _start(full, "train.save_every=1", f"train.keep_checkpoints={ITERATIONS}")
    b = _start(killed, "train.save_every=2")
    try:
        _kill_when(b, killed / "checkpoints" / "iter_000004" / "meta.json")
        _, a_err = a.communicate(timeout=600)
    finally:
        for p in (a, b):
            if p.poll() is None:
                p.kill()
    assert a.returncode == 0, a_err[-3000:]
    assert b.returncode == -signal.SIGKILL
    state_at_kill = {
        "lines": len((killed / "metrics.jsonl").read_text().splitlines()),
        "models": (killed / "models").exists(),
        "last": (killed / "checkpoints" / f"iter_{ITERATIONS:06d}").exists(),
    }
    # corrupt the newest checkpoint without changing its size: resume must fall back
    victim = killed / "checkpoints" / "iter_000004" / "__1_0.distcp"
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))
    c = _start(killed, "train.save_every=2", "train.resume=true")
    out, err = c.communicate(timeout=600)
    assert c.returncode == 0, err[-3000:]
    return {"full": full, "killed": killed, "at_kill": state_at_kill, "stdout": out, "stderr": err}


def _metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _without_times(record: dict) -> dict:
    return {k: v for k, v in record.items() if "time" not in k}


@slow
def test_the_run_was_killed_mid_run_after_a_checkpoint(runs):
    at_kill = runs["at_kill"]
    assert not at_kill["models"] and not at_kill["last"]
    assert 4 <= at_kill["lines"] < ITERATIONS


@slow
def test_a_corrupt_checkpoint_is_skipped_with_one_warning(runs):
    warnings = [line for line in runs["stderr"].splitlines() if "warning" in line]
    assert warnings == ["realloc: warning: checkpoint iter_000004 is unusable (corrupt: __1_0.distcp fails its "
                        "SHA-256 check); falling back to iter_000002 (the unusable one is moved aside, not "
                        "deleted, when the run resumes)"]
    assert "resuming from" in runs["stdout"] and "iter_000002" in runs["stdout"]


@slow
def test_resumed_metrics_equal_the_uninterrupted_run(runs):
    full, resumed = _metrics(runs["full"]), _metrics(runs["killed"])
    assert [r["iteration"] for r in resumed] == list(range(1, ITERATIONS + 1))
    for a, b in zip(full, resumed):
        assert _without_times(a) == _without_times(b), a["iteration"]  # bitwise: JSON floats round-trip
    assert len({r["reward"] for r in full}) > 1  # the values are not trivially constant
    assert full[-1]["actor_train/grad_norm"] > 0


@slow
def test_resumed_models_and_ema_equal_the_uninterrupted_run(runs):
    for role in ("actor", "critic", "actor_ema"):
        a = load_file(runs["full"] / "models" / role / "model.safetensors")
        b = load_file(runs["killed"] / "models" / role / "model.safetensors")
        assert a.keys() == b.keys()
        for name in a:
            assert torch.equal(a[name], b[name]), (role, name)
    # the killed run kept only the newest complete checkpoints (train.keep_checkpoints=2)
    names = sorted(p.name for p in (runs["killed"] / "checkpoints").iterdir())
    # the corrupt iter_000004 was moved aside when the run resumed, never deleted
    assert names[1:] == ["iter_000006", "iter_000008"] and names[0].startswith("iter_000004.unusable-")


def _saved(run_dir: Path, iteration: int, role: str = "actor") -> dict:
    """The global weights and EMA of `role` in a checkpoint."""
    from runtime.rundir.rank_state import read_global

    path = run_dir / "checkpoints" / f"iter_{iteration:06d}"
    return {what: read_global(path, f"{role}/{what}/") for what in ("weights", "ema")}


@slow
def test_ema_follows_its_recurrence(runs):
    """ema_k = d * ema_(k-1) + (1 - d) * w_k, by hand in float64, on the saved global tensors."""
    prev = _saved(runs["full"], 1)
    for it in (2, 3, 4):
        cur = _saved(runs["full"], it)
        moved = False
        assert cur["ema"].keys() == cur["weights"].keys() and cur["ema"]
        for name, ema in cur["ema"].items():
            want = DECAY * prev["ema"][name].double() + (1 - DECAY) * cur["weights"][name].double()
            torch.testing.assert_close(ema.double(), want, rtol=0, atol=1e-6)
            moved |= not torch.equal(cur["weights"][name], prev["weights"][name])
        assert moved
        prev = cur


@slow
def test_ema_is_saved_beside_the_actor(runs):
    from graph.spec import ModelArch
    from runtime.engine import convert

    final = _saved(runs["full"], ITERATIONS)
    arch = ModelArch.from_config_file(runs["full"] / "models" / "actor_ema" / "config.json")
    want = convert.megatron_to_hf(dict(final["ema"]), arch, value_head=False)
    got = load_file(runs["full"] / "models" / "actor_ema" / "model.safetensors")
    actor = load_file(runs["full"] / "models" / "actor" / "model.safetensors")
    assert got.keys() == want.keys()
    for name in got:
        assert torch.equal(got[name], want[name]), name
    assert any(not torch.equal(got[n], actor[n]) for n in got)  # the EMA lags the weights


@slow
def test_resume_refuses_another_experiment_or_a_finished_run(runs):
    """Checked before any worker starts (no launch)."""
    killed = runs["killed"]
    with pytest.raises(UserError, match=r"different experiment \(graph\.batch_size is 8 there, 16 now\)"):
        run_experiment(load_experiment("ppo_tiny", _overrides(killed, "train.resume=true", "graph.batch_size=16")))
    with pytest.raises(ConfigError, match=f"already at iteration {ITERATIONS}"):
        run_experiment(load_experiment("ppo_tiny", _overrides(killed, "train.resume=true")))


@slow
def test_a_finished_run_continues_on_one_worker_under_a_searched_plan(runs, tmp_path):
    """The 2-worker run's last checkpoint resumes on 1 worker with a plan searched anew: the
    metrics continue from iteration 8, the first 8 stay as they were."""
    import shutil

    run = tmp_path / "moved"
    shutil.copytree(runs["killed"], run)
    before = _metrics(run)
    proc = subprocess.run(
        [sys.executable, "-m", "realloc.cli", "run", "ppo_tiny", "cluster.devices_per_node=1",
         f"train.iterations={ITERATIONS + 2}", "graph.batch_size=8", f"train.ema_decay={DECAY}",
         f"train.run_dir={run}", "train.resume=true", "train.save_every=2"],
        capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "resuming under a new plan" in proc.stderr and "checkpoint of 2 workers is resharded" in proc.stderr
    after = _metrics(run)
    assert [r["iteration"] for r in after] == list(range(1, ITERATIONS + 3))
    assert after[:ITERATIONS] == before
    assert all(r["actor_train/grad_norm"] > 0 for r in after[ITERATIONS:])
    from runtime.rundir.checkpoints import verify

    meta = verify(run / "checkpoints" / f"iter_{ITERATIONS + 2:06d}")
    assert meta.world_size == 1


@pytest.mark.parametrize("override, message", [
    ("train.ema_decay=1.0", r"train.ema_decay must be in \[0, 1\)"),
    ("train.ema_models=[ref]", "train.ema_models: 'ref' is not a model a call trains; trained: actor, critic"),
    ("train.keep_checkpoints=0", "train.keep_checkpoints must be >= 1"),
    ("train.save_every=-1", "train.save_every must be >= 0"),
])
def test_bad_checkpoint_and_ema_keys_are_refused_before_launch(tmp_path, override, message):
    from realloc.run import make_job

    exp = load_experiment("ppo_tiny", ["train.ema_decay=0.5", f"train.run_dir={tmp_path}", override])
    with pytest.raises(ConfigError, match=message):
        make_job(exp, {})


def test_resume_without_checkpoints_says_how_to_write_them(tmp_path):
    exp = load_experiment("ppo_tiny", [f"train.run_dir={tmp_path}", "train.resume=true"])
    with pytest.raises(UserError, match="holds no checkpoint; set train.save_every=N"):
        run_experiment(exp)


@slow
def test_each_rank_writes_its_own_file_of_compact_tensors(runs):
    """Parameters are views into DDP's flat buffer; saving a view would write the whole buffer,
    and DP replicas are written once: the files hold about the state's bytes, no more."""
    from runtime.rundir.checkpoints import verify
    from runtime.rundir.rank_state import read_global

    path = runs["full"] / "checkpoints" / f"iter_{ITERATIONS:06d}"
    meta = verify(path)
    assert sorted(meta.files) == [".metadata", "__0_0.distcp", "__1_0.distcp"]
    assert all(meta.files[f"__{r}_0.distcp"].size > 50_000 for r in (0, 1))  # both ranks wrote
    payload = 0
    for role in ("actor", "critic"):
        for what in ("weights", "ema", "optim/exp_avg", "optim/exp_avg_sq"):
            payload += sum(t.numel() * t.element_size() for t in read_global(path, f"{role}/{what}/").values())
    data = sum(e.size for n, e in meta.files.items() if n.endswith(".distcp"))
    assert payload < data < 1.3 * payload + 256 * 1024


@slow
def test_export_of_the_last_checkpoint_equals_the_final_model(runs, tmp_path):
    """Two paths to the same weights: the run's own end-of-run HF export (gathered by the
    engines) and `realloc export --checkpoint 8` (read from the DCP files in one process)."""
    from realloc.cli import main

    for role in ("actor", "critic"):
        assert main(["export", str(runs["full"]), "--checkpoint", str(ITERATIONS), "--model", role,
                     "--out", str(tmp_path / role)]) == 0
        got = load_file(tmp_path / role / "model.safetensors")
        want = load_file(runs["full"] / "models" / role / "model.safetensors")
        assert got.keys() == want.keys()
        for name in got:
            assert torch.equal(got[name], want[name]), (role, name)
        info = json.loads((tmp_path / role / "realloc_export.json").read_text())
        assert info["checkpoint"] == f"iter_{ITERATIONS:06d}"
    assert main(["export", str(runs["full"]), "--checkpoint", "99", "--out", str(tmp_path / "x")]) == 2


@slow
def test_checkpoints_command_lists_status_size_and_plan(runs, capsys):
    from realloc.cli import main

    assert main(["checkpoints", str(runs["killed"])]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = [re.split(r"\s{2,}", line.strip()) for line in lines]  # columns are 2+ spaces apart
    assert rows[0] == ["ITER", "SIZE", "WORKERS", "PLAN", "STATUS", "DIRECTORY"]
    assert [r[0] for r in rows[1:]] == ["4", "6", "8"]
    assert rows[1][4] == "moved aside" and rows[1][5].startswith("iter_000004.unusable-")
    assert rows[2][2:] == ["2", "6 calls on 4 layouts", "ok", "iter_000006"]
    assert rows[3][1].endswith(" MiB") and float(rows[3][1].split()[0]) > 0.1


def test_ctrl_c_stops_a_run_with_one_line_and_keeps_its_checkpoint(tmp_path):
    """Ctrl-C in a terminal sends SIGINT to the whole foreground group: the launcher and its
    workers. The run ends with exit 130 and one line (not a bug report), and the checkpoint
    written before stays loadable."""
    run_dir = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "realloc.cli", "run", "ppo_tiny", "cluster.devices_per_node=1",
                             "train.iterations=400", "train.save_every=2", "graph.batch_size=8",
                             f"train.run_dir={run_dir}"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=ROOT, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while not (run_dir / "checkpoints" / "iter_000002" / "meta.json").exists():
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.2)
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, err
    lines = [line for line in err.splitlines() if line.startswith("realloc:")]
    assert lines and "interrupted (SIGINT)" in lines[-1] and "bug" not in err, err
    from runtime.rundir.checkpoints import list_checkpoints

    rows = list_checkpoints(run_dir / "checkpoints", verify_hashes=True)
    assert any(c.iteration == 2 and c.status == "ok" for c in rows), rows  # written before: intact
