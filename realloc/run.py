"""`realloc run`: how a run starts, where it runs, and what the user sees.

Run orchestration lives here and only here: `prepare_run` decides the plan (searched, or the
run's own plan.yaml when it resumes), the resume point (the newest usable checkpoint,
checked against the experiment's fingerprint, the world size and the plan) and prepares
the run directory. `run_experiment` (one machine) and `worker_entry` (torchrun, several
machines) both go through it. The runtime only executes the `Job` it hands over.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from realloc.experiment import ConfigError, Experiment
from realloc.planning import plan_experiment

if TYPE_CHECKING:
    from planner.plan import Plan
    from runtime.execution.job import Job
    from runtime.rundir.checkpoints import ResumePoint
    from runtime.rundir.directory import RunDir


def fingerprint(experiment: Experiment) -> dict[str, Any]:
    """The experiment's identity for checkpoints (see runtime.rundir.checkpoints)."""
    from omegaconf import OmegaConf

    from runtime.rundir.checkpoints import experiment_fingerprint

    return experiment_fingerprint(OmegaConf.to_container(OmegaConf.structured(experiment.config), resolve=True))


def _check_train_keys(experiment: Experiment) -> None:
    t, graph = experiment.config.train, experiment.graph
    if t.save_every < 0:
        raise ConfigError(f"train.save_every must be >= 0 (0: only at the end), got {t.save_every}")
    if t.keep_checkpoints < 1:
        raise ConfigError(f"train.keep_checkpoints must be >= 1, got {t.keep_checkpoints}")
    if not 0.0 <= t.ema_decay < 1.0:
        raise ConfigError(f"train.ema_decay must be in [0, 1) (0: no EMA; 0.99 is typical), got {t.ema_decay}")
    if t.ema_decay > 0:
        trained = [r for r in graph.models if any(c.kind.value == "train" for c in graph.calls_of(r))]
        for role in t.ema_models:
            if role not in trained:
                raise ConfigError(f"train.ema_models: {role!r} is not a model a call trains; "
                                  f"trained: {', '.join(trained) or 'none'}")


def make_job(experiment: Experiment, layouts: dict[str, Any], *, resume_from: str | None = None,
             streamed: tuple[tuple[str, str], ...] = (), threads_per_worker: int = 0,
             fused: tuple[tuple[str, str], ...] = ()) -> Job:
    """The Job the workers run: the experiment's graph under `layouts` (with the plan's streamed
    edges, plan.fusion, and its torch threads per worker; 0 leaves the launcher's share), checked first."""
    from runtime.execution.job import Job

    cfg = experiment.config
    d = cfg.data
    if d.path is None and d.generator is None:
        raise ConfigError("data: set data.path to a dataset file or data.generator to a built-in generator")
    _check_train_keys(experiment)
    return Job(
        name=cfg.name, graph=experiment.graph, layouts=layouts, data=d,
        iterations=cfg.train.iterations, seed=cfg.seed, run_dir=str(Path(cfg.train.run_dir).resolve()),
        log_every=cfg.train.log_every, free_replicas=cfg.train.free_replicas,
        save_every=cfg.train.save_every, keep_checkpoints=cfg.train.keep_checkpoints, resume_from=resume_from,
        fingerprint=fingerprint(experiment), ema_decay=cfg.train.ema_decay,
        ema_models=tuple(cfg.train.ema_models) if cfg.train.ema_decay > 0 else (),
        off_policy_steps=cfg.train.off_policy_steps, streamed=tuple(streamed), fused=tuple(fused),
        threads_per_worker=threads_per_worker,
        eval_every=cfg.train.eval_every,
    )


def resume_point(experiment: Experiment, *, world_size: int, plan: Plan | None = None,
                 warn: bool = True) -> tuple[ResumePoint, Plan]:
    """(checkpoint, plan) that `train.resume=true` starts from: the newest complete checkpoint
    and the plan to run: `plan`, else the run's saved plan.yaml when the plan and cluster
    settings are those the run was started with, else a new plan for the new settings (the
    checkpoint reshards). ConfigError when there is none, or it belongs to another
    experiment. Prints one line per newer checkpoint skipped."""
    from runtime.rundir.checkpoints import check_compatible, find_resume_point
    from runtime.rundir.directory import RunDir

    cfg = experiment.config
    run = RunDir(Path(cfg.train.run_dir).resolve())
    point = find_resume_point(run.checkpoints)
    for line in point.warnings if warn else ():
        print(f"realloc: warning: {line}", file=sys.stderr, flush=True)
    check_compatible(point.meta, name=point.path.name, fingerprint=fingerprint(experiment))
    if point.meta.iteration >= cfg.train.iterations:
        raise ConfigError(f"train.resume: checkpoint {point.path.name} is already at iteration "
                          f"{point.meta.iteration} of train.iterations={cfg.train.iterations}; raise "
                          "train.iterations to train further")
    if plan is None:
        changed = _placement_changes(experiment, run)
        if changed:
            print(f"realloc: resuming under a new plan ({'; '.join(changed[:3])}): the checkpoint of "
                  f"{point.meta.world_size} workers is resharded", file=sys.stderr, flush=True)
            plan = plan_experiment(experiment).plan
        else:
            plan = _saved_plan(experiment, run)
    return point, plan


def _placement_changes(experiment: Experiment, run: RunDir) -> list[str]:
    """The plan.* and cluster.* settings that differ from those the run was started with."""
    import yaml
    from omegaconf import OmegaConf

    from runtime.rundir.checkpoints import differences, flatten

    if not run.config.is_file():
        return []
    saved = flatten(yaml.safe_load(run.config.read_text()) or {})
    now = flatten(OmegaConf.to_container(OmegaConf.structured(experiment.config), resolve=True))

    def placement(flat: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in flat.items() if k.startswith(("plan.", "cluster.")) and k != "cluster.port"}

    return differences(placement(saved), placement(now))


def _saved_plan(experiment: Experiment, run: RunDir) -> Plan:
    """The plan the resumed run ran (its plan.yaml), checked against the experiment."""
    from planner import load_plan
    from realloc.planning import cost_model_for

    try:
        plan = load_plan(run.plan)
        plan.check_matches(experiment.graph, cost_model_for(experiment).cluster)
    except ValueError as exc:
        raise ConfigError(f"train.resume: {exc}") from None
    return plan


@dataclass(frozen=True, kw_only=True)
class RunStart:
    """How a run starts, as `prepare_run` decided it."""

    plan: Plan
    """The plan the workers run."""
    job: Job
    """What every worker receives."""
    run: RunDir
    """The prepared run directory."""
    start: int
    """Iterations already done (0 for a fresh run; the checkpoint's iteration on resume)."""


def prepare_run(experiment: Experiment, *, world_size: int, plan: Plan | None = None,
                compare: bool = False) -> RunStart:
    """The one place that decides how a run starts, and prepares its directory.

    Fresh run: `plan` (or the searched plan) is written to RUN_DIR/plan.yaml. Resume
    (`train.resume=true`): the newest usable checkpoint and the run's own plan.yaml (or
    `plan`, which must match it); metrics.jsonl is cut back to the checkpoint and newer,
    unusable checkpoints are moved aside. Either way config.yaml is (re)written. Every
    file is written atomically.
    """
    from graph.files import atomic_write
    from runtime.rundir.checkpoints import set_aside_newer
    from runtime.rundir.directory import RunDir
    from runtime.rundir.metrics import MetricsWriter

    cfg = experiment.config
    run = RunDir(Path(cfg.train.run_dir).resolve())
    if cfg.train.resume:
        point, plan = resume_point(experiment, world_size=world_size, plan=plan)
        job = make_job(experiment, dict(plan.layouts), resume_from=str(point.path), streamed=plan.streamed, fused=plan.fused,
                       threads_per_worker=plan.threads_per_worker)
        run.create(resume=True)
        MetricsWriter(run.metrics).truncate_after(point.meta.iteration)
        set_aside_newer(run.checkpoints, point)
        plan.save(run.plan)  # the plan that runs from here on (the checkpoint records the one before)
        start = point.meta.iteration
    else:
        if plan is None:
            plan = plan_experiment(experiment, compare=compare).plan
        job = make_job(experiment, dict(plan.layouts), streamed=plan.streamed, fused=plan.fused,
                       threads_per_worker=plan.threads_per_worker)
        run.create(resume=False)
        plan.save(run.plan)
        start = 0
    atomic_write(run.config, experiment.to_yaml())
    return RunStart(plan=plan, job=job, run=run, start=start)


def worker_entry(experiment: Experiment, plan_file: str) -> int:
    """One worker under torchrun: join the process group torchrun set up and run the saved plan.

    Every worker of every node loads the same plan file, so all run the same plan; rank 0
    prepares the run directory (`prepare_run`) and tells the others where to resume from.
    """
    import datetime
    import os

    import torch.distributed as dist

    from graph.errors import UserError
    from planner import load_plan
    from realloc.planning import cost_model_for
    from runtime.execution.launch import WorkerContext, set_worker_threads
    from runtime.execution.worker import Worker

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
    # checks the config on every rank, before joining
    job = make_job(experiment, dict(plan.layouts), streamed=plan.streamed, fused=plan.fused, threads_per_worker=plan.threads_per_worker)
    dist.init_process_group(backend, rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=cfg.cluster.collective_timeout_s))
    box: list[Any] = [None]
    if rank == 0:
        try:
            box = [("ok", prepare_run(experiment, world_size=world, plan=plan).job.resume_from)]
        except UserError as exc:
            box = [("error", str(exc))]
    dist.broadcast_object_list(box, src=0)
    status, value = box[0]
    if status == "error":
        dist.destroy_process_group()
        raise ConfigError(value)
    job = dataclasses.replace(job, resume_from=value)
    try:
        Worker(WorkerContext(rank, world, local_rank, backend), job).run()
    finally:
        dist.destroy_process_group()
    return 0


def _is_user_error(message: str) -> bool:
    """Whether a worker's failure (`rank N failed: TYPE: text`) is a UserError subclass raised in
    the worker, e.g. a reward function that raised or a bad dataset row: exit 2, not 1."""
    import runtime.data.records  # noqa: F401 - defines DataError (pure Python)
    import runtime.rewards.functions  # noqa: F401 - defines RewardFunctionError (pure Python)
    from graph.errors import UserError

    names, todo = set(), [UserError]
    while todo:
        cls = todo.pop()
        names.add(cls.__name__)
        todo.extend(cls.__subclasses__())
    kind = message.split(" failed: ", 1)[-1].split(":", 1)[0].strip()
    return kind in names


def run_experiment(experiment: Experiment, *, debug: bool = False) -> int:
    """Train the experiment; returns the process exit code."""
    from planner.display import call_table
    from realloc.console import MetricsFollower, make_console
    from runtime.execution.launch import LaunchSpec, WorkerFailed, check_devices, check_port, launch
    from runtime.execution.worker import worker_main
    from runtime.rundir.metrics import read_metrics

    cfg = experiment.config
    console = make_console()
    if cfg.cluster.nodes > 1:
        raise ConfigError(
            f"cluster.nodes={cfg.cluster.nodes}: `realloc run` starts the workers of one machine; on several "
            "machines start them with torchrun (see the README, 'Several machines')"
        )
    backend = "nccl" if cfg.cluster.device == "cuda" else "gloo"
    spec = LaunchSpec(nproc_per_node=cfg.cluster.devices_per_node, backend=backend, port=cfg.cluster.port,
                      collective_timeout_s=cfg.cluster.collective_timeout_s,
                      log_dir=None)
    # what can fail before any work starts, does
    check_devices(spec)
    if spec.port:
        check_port(spec.host, spec.port)
    begin = prepare_run(experiment, world_size=spec.nproc_per_node)
    plan, job, run = begin.plan, begin.job, begin.run
    if begin.start:
        console.print(f"resuming from {job.resume_from} (iteration {begin.start})")
    console.print(call_table(plan, title=f"plan ({plan.source}), estimated {plan.iteration_time_s:.3f} s per iteration"))
    console.print(f"run directory: {run.root}")
    spec = dataclasses.replace(spec, log_dir=str(run.logs), verbose=debug)
    try:
        with MetricsFollower(run.metrics, total=job.iterations, start=begin.start, console=console):
            launch(worker_main, (job,), spec)
    except WorkerFailed as exc:
        print(f"realloc: error: {exc} (worker logs: {run.logs})", file=sys.stderr)
        return 2 if _is_user_error(str(exc)) else 1
    records = read_metrics(run.metrics)
    rewards = [r["reward"] for r in records if r.get("reward") is not None]
    if rewards:
        head, tail = rewards[: max(1, len(rewards) // 5)], rewards[-max(1, len(rewards) // 5):]
        console.print(f"mean reward: first {len(head)} iterations {sum(head) / len(head):.3f}, "
                      f"last {len(tail)} iterations {sum(tail) / len(tail):.3f}")
    line = sampling_rounds_line(experiment.graph, records)
    if line:
        console.print(line, markup=False)
    from realloc.estimate_check import report_estimates

    report_estimates(experiment, plan, records, run.root, echo=lambda line: console.print(line, markup=False))
    console.print(f"done: {len(records)} iterations; metrics {run.metrics}, curves {run.curves}")
    return 0


def sampling_rounds_line(graph: Any, records: list[dict[str, Any]]) -> str:
    """Dynamic sampling's measured generation rounds per iteration against the planner's
    expectation, with the setting that prices the next run by this one ('' without it)."""
    from graph.sampling import dynamic_sampling

    spec = dynamic_sampling(graph)
    rounds = [r["dynamic_sampling/rounds"] for r in records if "dynamic_sampling/rounds" in r]
    if spec is None or not rounds:
        return ""
    mean = sum(rounds) / len(rounds)
    topped = sum(r.get("dynamic_sampling/groups_topped_up", 0.0) for r in records)
    return (f"dynamic sampling: {mean:.2f} generation rounds per iteration (the plan priced "
            f"{spec.expected_rounds:g}; set graph.train.expected_sampling_rounds={min(mean, spec.max_rounds):.2f} "
            f"to price the next run by this one); {topped:g} groups topped up after "
            f"{spec.max_rounds} rounds")
