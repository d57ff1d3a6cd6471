"""`realloc bench`: the benchmark suite as one command, with a Markdown and a JSON report.

Sections (each calls a module of `realloc.bench`, whose `main()` also runs on its own as
`experiments/bench/NAME.py` in a checkout or `python -m realloc.bench.NAME`):

| name | what | module |
|---|---|---|
| plans | searched plan vs each heuristic, measured on the CPU workers (ppo_tiny, grpo_tiny) | plans_measured |
| paper | the same, estimated by the cost model at the published 8-128 GPU scales | planner_paper |
| search | annealing vs exhaustive search on small instances: quality and time | planner_exact |
| realloc | parameter reallocation throughput vs a raw p2p transfer of the same bytes | realloc_throughput |
| peer | end to end vs TRL's GRPOTrainer: generated tokens/s on equal cores, time per phase | peer_trl |
| engine | the Megatron engine vs transformers at equal threads: train step, generation, log-probs | engine_throughput |
| validation | the cost model's estimates vs measured times | validate_cost_model |
| fusion | fused vs unfused, one-step off-policy vs on-policy: measured (ppo_longtail_tiny) and estimated (published scales) | fusion |

`run_bench` writes `OUT/report.json` (schema below) and `OUT/report.md`. A section that
fails is recorded as failed with its one-line error; the others still run.

report.json, schema_version 1 (keys are only added within a version):
`schema_version`, `command` (what reproduces the report), `quick`, `sections_run`,
`machine` {`cores`, `load_avg_before`, `load_avg_after` (1/5/15-minute), `torch`,
`transformers`, `trl` (or null), `python`, `platform`, `date_utc`, `git_commit`,
`git_dirty`}, `elapsed_s`, and `sections` {NAME: {`title`, `status` (ok | failed |
skipped), `elapsed_s`, `error` or `note` (one line), `data` (the script's result dict)}}.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
import os
import platform
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from graph.errors import UserError
from graph.files import atomic_write

SCHEMA_VERSION = 1
REPO_ROOT = Path(__file__).resolve().parents[2]
README_START, README_END = "<!-- bench-table:start -->", "<!-- bench-table:end -->"

Note = Callable[[str], None]
"""Progress callback: one short line saying what a section is doing now."""


class SectionSkipped(Exception):
    """Raised by a section that cannot run here (e.g. its optional dependency is missing)."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Section:
    """One part of the report: how to run it and how to render its data as Markdown."""

    name: str
    """Name used by --only."""
    title: str
    """Heading in the report."""
    run: Callable[[bool, Note], dict[str, Any]]
    """(quick, note) -> the section's data (JSON-able)."""
    render: Callable[[Mapping[str, Any]], list[str]]
    """data -> Markdown lines (tables)."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class BenchOptions:
    """What `realloc bench` runs and where it writes."""

    out: Path
    """Directory that receives report.json and report.md."""
    quick: bool = False
    """Small settings (the whole bench in about 3 minutes) instead of the full ones."""
    only: tuple[str, ...] = ()
    """Sections to run; empty runs all."""

    def __post_init__(self) -> None:
        known = [s.name for s in SECTIONS]
        unknown = [n for n in self.only if n not in known]
        if unknown:
            raise UserError(f"--only: unknown section {unknown[0]!r}; known: {', '.join(known)}")

    def command(self) -> str:
        """The command line that reproduces a report with these options."""
        parts = ["realloc bench", f"--out {self.out}"]
        if self.quick:
            parts.append("--quick")
        if self.only:
            parts.append(f"--only {','.join(self.only)}")
        return " ".join(parts)


def parse_only(text: str | None) -> tuple[str, ...]:
    """'plans, peer' -> ('plans', 'peer'); unknown names raise ValueError naming the known ones."""
    names = tuple(n.strip() for n in (text or "").split(",") if n.strip())
    BenchOptions(out=Path("."), only=names)  # validates
    return names


# --------------------------------------------------------------------------- Markdown helpers


def md_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    """A Markdown table; floats keep their given rounding, None prints as a dash."""
    def cell(v: Any) -> str:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return "-"
        return str(v).replace("|", "\\|")

    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return lines


def _x(v: float | None) -> str | None:
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.2f}x"


# --------------------------------------------------------------------------- sections: run


def _run_plans(quick: bool, note: Note) -> dict[str, Any]:
    from realloc.bench.plans_measured import measure_plans

    exps = ("grpo_tiny",) if quick else ("ppo_tiny", "grpo_tiny")
    iterations, warmup = (3, 1) if quick else (12, 3)
    heuristics = ("symmetric",) if quick else None
    out = {}
    for name in exps:
        note(f"{name}: searched plan and heuristics, {iterations} iterations on 4 workers")
        out[name] = measure_plans(name, iterations=iterations, warmup=warmup, heuristics=heuristics)
    return {"experiments": out}


def _run_paper(quick: bool, note: Note) -> dict[str, Any]:
    from realloc.bench.planner_paper import paper_experiments, plan_paper

    names = paper_experiments()[:1] if quick else paper_experiments()
    budget = 0.5 if quick else 5.0
    note(f"planning {len(names)} published-scale experiments, {budget:g} nominal s each")
    return plan_paper(names, budget=budget, on_row=lambda r: note(f"{r['experiment']}: {r['plan_iter_s']} s/iter"))


def _run_search(quick: bool, note: Note) -> dict[str, Any]:
    from realloc.bench.planner_exact import exact_vs_anneal

    seeds, budget, max_plans = (2, 0.2, 5000) if quick else (20, 0.5, 200_000)
    out = exact_vs_anneal(seeds=seeds, budget=budget, max_plans=max_plans,
                          on_seed=lambda r: note(f"seed {r['seed']}: {r['plans']} plans"))
    from realloc.bench.planner_scale import search_goals

    return {**out, "scale": search_goals(quick=quick, note=note)}


def _run_realloc(quick: bool, note: Note) -> dict[str, Any]:
    from realloc.bench.realloc_throughput import measure_throughput

    if quick:
        note("hidden 256, 2 layers, 2 layout pairs, 4 workers")
        return measure_throughput(hidden=256, layers=2, repeats=1, pairs=[0, 2])
    note("hidden 1024, 8 layers, 5 layout pairs, 4 workers")
    return measure_throughput(hidden=1024, layers=8, repeats=3)


def _run_peer(quick: bool, note: Note) -> dict[str, Any]:
    from realloc.bench.peer_trl import INSTALL_HINT, PeerSettings, compare, trl_available

    if not trl_available():
        note("TRL not installed: realloc alone")
    runs = [PeerSettings(size="tiny", steps=2, warmup=1, rounds=1)] if quick else [
        PeerSettings(size="tiny", steps=8, warmup=3, rounds=3),
        PeerSettings(size="smollm2-135m-body", steps=3, warmup=1, rounds=3),
    ]
    out = {}
    for s in runs:
        note(f"{s.size}: {s.rounds} interleaved rounds of TRL, realloc on 1 worker and on {s.devices}, "
             f"{s.threads} cores each, {s.warmup}+{s.steps} steps")
        out[s.size] = compare(s, log=note)
    return {"sizes": out, "trl_installed": trl_available(), **({} if trl_available() else {"note": INSTALL_HINT})}


def _lazy(module: str, name: str) -> Callable[..., Any]:
    """`module.name`, imported at the call: the section modules may import torch."""
    def call(*args: Any) -> Any:
        import importlib

        return getattr(importlib.import_module(f"realloc.bench.{module}"), name)(*args)
    return call


def _run_checkpoint(quick: bool, note: Note) -> dict[str, Any]:
    from realloc.bench.checkpoint import measure

    note("checkpoint: save/load vs raw write/read on 2 workers")
    return measure(quick=quick)


def _run_validation(quick: bool, note: Note) -> dict[str, Any]:
    try:
        from realloc.bench.validate_cost_model import run_validation
    except ImportError as exc:
        raise SectionSkipped(f"realloc.bench.validate_cost_model is not importable ({exc})") from None
    note("estimates vs measured runs")
    return run_validation(quick=quick, out=None)


def _run_fusion(quick: bool, note: Note) -> dict[str, Any]:
    from realloc.bench.fusion import estimate_published, measure_fusion

    iterations, warmup = (3, 1) if quick else (6, 2)
    note(f"ppo_longtail_tiny: unfused, fused, off-policy; {iterations} iterations on 4 workers")
    measured = measure_fusion(iterations=iterations, warmup=warmup, budget=0.5 if quick else 1.0)
    note("published settings with long-tailed lengths (estimated)")
    return {"measured": measured, "published": estimate_published(budget=0.5 if quick else 1.0, quick=quick)}


# --------------------------------------------------------------------------- sections: render


def _render_plans(data: Mapping[str, Any]) -> list[str]:
    lines: list[str] = []
    for name, r in data["experiments"].items():
        lines.append(f"**{name}** on {r['devices']} CPU workers: median s/iteration of the last "
                     f"{r['iterations'] - r['warmup']} of {r['iterations']} iterations.")
        lines.append("")
        lines += md_table(["plan", "measured s/iter", "estimated s/iter", "searched plan's speedup"],
                          [[p, f"{v['measured_s']:.3f}", f"{v['estimated_s']:.4f}", _x(v["search_speedup"])]
                           for p, v in r["plans"].items()])
        lines += [f"- {h}: no plan ({e})" for h, e in r.get("errors", {}).items()]
        lines.append("")
    return lines


def _render_paper(data: Mapping[str, Any]) -> list[str]:
    heur = list(data["summary"]) or sorted({h for r in data["rows"] for h in r["heuristics"]})
    rows = [[r["experiment"], r["devices"], f"{r['search_cpu_s']:.1f}", f"{r['plan_iter_s']:.2f}"]
            + [_x(r["heuristics"].get(h, {}).get("speedup")) or "no plan" for h in heur] for r in data["rows"]]
    lines = [f"Estimated by the cost model (search budget {data.get('budget_s')} nominal s); not measured.", ""]
    lines += md_table(["experiment", "GPUs", "search CPU s", "plan s/iter"] + [f"vs {h}" for h in heur], rows)
    lines += ["", "Geometric-mean speedup of the searched plan over each heuristic, next to ReaLHF's claim:", ""]
    lines += md_table(["heuristic", "geo-mean", "range", "paper"],
                      [[h, _x(c["geomean"]), f"{c['min']:.2f}-{c['max']:.2f}x over {c['n']}", c.get("paper", "")]
                       for h, c in data["summary"].items()])
    return lines + [""]


def _render_search(data: Mapping[str, Any]) -> list[str]:
    lines = [f"Annealing ({data['budget_s']} nominal s) found the exact optimum in **{data['optimal']}/"
             f"{data['seeds']}** random instances (worst gap {data['worst_gap']:.1%}); exhaustive search took "
             f"{data['exact_time_s']:.1f} s in all, annealing {data['anneal_time_s']:.1f} s.", ""]
    lines += md_table(["seed", "devices", "calls", "plans", "exact s/iter", "annealing s/iter", "optimal",
                       "exact s", "annealing s"],
                      [[r["seed"], r["devices"], r["calls"], r["plans"], f"{r['exact_s']:.5f}", f"{r['anneal_s']:.5f}",
                        "yes" if r["optimal"] else "no", r["exact_time_s"], r["anneal_time_s"]] for r in data["rows"]])
    if "scale" in data:
        from realloc.bench.planner_scale import render_goals

        lines += [""] + render_goals(data["scale"], md_table)
    return lines + [""]


def _render_realloc(data: Mapping[str, Any]) -> list[str]:
    variants = list(data["pairs"][0]["raw_over"]) if data["pairs"] else []
    lines = [f"{data['params_m']}M-parameter fp32 model on {data['workers']} gloo workers, median of "
             f"{data['repeats']}; raw/ours = raw transfer time / our time (1.0 = as fast as raw).", ""]
    lines += md_table(["layout pair", "MiB moved", "ours s", "raw s"] + [f"raw/{v}" for v in variants],
                      [[p["pair"], p["mib"], p["seconds"][variants[0]] if variants else None, p["seconds"]["raw"]]
                       + [f"{p['raw_over'][v]:.2f}" for v in variants] for p in data["pairs"]])
    return lines + [""]


def _render_peer(data: Mapping[str, Any]) -> list[str]:
    from realloc.bench.peer_trl import PHASES, headline, workers_text

    lines: list[str] = []
    if data.get("note"):
        lines += [f"_{data['note']}_", ""]
    for size, r in data["sizes"].items():
        s = r["settings"]
        lines.append(f"**{size}**: GRPO, {headline(s)}; temperature {s['temperature']}, fp32.")
        if "cores" in r:
            lines.append(f"Machine: {r['cores']} cores, 1-minute load {r['load_before']} -> {r['load_after']}"
                         f"{'' if r.get('equal_tokens', True) else '; generated tokens per step differ'}.")
        lines.append("")
        lines += md_table(["system", "workers x threads", "generated tokens/s", "min-max", "samples/s", "s/step",
                           "tokens/step", "generate share", "peak RSS GiB", "vs TRL (tokens/s)"],
                          [[n, workers_text(v), f"{v['tokens_per_s']:.0f}",
                            "-" if "tokens_per_s_range" not in v else
                            "{:.0f}-{:.0f}".format(*v["tokens_per_s_range"]),
                            f"{v['samples_per_s']:.1f}", f"{v['step_s']:.3f}", v["tokens_per_step"],
                            f"{v['generate_share']:.0%}", v.get("peak_rss_gib"), _x(v.get("speedup_vs_trl"))]
                           for n, v in r["systems"].items()])
        phases = {n: v["phase_s"] for n, v in r["systems"].items() if v.get("phase_s")}
        if phases:
            lines += ["", "Median seconds per step and phase (TRL's train: the rest of its step; realloc's other: "
                      "time between calls):", ""]
            lines += md_table(["system", *PHASES], [[n, *(f"{ph[p]:.3f}" if p in ph else "-" for p in PHASES)]
                                                    for n, ph in phases.items()])
        calls = {n: v["call_s"] for n, v in r["systems"].items() if v.get("call_s")}
        if calls:
            lines += ["", "realloc's median seconds per call: " + "; ".join(
                f"{n}: " + ", ".join(f"{c} {t:.3f}" for c, t in cs.items()) for n, cs in calls.items()) + "."]
        lines += [f"- {n}: failed: {e}" for n, e in r.get("errors", {}).items()]
        lines.append("")
    return lines


def _flat(data: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for k, v in data.items():
        if isinstance(v, Mapping):
            out += _flat(v, f"{prefix}{k}.")
        elif isinstance(v, int | float | str | bool) or v is None:
            out.append((f"{prefix}{k}", v))
    return out


def _render_generic(data: Mapping[str, Any]) -> list[str]:
    """Every scalar of a nested result as a key/value table (lists are left to report.json)."""
    return md_table(["key", "value"], [[k, round(v, 4) if isinstance(v, float) else v]
                                       for k, v in _flat(data)]) + [""]


def _render_validation(data: Mapping[str, Any]) -> list[str]:
    """The validation script's summary: error per call kind, iteration error, rank correlation."""
    summ = data.get("summary")
    if not isinstance(summ, Mapping) or not isinstance(summ.get("per_kind"), Mapping):
        return _render_generic(data)
    lines = md_table(["call kind", "calls", "median relative error", "worst relative error"],
                     [[k, v.get("count"), _pct(v.get("median")), _pct(v.get("worst"))]
                      for k, v in summ["per_kind"].items()])
    it = summ.get("iteration") or {}
    rho = summ.get("spearman")
    lines += ["", f"Iteration time: median error {_pct(it.get('median'))}, worst {_pct(it.get('worst'))}; "
              "Spearman rank correlation of predicted vs measured iteration times: "
              f"{rho:.3f}." if isinstance(rho, int | float) else f"{rho}."]
    goals = summ.get("goals")
    if isinstance(goals, Mapping):
        lines += ["", *md_table(["goal", "target", "achieved", "met"], _goal_rows(summ, goals))]
    return lines + [""]


def _goal_rows(summ: Mapping[str, Any], goals: Mapping[str, Any]) -> list[list[Any]]:
    """Each validation goal against the worst call kind (errors) or the correlation."""
    rows = []
    kinds = [v for v in summ["per_kind"].values() if isinstance(v, Mapping)]
    for name, target in goals.items():
        if name in ("median", "worst"):
            values = [v.get(name) for v in kinds if isinstance(v.get(name), int | float)]
            achieved = max(values) if values else None
            met = achieved is not None and achieved <= target
            rows.append([f"{name} error, every call kind", f"<= {_pct(target)}", _pct(achieved), "yes" if met else "no"])
        elif name == "spearman":
            rho = summ.get("spearman")
            met = isinstance(rho, int | float) and rho >= target
            rows.append(["Spearman", f">= {target}", f"{rho:.3f}" if isinstance(rho, int | float) else rho,
                         "yes" if met else "no"])
    return rows


def _pct(v: Any) -> str | None:
    return f"{v:.1%}" if isinstance(v, int | float) and not math.isnan(v) else None


SECTIONS: tuple[Section, ...] = (
    Section(name="plans", title="Planner vs heuristics, measured on the CPU cluster", run=_run_plans,
            render=_render_plans),
    Section(name="paper", title="Planner vs heuristics, estimated at the published scales", run=_run_paper,
            render=_render_paper),
    Section(name="search", title="Search: exhaustive on small instances, time and quality at scale", run=_run_search,
            render=_render_search),
    Section(name="realloc", title="Parameter reallocation vs a raw transfer", run=_run_realloc,
            render=_render_realloc),
    Section(name="peer", title="End to end vs TRL (GRPO)", run=_run_peer, render=_render_peer),
    Section(name="engine", title="Engine vs transformers at equal threads", run=_lazy("engine_section", "run"),
            render=_lazy("engine_section", "render")),
    Section(name="checkpoint", title="Checkpoints: save/load throughput and memory vs raw I/O",
            run=_run_checkpoint, render=_lazy("checkpoint", "render")),
    Section(name="validation", title="Cost model vs measured times", run=_run_validation,
            render=_render_validation),
    Section(name="fusion", title="Stage overlap: fusion and one-step off-policy", run=_run_fusion,
            render=_lazy("fusion", "render")),
)


def get_section(name: str) -> Section:
    for s in SECTIONS:
        if s.name == name:
            return s
    raise UserError(f"unknown section {name!r}; known: {', '.join(s.name for s in SECTIONS)}")


# --------------------------------------------------------------------------- machine, running


def _git(*args: str) -> str | None:
    try:
        proc = subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


def _version(module: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(module)
    except PackageNotFoundError:
        return None


def machine_info() -> dict[str, Any]:
    """Cores, load, library versions, date and git commit of this run."""
    return {
        "cores": os.cpu_count(), "load_avg_before": [round(x, 2) for x in os.getloadavg()],
        "torch": _version("torch"), "transformers": _version("transformers"), "trl": _version("trl"),
        "megatron_core": _version("megatron-core"), "python": platform.python_version(),
        "platform": platform.platform(),
        "date_utc": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "git_commit": _git("rev-parse", "HEAD"), "git_dirty": bool(_git("status", "--porcelain")),
    }


def run_section(section: Section, quick: bool, note: Note) -> dict[str, Any]:
    """Run one section; a failure becomes status 'failed' with a one-line error."""
    t0 = time.perf_counter()
    entry: dict[str, Any] = {"title": section.title}
    try:
        entry["data"] = section.run(quick, note)
        entry["status"] = "ok"
    except SectionSkipped as exc:
        entry.update(status="skipped", note=" ".join(str(exc).split()))
    except Exception as exc:  # reported, the other sections still run
        entry.update(status="failed", error=" ".join(f"{type(exc).__name__}: {exc}".split())[:500])
    entry["elapsed_s"] = round(time.perf_counter() - t0, 1)
    return entry


def run_bench(options: BenchOptions, *, show_progress: bool = True) -> dict[str, Any]:
    """Run the chosen sections, write OUT/report.json and OUT/report.md; the report dict."""
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    chosen = [s for s in SECTIONS if not options.only or s.name in options.only]
    report: dict[str, Any] = {"schema_version": SCHEMA_VERSION, "command": options.command(),
                              "quick": options.quick, "sections_run": [s.name for s in chosen],
                              "machine": machine_info(), "sections": {}}
    t0 = time.perf_counter()
    console = Console(stderr=True, highlight=False)
    with Progress(SpinnerColumn(), TextColumn("[bold]{task.fields[section]}[/] {task.description}"),
                  TimeElapsedColumn(), console=console, disable=not show_progress, transient=False) as progress:
        for section in chosen:
            task = progress.add_task("starting", section=section.name, total=1)
            entry = run_section(section, options.quick,
                                lambda text, task=task: progress.update(task, description=text))
            progress.update(task, completed=1, description=f"{entry['status']} in {entry['elapsed_s']} s"
                            + (f": {entry.get('error') or entry.get('note')}" if entry["status"] != "ok" else ""))
            report["sections"][section.name] = entry
    report["elapsed_s"] = round(time.perf_counter() - t0, 1)
    report["machine"]["load_avg_after"] = [round(x, 2) for x in os.getloadavg()]
    write_report(report, options.out)
    return report


def write_report(report: Mapping[str, Any], out: Path) -> tuple[Path, Path]:
    """OUT/report.json and OUT/report.md."""
    out.mkdir(parents=True, exist_ok=True)
    js, md = out / "report.json", out / "report.md"
    atomic_write(js, json.dumps(report, indent=2, default=str) + "\n")
    atomic_write(md, render_markdown(report))
    return js, md


# --------------------------------------------------------------------------- rendering


def render_markdown(report: Mapping[str, Any]) -> str:
    """The whole report as Markdown: machine, then one part per section."""
    m = report["machine"]
    load = f"{m['load_avg_before'][0]:.1f}" + (f" -> {m['load_avg_after'][0]:.1f}" if "load_avg_after" in m else "")
    lines = [
        "# realloc bench", "",
        f"Reproduce: `{report['command']}`" + (" (quick settings)" if report["quick"] else ""), "",
        f"Machine: {m['cores']} cores, 1-minute load {load} (before -> after), torch {m['torch']}, "
        f"transformers {m['transformers']}, TRL {m['trl'] or 'not installed'}, Python {m['python']}; "
        f"{m['date_utc']}; commit {(m['git_commit'] or 'unknown')[:12]}{' (dirty)' if m['git_dirty'] else ''}"
        + (f"; {report['elapsed_s']:.0f} s in all" if "elapsed_s" in report else "") + ".", "",
    ]
    for name, entry in report["sections"].items():
        lines += [f"## {entry['title']} (`{name}`)", ""]
        if entry["status"] == "failed":
            lines += [f"**failed** after {entry['elapsed_s']} s: {entry['error']}", ""]
            continue
        if entry["status"] == "skipped":
            lines += [f"_skipped: {entry['note']}_", ""]
            continue
        try:
            lines += get_section(name).render(entry["data"])
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            lines += [f"_cannot render ({type(exc).__name__}: {exc}); see report.json_", ""]
    return "\n".join(lines).rstrip() + "\n"


def _readme_rows(sections: Mapping[str, Any]) -> list[list[str]]:
    rows: list[list[str]] = []

    def ok(name: str) -> Mapping[str, Any] | None:
        entry = sections.get(name)
        return entry["data"] if entry and entry["status"] == "ok" else None

    if (d := ok("plans")):
        for exp, r in d["experiments"].items():
            others = {p: v for p, v in r["plans"].items() if p != "search"}
            best = min(others, key=lambda p: others[p]["measured_s"]) if others else None
            text = f"{r['plans']['search']['measured_s']:.3f} s/iteration"
            if best:
                text += f"; speedup over the best heuristic ({best}): {others[best]['search_speedup']:.2f}x"
            rows.append([f"searched plan, {exp}, {r['devices']} CPU workers (measured)", text])
    if (d := ok("paper")):
        rows.append([f"searched plan at 8-128 GPUs, {len(d['rows'])} experiments (estimated)",
                     "; ".join(f"{c['geomean']:.2f}x over {h}" for h, c in d["summary"].items())])
    if (d := ok("search")):
        rows.append(["annealing vs exhaustive search", f"optimum in {d['optimal']}/{d['seeds']} instances; "
                     f"annealing {d['anneal_time_s']:.1f} s, exhaustive {d['exact_time_s']:.1f} s"])
        for r in d.get("scale", {}).get("timings", []):
            rows.append([f"`{r['command']}` (goal < {r['goal_s']:g} s)",
                         f"{r['wall_s']:.1f} s, {r['plans_simulated']} plans (load {r['load_before']})"])
    if (d := ok("realloc")):
        ratios = [p["raw_over"][v] for p in d["pairs"] for v in p["raw_over"]]
        if ratios:
            rows.append([f"reallocation throughput, {d['params_m']}M model",
                         f"{min(ratios):.2f}-{max(ratios):.2f}x a raw p2p copy of the same bytes"])
    if (d := ok("fusion")):
        from realloc.bench.fusion import readme_row

        rows.append(readme_row(d))
    if (d := ok("peer")):
        for size, r in d["sizes"].items():
            cores = r["settings"].get("threads")
            cells = [f"{n}: {v['tokens_per_s']:.0f} tokens/s ({_x(v.get('speedup_vs_trl')) or '-'} TRL)"
                     if v.get("speedup_vs_trl") is not None and n != "TRL GRPOTrainer"
                     else f"{n}: {v['tokens_per_s']:.0f} tokens/s" for n, v in r["systems"].items()]
            rows.append([f"GRPO end to end, {size} model, {cores} cores for every system",
                         "; ".join(cells) or "no system ran"])
    if (d := ok("engine")):
        from realloc.bench.engine_section import readme_rows

        rows += readme_rows(d)
    return rows


def render_readme_table(report: Mapping[str, Any]) -> str:
    """The README's numbers table, from a report (with the command that reproduces it)."""
    m = report["machine"]
    lines = md_table(["benchmark", "result"], _readme_rows(report["sections"]))
    lines += ["", f"Measured {m['date_utc']} on {m['cores']} CPU cores (1-minute load "
              f"{m['load_avg_before'][0]:.1f} at the start) by `{report['command']}`; details in the report."]
    return "\n".join(lines) + "\n"


def update_readme(readme: Path, report: Mapping[str, Any]) -> Path:
    """Replace the block between the bench-table markers of `readme` with the rendered table."""
    text = readme.read_text()
    if README_START not in text or README_END not in text:
        raise UserError(f"{readme} lacks the markers {README_START} and {README_END}; add them where the "
                         "numbers table belongs")
    head, rest = text.split(README_START, 1)
    _, tail = rest.split(README_END, 1)
    atomic_write(readme, f"{head}{README_START}\n{render_readme_table(report)}{README_END}{tail}")
    return readme


def load_report(path: Path) -> dict[str, Any]:
    """A report.json (or the directory holding one), checked for its schema version."""
    p = path / "report.json" if path.is_dir() else path
    if not p.is_file():
        raise UserError(f"no bench report at {str(p)!r}; run `realloc bench --out DIR` first")
    report = json.loads(p.read_text())
    if report.get("schema_version") != SCHEMA_VERSION:
        raise UserError(f"{p}: schema_version {report.get('schema_version')!r}, this realloc reads "
                         f"{SCHEMA_VERSION}; rerun `realloc bench`")
    return report
