"""The `realloc` command line: run, pipeline, plan, validate, graph, keys, list.

Every user error prints one line (`realloc: error: ...`) and exits 2; `--debug`
shows the traceback instead.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence

from realloc.experiment import DEFAULT_EXPERIMENT, Experiment, load_experiment

EXIT_USER_ERROR = 2

_EPILOG_OVERRIDES = (
    "Overrides use Hydra syntax, e.g. graph.batch_size=32 cluster.devices_per_node=2 "
    "'models.actor.arch.num_layers=4'. `realloc keys` lists every key."
)


def _split_exp(args: argparse.Namespace) -> tuple[str | None, list[str]]:
    """The experiment and overrides from the positional words (EXP may be omitted)."""
    words = list(args.words)
    exp = None
    if words and "=" not in words[0]:
        exp = words.pop(0)
    bad = [w for w in words if "=" not in w]
    if bad:
        raise ValueError(f"unexpected argument {bad[0]!r}: overrides are key=value; the experiment comes first")
    return exp, words


def _load(args: argparse.Namespace, *, required: bool) -> Experiment:
    exp, overrides = _split_exp(args)
    if exp is None and required:
        raise ValueError(f"{args.command} needs an experiment: realloc {args.command} EXP.yaml [key=value ...]")
    return load_experiment(exp, overrides)


# --------------------------------------------------------------------------- commands


def cmd_validate(args: argparse.Namespace) -> int:
    from realloc.report import summary_line

    experiment = _load(args, required=True)
    print(f"ok: {summary_line(experiment)}")
    return 0


def cmd_graph(args: argparse.Namespace) -> int:
    from graph.render import graph_text, write_graph

    experiment = _load(args, required=True)
    if args.out:
        path = write_graph(experiment.graph, args.out)
        print(f"wrote {path}")
    else:
        print(graph_text(experiment.graph))
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    from realloc.planning import plan_experiment
    from realloc.report import plan_json, print_plan

    experiment = _load(args, required=True)
    result = plan_experiment(experiment, quiet=args.json)
    if args.out:
        path = result.plan.save(args.out)
        if not args.json:
            print(f"wrote plan {path}")
    if args.timeline:
        from planner.render import draw_timeline

        path = draw_timeline(result.plan, args.timeline)
        if not args.json:
            print(f"wrote timeline {path}")
    if args.json:
        print(json.dumps(plan_json(experiment, result), indent=2))
    else:
        print_plan(experiment, result)
    if args.steps and not args.json:
        from runtime.program import compile_iteration

        c = experiment.config.cluster
        steps = compile_iteration(experiment.graph, result.plan.layouts, world_size=c.nodes * c.devices_per_node,
                                  first=False, free_replicas=experiment.config.train.free_replicas)
        print("\nsteps of a steady iteration (every rank runs its own steps in this order):")
        for i, step in enumerate(steps, 1):
            print(f"{i:4}. {step}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from realloc.run import run_experiment

    exp, overrides = _split_exp(args)
    if args.plan:
        overrides = [*overrides, "plan.mode=file", f"plan.file={args.plan}"]
    return run_experiment(load_experiment(exp, overrides), debug=bool(getattr(args, "debug", False)))


def cmd_worker(args: argparse.Namespace) -> int:
    from realloc.run import worker_entry

    exp, overrides = _split_exp(args)
    return worker_entry(load_experiment(exp, overrides), args.plan)


def cmd_pipeline(args: argparse.Namespace) -> int:
    from realloc.pipeline import load_pipeline, run_pipeline, summary_lines

    pipeline = load_pipeline(args.pipeline, args.overrides)
    results = run_pipeline(pipeline)
    print(f"pipeline {pipeline.name}: {len(results)} stages done")
    for line in summary_lines(results):
        print(f"  {line}")
    return 0


def cmd_keys(args: argparse.Namespace) -> int:
    from realloc.schema import reference

    print(reference(args.section))
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from graph.interfaces import get_interface, known_interfaces
    from graph.templates import get_template, known_templates
    from realloc.experiment import known_experiments

    if args.what == "experiments":
        for name in known_experiments():
            print(name)
    elif args.what == "templates":
        for name in known_templates():
            info = get_template(name)
            print(f"{name:<8} models: {', '.join(info.roles):<28} {info.doc}")
    else:
        for name in known_interfaces():
            info = get_interface(name)
            optional = info.inputs[info.required_inputs:]
            ins = ", ".join(info.inputs[:info.required_inputs]) + (f" [, {', '.join(optional)}]" if optional else "")
            print(f"{name:<13} {info.kind.value:<9} ({ins}) -> ({', '.join(info.outputs)})  {info.doc}")
    return 0


# --------------------------------------------------------------------------- parser


def _add_exp(p: argparse.ArgumentParser, *, optional: bool) -> None:
    what = f"experiment YAML or shipped name (default: {DEFAULT_EXPERIMENT})" if optional else "experiment YAML or shipped name"
    p.add_argument("words", nargs="*", metavar="EXP [key=value ...]", help=f"{what}, then overrides")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="realloc",
        description="Plan and run RLHF training as a dataflow graph with searched parallel layouts.",
        epilog=_EPILOG_OVERRIDES,
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show tracebacks on errors")

    p = sub.add_parser("run", parents=[common], help="plan and train an experiment", epilog=_EPILOG_OVERRIDES,
                       description="Plan an experiment, then train it (default experiment: "
                                   f"{DEFAULT_EXPERIMENT}).")
    _add_exp(p, optional=True)
    p.add_argument("--plan", metavar="FILE", help="run a saved plan (from `realloc plan --out`) unchanged")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("plan", parents=[common], help="show the execution plan without running it", epilog=_EPILOG_OVERRIDES,
                       description="Compose the experiment, build its graph, choose layouts and print "
                                   "the plan with its estimated time and memory.")
    _add_exp(p, optional=False)
    p.add_argument("--dry-run", action="store_true",
                   help="estimate only (the default: planning never starts workers)")
    p.add_argument("--json", action="store_true", help="print the stable JSON report (see README)")
    p.add_argument("--out", metavar="FILE", help="save the plan (.yaml or .json) for `realloc run --plan`")
    p.add_argument("--timeline", metavar="FILE.png", help="draw a Gantt chart of devices over time")
    p.add_argument("--steps", action="store_true",
                   help="also list the steps an iteration compiles to (reallocations, sends, runs, frees)")
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser("validate", parents=[common], help="check an experiment and its graph", epilog=_EPILOG_OVERRIDES)
    _add_exp(p, optional=False)
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("graph", parents=[common], help="print or draw the dataflow graph", epilog=_EPILOG_OVERRIDES)
    _add_exp(p, optional=False)
    p.add_argument("--out", metavar="FILE", help="write .dot, .png, .svg or .pdf instead of printing")
    p.set_defaults(func=cmd_graph)

    p = sub.add_parser("worker", parents=[common], help="one worker under torchrun (several machines)",
                       description="Run as one of the workers torchrun starts on each machine: "
                                   "torchrun --nnodes N --nproc-per-node D --rdzv-backend c10d "
                                   "--rdzv-endpoint HOST:PORT -m realloc.cli worker EXP --plan PLAN.yaml")
    _add_exp(p, optional=False)
    p.add_argument("--plan", metavar="FILE", required=True, help="the plan every worker runs (realloc plan --out)")
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("pipeline", parents=[common], help="run experiments as stages (e.g. SFT -> RM -> PPO)",
                       description="Run a pipeline file's stages in order, each stage's saved models feeding "
                                   "the next (${stages.NAME.run_dir}); finished stages are skipped on a re-run.")
    p.add_argument("pipeline", help="pipeline YAML or shipped name (experiments/pipelines/), e.g. dschat_tiny")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="run_dir=DIR, STAGE.key=value (one stage) or all.key=value (every stage)")
    p.set_defaults(func=cmd_pipeline)

    p = sub.add_parser("keys", parents=[common], help="list the configuration keys with their meaning and defaults")
    p.add_argument("section", nargs="?", help="only this section, e.g. graph or models.<name>")
    p.set_defaults(func=cmd_keys)

    p = sub.add_parser("list", parents=[common], help="list shipped experiments, templates or interfaces")
    p.add_argument("what", choices=("experiments", "templates", "interfaces"))
    p.set_defaults(func=cmd_list)
    return parser


def _guard(func: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    if args.debug:
        return func(args)
    try:
        return func(args)
    except (ValueError, FileNotFoundError, NotADirectoryError, PermissionError, OSError) as exc:
        message = " ".join(str(exc).split()) or type(exc).__name__
        print(f"realloc: error: {message}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("realloc: interrupted", file=sys.stderr)
        return 130


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USER_ERROR
    return _guard(args.func, args)


if __name__ == "__main__":
    sys.exit(main())
