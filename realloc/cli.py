"""The `realloc` command line: run, pipeline, plan, profile, validate, graph, export, checkpoints,
chat, bench, keys, list.

Every user error (a `graph.errors.UserError`) prints one line (`realloc: error: ...`) and
exits 2. Anything else is a bug in realloc: one line saying so, with the path of a log holding
the traceback, and exit 1. `--debug` lets either propagate with its traceback.
"""

from __future__ import annotations

import argparse
import datetime
import errno
import json
import os
import signal
import sys
import tempfile
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

from graph.errors import UserError
from realloc.experiment import DEFAULT_EXPERIMENT, Experiment, load_experiment

EXIT_USER_ERROR = 2
"""Exit status of a mistake in the input (a UserError)."""
EXIT_BUG = 1
"""Exit status of anything else: a bug in realloc."""

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
        raise UserError(f"unexpected argument {bad[0]!r}: overrides are key=value; the experiment comes first")
    return exp, words


def _load(args: argparse.Namespace, *, required: bool) -> Experiment:
    exp, overrides = _split_exp(args)
    if exp is None and required:
        raise UserError(f"{args.command} needs an experiment: realloc {args.command} EXP.yaml [key=value ...]")
    return load_experiment(exp, overrides)


# --------------------------------------------------------------------------- commands


def cmd_validate(args: argparse.Namespace) -> int:
    from realloc.report import summary_line

    experiment = _load(args, required=True)
    print(f"ok: {summary_line(experiment)}")
    return 0


def cmd_graph(args: argparse.Namespace) -> int:
    from graph.drawing import graph_text, write_graph

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
        from planner.display import draw_timeline

        path = draw_timeline(result.plan, args.timeline)
        if not args.json:
            print(f"wrote timeline {path}")
    if args.json:
        print(json.dumps(plan_json(experiment, result), indent=2))
    else:
        print_plan(experiment, result)
    if args.steps and not args.json:
        from graph.overlap import ahead_calls
        from runtime.execution.program import compile_iteration

        c = experiment.config.cluster
        ahead = ahead_calls(experiment.graph, experiment.config.train.off_policy_steps)
        steps = compile_iteration(experiment.graph, result.plan.layouts, world_size=c.nodes * c.devices_per_node,
                                  first=False, free_replicas=experiment.config.train.free_replicas, ahead=ahead,
                                  streamed=() if ahead else tuple(result.plan.streamed),
                                  fused=() if ahead else tuple(result.plan.fused))
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


def cmd_export(args: argparse.Namespace) -> int:
    from realloc.export import export_model

    done = export_model(args.run_dir, args.out, role=args.model, force=args.force, checkpoint=args.checkpoint)
    source = f" of checkpoint {args.checkpoint}" if args.checkpoint is not None else ""
    print(f"exported {done.role}{source} to {done.out} ({', '.join(done.files)})")
    return 0


def cmd_checkpoints(args: argparse.Namespace) -> int:
    from realloc.export import ExportError
    from runtime.rundir.checkpoints import list_checkpoints

    run_dir = Path(args.run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise ExportError(f"{str(run_dir)!r} is not a run directory (no config.yaml); give the train.run_dir of a run")
    rows = list_checkpoints(run_dir / "checkpoints", verify_hashes=not args.quick)
    if not rows:
        print(f"no checkpoints in {run_dir / 'checkpoints'} (a run writes them with train.save_every=N)")
        return 0
    table = [("ITER", "SIZE", "WORKERS", "PLAN", "STATUS", "DIRECTORY")]
    for c in rows:
        homes = sorted(set(c.layouts.values())) if c.layouts else []
        plan = f"{len(c.layouts)} calls on {len(homes)} layouts" if c.layouts else "-"
        table.append((str(c.iteration), f"{c.size / 2**20:.1f} MiB", str(c.world_size or "-"), plan, c.status,
                      c.name))
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    for r in table:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip())
    if args.plans:
        for c in rows:
            for call, layout in sorted(c.layouts.items()):
                print(f"{c.name}  {call}: {layout}")
    return 0


def cmd_chat(args: argparse.Namespace) -> int:
    from realloc.export import Chat, ChatSettings, chat_loop, interactive_lines

    settings = ChatSettings(max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                            top_p=args.top_p, greedy=args.greedy, seed=args.seed, prompt_format=args.format)
    chat = Chat(args.model_dir, settings)
    if args.prompt is not None:
        print(chat.reply(args.prompt))
        return 0
    if sys.stdin.isatty():
        print(f"chatting with {chat.dir} (prompt format: {chat.format}); /exit or Ctrl-D ends")
    chat_loop(chat, interactive_lines(), lambda text: print(f"model> {text}" if sys.stdin.isatty() else text))
    return 0


def cmd_profile(args: argparse.Namespace) -> int:
    from runtime.profiling.launcher import profile_machine, summary

    out = args.out or f"profile-{args.devices}proc.json"
    profile = profile_machine(devices=args.devices, quick=args.quick, out=out)
    print(f"wrote profile {out} ({profile.measured.get('wall_s', 0):.0f} s)")
    print(summary(profile))
    return 0


def cmd_pipeline(args: argparse.Namespace) -> int:
    from realloc.pipeline import load_pipeline, run_pipeline, summary_lines

    pipeline = load_pipeline(args.pipeline, args.overrides)
    results = run_pipeline(pipeline, rerun=tuple(args.rerun or ()))
    print(f"pipeline {pipeline.name}: {len(results)} stages done")
    for line in summary_lines(results):
        print(f"  {line}")
    return 0


def cmd_keys(args: argparse.Namespace) -> int:
    from realloc.schema import reference

    print(reference(args.section))
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from graph.catalog import get_interface, known_interfaces
    from graph.templates import get_template, known_templates
    from realloc.experiment import known_experiments

    if args.what == "experiments":
        for name in known_experiments():
            print(name)
    elif args.what == "templates":
        width = max(len(name) for name in known_templates())
        for name in known_templates():
            info = get_template(name)
            print(f"{name:<{width}} models: {', '.join(info.roles):<28} {info.doc}")
    else:
        for name in known_interfaces():
            info = get_interface(name)
            optional = info.inputs[info.required_inputs:]
            ins = ", ".join(info.inputs[:info.required_inputs]) + (f" [, {', '.join(optional)}]" if optional else "")
            print(f"{name:<13} {info.kind.value:<9} ({ins}) -> ({', '.join(info.outputs)})  {info.doc}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:

    from realloc.bench import suite as bench

    if args.readme or args.readme_into:
        report = bench.load_report(Path(args.report or args.out))
        if args.readme_into:
            print(f"updated {bench.update_readme(Path(args.readme_into), report)}")
        else:
            print(bench.render_readme_table(report), end="")
        return 0
    options = bench.BenchOptions(out=Path(args.out), quick=args.quick, only=bench.parse_only(args.only))
    report = bench.run_bench(options)
    print(bench.render_markdown(report), end="")
    print(f"\nwrote {options.out / 'report.json'} and {options.out / 'report.md'}", file=sys.stderr)
    failed = [n for n, e in report["sections"].items() if e["status"] == "failed"]
    return 1 if failed else 0


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

    p = sub.add_parser("export", parents=[common], help="write a trained model as a HF checkpoint",
                       description="Copy a trained model of a finished run, with the run's tokenizer, to a "
                                   "directory transformers (and `realloc chat`) loads.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="the run's train.run_dir")
    p.add_argument("--out", metavar="DIR", required=True, help="directory to write (must not exist or be empty)")
    p.add_argument("--model", metavar="ROLE", help="which trained model (default: actor, or the only one)")
    p.add_argument("--force", action="store_true", help="replace a non-empty --out")
    p.add_argument("--checkpoint", type=int, metavar="N",
                   help="export the training checkpoint of iteration N instead of the run's final model")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("checkpoints", parents=[common], help="list a run's checkpoints (iteration, size, plan, status)",
                       description="Every checkpoint directory of a run, verified as a resume would (sizes and "
                                   "SHA-256 of every file): complete ones, broken ones, ones moved aside.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="the run's train.run_dir")
    p.add_argument("--plans", action="store_true", help="also print every call's layout in each checkpoint")
    p.add_argument("--quick", action="store_true", help="skip verifying the files (read meta.json only)")
    p.set_defaults(func=cmd_checkpoints)

    p = sub.add_parser("chat", parents=[common], help="talk to a trained or exported model",
                       description="Interactive chat with a HF model directory (from `realloc export`) or a run "
                                   "directory; --prompt answers one prompt and exits (for scripts). Reads lines "
                                   "from standard input when it is not a terminal.")
    p.add_argument("model_dir", metavar="DIR", help="exported model directory or run directory")
    p.add_argument("--prompt", help="answer this one prompt, print the answer and exit")
    p.add_argument("--max-new-tokens", type=int, default=64, help="longest answer in tokens (default 64)")
    p.add_argument("--temperature", type=float, default=0.7, help="sampling temperature (default 0.7)")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (default 1.0)")
    p.add_argument("--greedy", action="store_true", help="greedy decoding instead of sampling")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    p.add_argument("--format", choices=("auto", "bos", "chat"), default="auto",
                   help="prompt encoding: bos+text as realloc trains, the tokenizer's chat template, or "
                        "auto (as the model was trained; else the chat template when there is one)")
    p.set_defaults(func=cmd_chat)

    p = sub.add_parser("profile", parents=[common], help="measure this machine and write a hardware profile",
                       description="Launch worker processes as `realloc run` does and measure per-layer "
                                   "forward/backward/decode times, collectives, the optimizer step and call "
                                   "overheads; write the profile JSON that cluster.profile loads.")
    p.add_argument("--out", metavar="FILE", help="profile JSON to write (default: profile-Nproc.json)")
    p.add_argument("--devices", type=int, default=4, metavar="N", help="worker processes (default: 4)")
    p.add_argument("--quick", action="store_true", help="a small grid (under a minute), e.g. for tests")
    p.set_defaults(func=cmd_profile)

    p = sub.add_parser("pipeline", parents=[common], help="run experiments as stages (e.g. SFT -> RM -> PPO)",
                       description="Run a pipeline file's stages in order, each stage's saved models feeding "
                                   "the next (${stages.NAME.run_dir}); on a re-run, finished stages of the same config are "
                                   "reused and unfinished ones resume from their last checkpoint.")
    p.add_argument("pipeline", help="pipeline YAML or shipped name (experiments/pipelines/), e.g. dschat_tiny")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="run_dir=DIR, STAGE.key=value (one stage) or all.key=value (every stage)")
    p.add_argument("--rerun", action="append", metavar="STAGE",
                   help="run this stage again from the start even if it finished (repeatable); its old "
                        "run directory is kept, moved aside")
    p.set_defaults(func=cmd_pipeline)

    p = sub.add_parser("keys", parents=[common], help="list the configuration keys with their meaning and defaults")
    p.add_argument("section", nargs="?", help="only this section, e.g. graph or models.<name>")
    p.set_defaults(func=cmd_keys)

    p = sub.add_parser("list", parents=[common], help="list shipped experiments, templates or interfaces")
    p.add_argument("what", choices=("experiments", "templates", "interfaces"))
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("bench", parents=[common], help="run the benchmark suite; write a Markdown and JSON report",
                       description="Run the benchmarks (planner vs heuristics, search vs exhaustive, "
                                   "reallocation vs raw transfer, end to end vs TRL) and write DIR/report.json "
                                   "and DIR/report.md. A failing section is reported and the others still run.")
    p.add_argument("--out", default="bench-report", metavar="DIR", help="report directory (default: bench-report)")
    p.add_argument("--quick", action="store_true", help="small settings: the whole bench in about 3 minutes")
    p.add_argument("--only", metavar="SECTION,...",
                   help="sections to run: plans, paper, search, realloc, peer, validation (default: all)")
    p.add_argument("--readme", action="store_true",
                   help="print the README numbers table from an existing report (DIR or --report) and exit")
    p.add_argument("--readme-into", metavar="README.md",
                   help="write that table between the bench-table markers of this file and exit")
    p.add_argument("--report", metavar="FILE", help="report.json to render with --readme (default: DIR/report.json)")
    p.set_defaults(func=cmd_bench)
    return parser


ENVIRONMENT_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS})
"""OSErrors about a file the user named or a disk they can free: reported like user errors."""


def _bug_log(exc: BaseException) -> Path:
    """Write the traceback of an unexpected exception to a log file; returns its path."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = Path(tempfile.gettempdir()) / f"realloc-bug-{stamp}-{os.getpid()}.log"
    text = "".join(traceback.format_exception(exc))
    path.write_text(f"realloc {' '.join(sys.argv[1:])}\n\n{text}")
    return path


def _guard(func: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """Run a command: a UserError is one line and exit 2; anything else is a bug, exit 1."""
    if args.debug:
        return func(args)
    try:
        return func(args)
    except UserError as exc:
        message = " ".join(str(exc).split()) or type(exc).__name__
        print(f"realloc: error: {message}", file=sys.stderr)
        return EXIT_USER_ERROR
    except OSError as exc:
        if exc.errno in ENVIRONMENT_ERRNOS and exc.filename:
            print(f"realloc: error: {exc.filename}: {exc.strerror} (free space or fix the permissions, "
                  "then run again)", file=sys.stderr)
            return EXIT_USER_ERROR
        return _report_bug(exc)
    except KeyboardInterrupt as exc:
        signum = getattr(exc, "signum", signal.SIGINT)
        print(f"realloc: interrupted ({signal.Signals(signum).name}); what was written stays: a run keeps its "
              "complete checkpoints, and `train.resume=true` goes on from the newest", file=sys.stderr)
        return 128 + int(signum)
    except Exception as exc:  # noqa: BLE001 - everything else is a bug, reported as one
        return _report_bug(exc)


def _report_bug(exc: BaseException) -> int:
    try:
        where = f"the traceback is in {_bug_log(exc)}"
    except OSError:
        where = "the traceback could not be written to a log"
    message = " ".join(str(exc).split())[:300] or "(no message)"
    print(f"realloc: bug: {type(exc).__name__}: {message} -- this is a bug in realloc, not a mistake in your "
          f"input; {where}; rerun with --debug to print it, and please report it", file=sys.stderr)
    return EXIT_BUG


def parse_args(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse with options and `key=value` overrides in any order (`realloc run --plan F k=v`
    and `realloc run k=v --plan F` mean the same). argparse stops filling a variable-length
    positional at the first option, so the words after it come back as extras; they join
    the command's positional words here."""
    args, extra = parser.parse_known_args(argv)
    words_field = next((f for f in ("words", "overrides") if hasattr(args, f)), None)
    stray = [w for w in extra if w.startswith("-")]
    if extra and (words_field is None or stray):
        parser.error(f"unrecognized arguments: {' '.join(stray or extra)}")
    if extra and words_field is not None:
        setattr(args, words_field, [*getattr(args, words_field), *extra])
    return args


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parse_args(parser, argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USER_ERROR
    return _guard(args.func, args)


if __name__ == "__main__":
    sys.exit(main())
