"""From an experiment to a plan: the cost model for its cluster, the planner's options, the search."""

from __future__ import annotations

from pathlib import Path

from cost_model.estimator import AnalyticCostModel
from cost_model.profile import load_hardware
from graph.placement.layout import Cluster
from planner import PlanOptions, PlanResult, make_plan
from realloc.experiment import ConfigError, Experiment


def cost_model_for(experiment: Experiment) -> AnalyticCostModel:
    """The analytic cost model of the experiment's cluster (a measured profile, or a preset)."""
    c = experiment.config.cluster
    source = c.profile or c.hardware
    if c.profile is not None:  # relative to the working directory, the experiment or the shipped ones
        from realloc.experiment import EXPERIMENTS_DIR

        found = [p for p in (Path(c.profile), experiment.path.parent / c.profile, EXPERIMENTS_DIR / c.profile)
                 if p.is_file()]
        if not found:
            raise ConfigError(f"cluster.profile: {c.profile!r} does not exist (looked in {Path.cwd()} and "
                              f"{experiment.path.parent}); run `realloc profile` or fix the path")
        source = str(found[0])
    try:
        hardware = load_hardware(source)
    except (ValueError, FileNotFoundError) as exc:
        key = "cluster.profile" if c.profile else "cluster.hardware"
        raise ConfigError(f"{key}: {exc}") from None
    dtype = "bf16" if c.device == "cuda" else "fp32"
    # realloc's executor has no barrier between iterations (the ranks post their metrics to
    # rank 0 and go on; the dataflow orders the iterations), and a rank receiving data waits
    # for it in its step order (sends do not block). The simulator is told both.
    return AnalyticCostModel(hardware, Cluster(num_nodes=c.nodes, devices_per_node=c.devices_per_node), dtype=dtype,
                             iteration_barrier=False, blocking_receives=True)


def plan_options(experiment: Experiment, *, compare: bool | None = None) -> PlanOptions:
    """The planner's typed options from the experiment's `plan` section."""
    p = experiment.config.plan
    data = {
        "mode": p.mode, "time_budget_s": p.time_budget_s, "seed": p.seed, "file": p.file,
        "layouts": dict(p.layouts),
        "allow_pp_generate": p.allow_pp_generate,
        "compare_heuristics": p.compare_heuristics if compare is None else compare,
        "off_policy_steps": experiment.config.train.off_policy_steps,
        "fusion": p.fusion,
    }
    try:
        return PlanOptions.from_dict(data)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def plan_experiment(experiment: Experiment, *, compare: bool | None = None, quiet: bool = False) -> PlanResult:
    """Plan the experiment, with a spinner while the search runs."""
    cost = cost_model_for(experiment)
    options = plan_options(experiment, compare=compare)
    if quiet:
        return make_plan(experiment.graph, cost, options)
    from realloc.console import make_console

    what = f"searching plans ({options.time_budget_s:g} s budget)" if options.mode.value == "search" else "pricing the plan"
    with make_console(stderr=True).status(what):
        return make_plan(experiment.graph, cost, options)
