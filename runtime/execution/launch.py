"""Starting workers: one process per device through torch's elastic launcher.

`launch(fn, args, spec)` runs `fn(ctx, *args)` on every worker after the default
process group is up (gloo on CPU, NCCL on GPUs) and returns each rank's result. A worker that
raises or dies ends the whole launch: the agent stops the others within its monitor
interval plus `shutdown_timeout`, and `launch` raises `WorkerFailed` naming the first
failing rank and its error. Per-rank output goes to `LOG_DIR/.../rank_N/stdout.log`.

Several machines join through the same c10d rendezvous that `torchrun --nnodes N
--rdzv-backend c10d --rdzv-endpoint HOST:PORT` uses; `launch` takes `nnodes` and the
endpoint for that case.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import signal
import socket
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.distributed.elastic.multiprocessing.errors import record

from graph.errors import UserError


class Interrupted(KeyboardInterrupt):
    """The launcher was stopped by a signal (Ctrl-C: SIGINT, or SIGTERM); the workers were
    stopped with it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = int(signum)


class WorkerFailed(RuntimeError):
    """A worker raised or died; the message names the rank and its error."""

    def __init__(self, rank: int, message: str) -> None:
        super().__init__(f"rank {rank} failed: {message}")
        self.rank = rank


@dataclass(frozen=True, kw_only=True)
class LaunchSpec:
    """How to start the workers of one run."""

    nproc_per_node: int
    """Workers on this machine."""
    backend: str = "gloo"
    """gloo (CPU) or nccl (GPU)."""
    nnodes: int = 1
    """Machines taking part; more than one needs a reachable rendezvous endpoint."""
    host: str = "127.0.0.1"
    """Rendezvous host."""
    port: int = 0
    """Rendezvous port; 0 picks a free one (single machine only)."""
    log_dir: str | None = None
    """Where per-rank logs go; None uses a temporary directory."""
    monitor_interval_s: float = 0.2
    """How often the agent checks its workers."""
    shutdown_timeout_s: int = 10
    """Grace period between SIGTERM and SIGKILL when stopping workers."""
    collective_timeout_s: float = 120.0
    """Timeout of process-group collectives, so a lost peer cannot hang a worker forever."""
    verbose: bool = False
    """Let the launcher log worker failures with their tracebacks (--debug)."""

    def __post_init__(self) -> None:
        if self.nproc_per_node < 1 or self.nnodes < 1:
            raise ValueError("nproc_per_node and nnodes must be >= 1")
        if self.backend not in ("gloo", "nccl"):
            raise ValueError(f"backend must be gloo or nccl, got {self.backend!r}")
        if self.nnodes > 1 and self.port == 0:
            raise ValueError("a multi-node launch needs an explicit rendezvous port (cluster.port)")


@dataclass(frozen=True)
class WorkerContext:
    """What a worker function receives: its place in the world."""

    rank: int
    world_size: int
    local_rank: int
    backend: str

    @property
    def device(self) -> torch.device:
        """The device this rank computes on."""
        return torch.device("cuda", self.local_rank) if self.backend == "nccl" else torch.device("cpu")


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def check_port(host: str, port: int) -> None:
    """Raise a clear error when `port` is taken."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            raise UserError(
                f"port {port} on {host} is already in use; set cluster.port to a free port (or 0 to pick one)"
            ) from None


def check_devices(spec: LaunchSpec) -> None:
    """Refuse to start more GPU workers than this machine has GPUs."""
    if spec.backend == "nccl":
        have = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if spec.nproc_per_node > have:
            raise UserError(
                f"cluster.devices_per_node={spec.nproc_per_node} but this machine has {have} CUDA "
                "device(s); lower it, or use cluster.device=cpu"
            )


def equal_share(local_workers: int) -> int:
    """Each of a machine's `local_workers` workers' equal share of its cores (at least 1)."""
    return max(1, (os.cpu_count() or 1) // max(1, local_workers))


def set_worker_threads(local_workers: int) -> int:
    """Give each of a machine's workers an equal share of its cores for torch's intra-op threads.

    Without it every worker starts as many threads as the machine has cores, and on CPU
    the workers thrash: copies and matrix products slow down several times over.
    """
    threads = equal_share(local_workers)
    torch.set_num_threads(threads)
    return threads


@record
def _worker(fn: Callable[..., Any], args: tuple[Any, ...], backend: str, timeout_s: float) -> Any:
    """Entry point of each worker process (module level, so `spawn` can pickle it)."""
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ["LOCAL_RANK"])
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
    set_worker_threads(int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    dist.init_process_group(backend, rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=timeout_s))
    result = fn(WorkerContext(rank, world, local_rank, backend), *args)
    # on an error we leave without tearing the group down, so the error is recorded before
    # peers see their connections drop and report collateral failures of their own
    with contextlib.suppress(Exception):
        dist.destroy_process_group()
    return result


def _failure_message(failure: Any) -> str:
    """One line from a ProcessFailure: the error's last line, or the signal/exit code."""
    return _describe(getattr(failure, "error_file_data", None), getattr(failure, "exitcode", None))


def _describe(error_data: Any, exitcode: Any) -> str:
    message = error_data.get("message") if isinstance(error_data, dict) else None
    if isinstance(message, dict):
        text = str(message.get("message", "")).strip()
        if text:
            return text.splitlines()[-1] if "Traceback" in text else " ".join(text.split())
    if isinstance(exitcode, int) and exitcode < 0:
        with contextlib.suppress(ValueError):
            return f"killed by signal {signal.Signals(-exitcode).name}"
    return f"exited with code {exitcode}"


_COLLATERAL = ("connection reset", "connection closed", "broken pipe", "timed out", "timeout",
               "remote process exited", "socket closed", "killed by signal SIGTERM")


def _is_collateral(message: str) -> bool:
    text = message.lower()
    return any(marker.lower() in text for marker in _COLLATERAL)


def _error_files(log_dir: Path) -> dict[int, str]:
    """Every worker's recorded error in the launch's log directory, by local rank (the global
    rank on one machine, the only case where this fallback is needed to name the culprit)."""
    import json

    found: dict[int, str] = {}
    for path in log_dir.rglob("error.json"):
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            data = json.loads(path.read_text())
            rank = int(path.parent.name)
            found[rank] = _describe(data, 1)
    return found


def _root_cause(failures: dict[int, Any], log_dir: Path) -> tuple[int, str]:
    """The failure that caused the others; peers that lost their partner report collateral errors."""
    messages = {rank: _failure_message(f) for rank, f in failures.items()}
    times = {rank: float(getattr(f, "timestamp", 0) or 0) for rank, f in failures.items()}
    primary = [r for r in messages if not _is_collateral(messages[r])]
    if not primary:  # the failing rank may not have been reported yet: read every error file
        for rank, message in _error_files(log_dir).items():
            if not _is_collateral(message):
                messages[rank], times[rank] = message, 0.0
                primary.append(rank)
    pool = primary or list(messages)
    rank = min(pool, key=lambda r: (times[r], r))
    return rank, messages[rank]


def launch(fn: Callable[..., Any], args: tuple[Any, ...], spec: LaunchSpec) -> dict[int, Any]:
    """Run `fn(ctx, *args)` on every worker; return {rank: result} or raise WorkerFailed."""
    from torch.distributed.elastic.multiprocessing import DefaultLogsSpecs, Std
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    check_devices(spec)
    port = spec.port or free_port(spec.host)
    if spec.nnodes == 1:
        check_port(spec.host, port)
    log_dir = spec.log_dir or tempfile.mkdtemp(prefix="realloc-logs-")
    Path(log_dir).mkdir(parents=True, exist_ok=True)
    config = LaunchConfig(
        min_nodes=spec.nnodes, max_nodes=spec.nnodes, nproc_per_node=spec.nproc_per_node,
        run_id=f"realloc-{uuid.uuid4().hex[:8]}" if spec.nnodes == 1 else "realloc",
        rdzv_backend="c10d", rdzv_endpoint=f"{spec.host}:{port}",
        rdzv_configs={"is_host": True} if spec.nnodes == 1 else {},
        max_restarts=0, monitor_interval=spec.monitor_interval_s, start_method="spawn",
        logs_specs=DefaultLogsSpecs(log_dir=log_dir, redirects=Std.ALL),
        shutdown_timeout=spec.shutdown_timeout_s,
    )
    # the agent logs every failure with its traceback; the error we raise says it in one line,
    # and the worker's own log file keeps the traceback
    quiet = logging.getLogger("torch.distributed.elastic")
    level = quiet.level
    if not spec.verbose:
        quiet.setLevel(logging.CRITICAL)
    try:
        results = elastic_launch(config, _worker)(fn, args, spec.backend, spec.collective_timeout_s)
    except ChildFailedError as exc:
        rank, message = _root_cause(exc.failures, Path(log_dir))
        raise WorkerFailed(rank, message) from None
    except SignalException as exc:  # the agent stops the workers, then re-raises the signal
        raise Interrupted(exc.sigval) from None
    finally:
        quiet.setLevel(level)
    return dict(results)
