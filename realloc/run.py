"""`realloc run`: plan, write the run directory, launch the workers, follow their metrics."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any

from realloc.experiment import ConfigError, Experiment
from realloc.planning import plan_experiment


def make_job(experiment: Experiment, layouts: dict[str, Any]) -> Any:
    from runtime.executor import DataSettings, Job, PtxSettings

    cfg = experiment.config
    d = cfg.data
    if d.path is None and d.generator is None:
        raise ConfigError("data: set data.path to a JSONL file or data.generator to a built-in generator")
    return Job(
        name=cfg.name, graph=experiment.graph, layouts=layouts,
        data=DataSettings(format=d.format, path=d.path, generator=d.generator, num_records=d.num_records,
                          seed=d.seed, tokenizer=d.tokenizer,
                          ptx=None if d.ptx is None else PtxSettings(**dataclasses.asdict(d.ptx))),
        iterations=cfg.train.iterations, seed=cfg.seed, run_dir=str(Path(cfg.train.run_dir).resolve()),
        log_every=cfg.train.log_every, free_replicas=cfg.train.free_replicas,
    )


def worker_entry(experiment: Experiment, plan_file: str) -> int:
    """One worker under torchrun: join the process group torchrun set up and run the saved plan.

    Every worker of every node loads the same plan file, so all run the same plan.
    """
    import datetime
    import os

    import torch.distributed as dist

    from planner import load_plan
    from realloc.planning import cost_model_for
    from runtime.executor import Worker
    from runtime.launch import WorkerContext, set_worker_threads
    from runtime.rundir import RunDir, atomic_write

    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        raise ConfigError("realloc worker runs under torchrun (it reads RANK and WORLD_SIZE); use `realloc run` on one machine")
    cfg = experiment.config
    plan = load_plan(plan_file)
    plan.check_matches(experiment.graph, cost_model_for(experiment).cluster)
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    if world != cfg.cluster.nodes * cfg.cluster.devices_per_node:
        raise ConfigError(
            f"torchrun started {world} workers but the experiment's cluster has "
            f"{cfg.cluster.nodes} x {cfg.cluster.devices_per_node}; make --nnodes x --nproc-per-node match"
        )
    backend = "nccl" if cfg.cluster.device == "cuda" else "gloo"
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if backend == "nccl":
        import torch

        torch.cuda.set_device(local_rank)
    set_worker_threads(int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    job = make_job(experiment, dict(plan.layouts))
    if rank == 0:
        run = RunDir(job.run_dir).create(resume=False)
        atomic_write(run.config, experiment.to_yaml())
        plan.save(run.plan)
    dist.init_process_group(backend, rank=rank, world_size=world, timeout=datetime.timedelta(seconds=120))
    try:
        Worker(WorkerContext(rank, world, local_rank, backend), job).run()
    finally:
        dist.destroy_process_group()
    return 0


def run_experiment(experiment: Experiment, *, debug: bool = False) -> int:
    """Train the experiment; returns the process exit code."""
    from rich.console import Console

    from planner.render import call_table
    from runtime.console import MetricsFollower
    from runtime.executor import worker_main
    from runtime.launch import LaunchSpec, WorkerFailed, check_devices, check_port, launch
    from runtime.rundir import RunDir, atomic_write, read_metrics

    cfg = experiment.config
    console = Console(highlight=False)
    if cfg.cluster.nodes > 1:
        raise ConfigError(
            f"cluster.nodes={cfg.cluster.nodes}: `realloc run` starts the workers of one machine; on several "
            "machines start them with torchrun (see the README, 'Several machines')"
        )
    if cfg.train.resume:
        raise ConfigError("train.resume=true is not supported yet; start a new run_dir")
    backend = "nccl" if cfg.cluster.device == "cuda" else "gloo"
    spec = LaunchSpec(nproc_per_node=cfg.cluster.devices_per_node, backend=backend, port=cfg.cluster.port,
                      log_dir=None)
    # what can fail before any work starts, does
    check_devices(spec)
    if spec.port:
        check_port(spec.host, spec.port)
    result = plan_experiment(experiment, compare=False)
    plan = result.plan
    job = make_job(experiment, dict(plan.layouts))
    run = RunDir(job.run_dir).create(resume=False)
    atomic_write(run.config, experiment.to_yaml())
    plan.save(run.plan)
    console.print(call_table(plan, title=f"plan ({plan.source}), estimated {plan.iteration_time_s:.3f} s per iteration"))
    console.print(f"run directory: {run.root}")
    spec = dataclasses.replace(spec, log_dir=str(run.logs), verbose=debug)
    try:
        with MetricsFollower(run.metrics, total=job.iterations):
            launch(worker_main, (job,), spec)
    except WorkerFailed as exc:
        print(f"realloc: error: {exc} (worker logs: {run.logs})", file=sys.stderr)
        return 1
    records = read_metrics(run.metrics)
    rewards = [r["reward"] for r in records if r.get("reward") is not None]
    if rewards:
        head, tail = rewards[: max(1, len(rewards) // 5)], rewards[-max(1, len(rewards) // 5):]
        console.print(f"mean reward: first {len(head)} iterations {sum(head) / len(head):.3f}, "
                      f"last {len(tail)} iterations {sum(tail) / len(tail):.3f}")
    console.print(f"done: {len(records)} iterations; metrics {run.metrics}, curves {run.curves}")
    return 0
