"""What `realloc plan` and `realloc run` print, and the stable JSON report.

JSON report (`realloc plan EXP --json`), schema_version 1:

    {
      "schema_version": 1,
      "experiment": {"name": str, "path": str, "overrides": [str]},
      "config": {...},                   # the resolved experiment config
      "graph": {
        "models": [{"role", "family", "num_params", "trainable", "value_head",
                    "checkpoint", "rule"}],
        "dataset_keys": [str],
        "calls": [{"name", "model", "kind", "interface", "args", "inputs", "outputs",
                   "batch_size", "micro_batches", "prompt_len", "response_len",
                   "max_new_tokens"}],        # topological order
        "edges": [{"src", "dst", "kind": "data"|"param", "key"}],
        "cross_iteration_edges": [{"src", "dst", "kind": "param", "key"}]
      },
      "plan": {...}                     # the planner's report: planner.display.plan_report_json
    }

Keys are only ever added within a schema version; a removal or change of meaning
bumps `schema_version`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from graph.dataflow import DataflowGraph, Edge
from realloc.experiment import Experiment

SCHEMA_VERSION = 1


def summary_line(experiment: Experiment) -> str:
    """One line describing a validated experiment."""
    g = experiment.graph
    c = experiment.config.cluster
    return (
        f"{experiment.config.name}: {len(g.models)} models, {len(g.calls)} calls "
        f"({', '.join(call.name for call in g.calls)}), {c.nodes}x{c.devices_per_node} "
        f"{c.device} devices"
    )


def _edge(edge: Edge) -> dict[str, str]:
    return {"src": edge.src, "dst": edge.dst, "kind": edge.kind, "key": edge.key}


def graph_json(graph: DataflowGraph) -> dict[str, Any]:
    """The graph part of the JSON report."""
    models = []
    for role, m in graph.models.items():
        models.append({
            "role": role,
            "family": m.arch.family if m.arch else None,
            "num_params": m.num_params,
            "trainable": m.trainable,
            "value_head": m.value_head,
            "checkpoint": m.checkpoint,
            "rule": m.rule,
        })
    calls = []
    for call in graph.calls:
        args = dataclasses.asdict(call.args) if dataclasses.is_dataclass(call.args) else {}
        calls.append({
            "name": call.name, "model": call.model, "kind": call.kind.value,
            "interface": call.interface, "args": {k: list(v) if isinstance(v, tuple) else v for k, v in args.items()},
            "inputs": list(call.inputs), "outputs": list(call.outputs),
            "batch_size": call.batch_size, "micro_batches": call.micro_batches,
            "prompt_len": call.prompt_len, "response_len": call.response_len,
            "max_new_tokens": call.max_new_tokens,
        })
    return {
        "models": models,
        "dataset_keys": sorted(graph.dataset_keys),
        "calls": calls,
        "edges": [_edge(e) for e in graph.edges],
        "cross_iteration_edges": [_edge(e) for e in graph.cross_edges],
    }


def config_json(value: Any) -> Any:
    """The resolved config as plain JSON data.

    Walks dataclasses, mappings and sequences itself instead of going back through
    OmegaConf: a field typed as a dataclass may hold a plain dict (an inline `arch` given
    by interpolation, `${defs.llama2_70b}`), which OmegaConf.structured refuses.
    """
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: config_json(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict) or hasattr(value, "items"):
        return {str(k): config_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [config_json(v) for v in value]
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)


def plan_json(experiment: Experiment, result: Any) -> dict[str, Any]:
    """The stable JSON report of `realloc plan --json`."""
    from planner.display import plan_report_json

    return {
        "schema_version": SCHEMA_VERSION,
        "experiment": {
            "name": experiment.config.name,
            "path": str(experiment.path),
            "overrides": list(experiment.overrides),
        },
        "config": config_json(experiment.config),
        "graph": graph_json(experiment.graph),
        "plan": plan_report_json(result),
    }


def print_plan(experiment: Experiment, result: Any) -> None:
    """The experiment in one line, then the planner's report."""
    from planner.display import render_report
    from realloc.console import make_console

    console = make_console()
    c = experiment.config.cluster
    console.rule(f"[bold]{experiment.config.name}[/] ({experiment.path.name})")
    console.print(summary_line(experiment), markup=False)
    console.print(f"cost model: {c.profile or c.hardware}, {c.nodes} x {c.devices_per_node} devices", markup=False)
    line = resampling_line(experiment)
    if line:
        console.print(line, markup=False)
    console.print(render_report(result))


def resampling_line(experiment: Experiment) -> str:
    """What the estimates assume of dynamic sampling ('' without it)."""
    from graph.sampling import dynamic_sampling

    spec = dynamic_sampling(experiment.graph)
    if spec is None:
        return ""
    return (f"dynamic sampling: {', '.join(spec.calls)} priced at {spec.expected_rounds:g} rounds per iteration "
            f"(graph.train.expected_sampling_rounds; at most {spec.max_rounds})")
