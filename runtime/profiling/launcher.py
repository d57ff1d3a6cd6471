"""`realloc profile`'s launcher: start the workers of `runtime.profiling.machine`, follow their
progress, fit the calibration and write the profile file; and the summary the CLI prints."""

from __future__ import annotations

import datetime
import json
import os
import platform as pyplatform
import tempfile
import threading
from pathlib import Path
from typing import Any

import torch

from cost_model.calibration import fit_calibration
from cost_model.hardware import GiB, preset
from cost_model.profile import Profile, save_profile
from cost_model.samples import Samples
from graph.errors import UserError
from runtime.execution.launch import LaunchSpec, launch
from runtime.profiling.machine import FULL, QUICK, profile_worker


def machine_description(devices: int) -> dict[str, Any]:
    """What the profile was measured on."""
    desc: dict[str, Any] = {"host": pyplatform.node(), "cpus": os.cpu_count(), "workers": devices,
                            "processor": pyplatform.processor() or pyplatform.machine(),
                            "python": pyplatform.python_version(), "torch": torch.__version__}
    if torch.cuda.is_available():
        desc["gpu"] = torch.cuda.get_device_name(0)
        desc["gpu_memory_bytes"] = torch.cuda.get_device_properties(0).total_memory
    with_load = getattr(os, "getloadavg", None)
    if with_load is not None:
        desc["load_average"] = [round(x, 2) for x in with_load()]
    return desc


def _base_hardware(devices: int) -> tuple[str, dict[str, Any]]:
    """The preset the profile overrides, and the hardware fields it sets."""
    if torch.cuda.is_available():
        name = torch.cuda.get_device_name(0).lower()
        base = "h200" if "h200" in name else "h100-80g" if "h100" in name else "a100-80g"
        total = torch.cuda.get_device_properties(0).total_memory
        return base, {"kind": "gpu", "devices_per_node": devices, "memory_bytes": float(total)}
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") if hasattr(os, "sysconf") else 8 * GiB
    return "cpu-gloo", {"kind": "cpu-gloo", "devices_per_node": devices, "memory_bytes": float(memory / devices),
                        "reserved_bytes": float(min(GiB, memory / devices / 4))}


def _follow(path: Path, stop: threading.Event, devices: int) -> None:
    """Show rank 0's progress with a rich progress bar until `stop` is set."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("[bold]profiling[/] {task.description}"), BarColumn(),
                  TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(), transient=True) as bar:
        task = bar.add_task(f"starting {devices} workers", total=None)
        while not stop.wait(0.3):
            try:
                done, total, what = path.read_text().split(" ", 2)
            except (OSError, ValueError):
                continue
            bar.update(task, completed=int(done), total=int(total), description=what.strip())


def profile_machine(*, devices: int, quick: bool = False, out: str | Path | None = None,
                    show_progress: bool = True, name: str | None = None) -> Profile:
    """Measure this machine with `devices` workers; write the profile to `out` when given."""
    if devices < 1:
        raise UserError(f"--devices must be >= 1, got {devices}")
    grid = QUICK if quick else FULL
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    spec = LaunchSpec(nproc_per_node=devices, backend=backend)
    progress = Path(tempfile.mkdtemp(prefix="realloc-profile-")) / "progress"
    stop = threading.Event()
    follower = None
    if show_progress:
        follower = threading.Thread(target=_follow, args=(progress, stop, devices), daemon=True)
        follower.start()
    started = datetime.datetime.now(datetime.UTC)
    try:
        results = launch(profile_worker, (grid, str(progress)), spec)
    finally:
        stop.set()
        if follower is not None:
            follower.join()
    samples = Samples.from_dict(results[0])
    base, hardware = _base_hardware(devices)
    stem = Path(out).stem if out else None
    hardware["name"] = name or stem or f"profile-{devices}proc"
    base_spec = preset(base).to_dict()
    base_spec.update(hardware)
    from cost_model.hardware import HardwareSpec

    measured = {"date": started.strftime("%Y-%m-%dT%H:%M:%SZ"), "grid": "quick" if quick else "full",
                "wall_s": round((datetime.datetime.now(datetime.UTC) - started).total_seconds(), 1),
                "machine": machine_description(devices)}
    profile = Profile(hardware=HardwareSpec.from_dict(base_spec), samples=samples,
                      calibration=fit_calibration(samples), base=base, measured=measured)
    if out is not None:
        save_profile(profile, out)
    return profile


def summary(profile: Profile) -> str:
    """A few lines on what the profile found."""
    cal = profile.calibration
    if cal is None:
        return "no samples"
    rows = {"host cores (effective)": cal.host_cores, "FLOP/s": dict(cal.flops),
            "layer overhead s": cal.layer_overhead_s, "micro-batch overhead s": cal.micro_batch_overhead_s,
            "decode step overhead s": cal.decode_step_overhead_s,
            "decode per-sequence s": cal.decode_sample_overhead_s,
            "train step overhead s": cal.train_step_overhead_s,
            "optimizer s/param": cal.optimizer_param_time_s,
            "link latency s": dict(cal.link_latency), "link bandwidth B/s": dict(cal.link_bandwidth),
            "call overhead s": dict(cal.call_overhead_s), "call overhead per extra dp rank s":
            dict(cal.call_dp_overhead_s), "call overhead per sequence s": dict(cal.call_seq_overhead_s),
            "call overhead per extra dp rank per sequence s": dict(cal.call_dp_seq_overhead_s),
            "reallocation overhead s": cal.realloc_overhead_s,
            "reallocation overhead per peer s": cal.realloc_peer_overhead_s,
            "data transfer overhead s": cal.data_overhead_s,
            "thread efficiency by hidden size": {str(k): round(v, 3) for k, v in
                                                 cal.thread_efficiency_by_hidden.items()},
            "compute speed by hidden size": {str(k): round(v, 3) for k, v in cal.compute_speed_by_hidden.items()},
            "decode speed by hidden size": {str(k): round(v, 3) for k, v in cal.decode_speed_by_hidden.items()},
            "DRAM bandwidth B/s (beyond the cache)": cal.dram_bandwidth,
            "co-run speed by hidden size": {str(k): round(v, 3) for k, v in cal.corun_speed_by_hidden.items()},
            "co-run decode speed by hidden size": {str(k): round(v, 3) for k, v in
                                                   cal.corun_decode_speed_by_hidden.items()},
            "co-run memory speed": cal.corun_memory_speed, "co-run workers": cal.corun_workers,
            "collective slowdown (bytes term)": {k: round(v, 3) for k, v in cal.collective_slowdown.items()},
            "collective slowdown beyond the cache": {k: round(v, 3) for k, v in
                                                     cal.collective_slowdown_beyond_cache.items()}}
    return "\n".join(f"  {k}: {json.dumps(v) if isinstance(v, dict) else (f'{v:.4g}' if v is not None else '-')}"
                     for k, v in rows.items())
