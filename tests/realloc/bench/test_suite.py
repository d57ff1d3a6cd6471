"""realloc bench: report rendering from hand-made results, options, the CLI on a cheap section."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from graph.errors import UserError
from realloc.bench import suite as bench
from realloc.cli import main

MACHINE = {"cores": 2, "load_avg_before": [1.5, 1.0, 0.5], "load_avg_after": [2.25, 1.0, 0.5],
           "torch": "2.13.0", "transformers": "5.23.0", "trl": None, "megatron_core": "0.16.1",
           "python": "3.11.9", "platform": "Linux", "date_utc": "2026-11-21 18:00 UTC",
           "git_commit": "0123456789abcdef", "git_dirty": False}


def synthetic_report() -> dict:
    plans = {"experiments": {"grpo_tiny": {
        "experiment": "grpo_tiny", "devices": 4, "iterations": 12, "warmup": 3, "errors": {"colocated-dp": "no fit"},
        "plans": {"search": {"measured_s": 0.1, "estimated_s": 0.05, "search_speedup": 1.0},
                  "symmetric": {"measured_s": 0.2, "estimated_s": 0.07, "search_speedup": 2.0},
                  "disaggregated": {"measured_s": 0.15, "estimated_s": 0.06, "search_speedup": 1.5}}}}}
    search = {"seeds": 2, "budget_s": 0.5, "optimal": 1, "worst_gap": 0.25, "exact_time_s": 3.0,
              "anneal_time_s": 1.0,
              "rows": [{"seed": 1, "devices": 4, "calls": 2, "plans": 40, "exact_s": 1.0, "anneal_s": 1.0,
                        "optimal": True, "gap": 0.0, "exact_time_s": 1.0, "anneal_time_s": 0.5},
                       {"seed": 2, "devices": 8, "calls": 3, "plans": 900, "exact_s": 2.0, "anneal_s": 2.5,
                        "optimal": False, "gap": 0.25, "exact_time_s": 2.0, "anneal_time_s": 0.5}]}
    peer = {"trl_installed": True, "sizes": {"tiny": {
        "settings": {"size": "tiny", "prompts": 8, "group_size": 4, "max_new_tokens": 8, "temperature": 1.0,
                     "threads": 2, "devices": 2, "steps": 8, "warmup": 3, "rounds": 3, "equal_lengths": True},
        "cores": 2, "load_before": 0.1, "load_after": 1.9, "equal_tokens": True,
        "errors": {"realloc, 2 workers (planned)": "RuntimeError: boom"},
        "systems": {"TRL GRPOTrainer": {"step_s": 0.064, "samples_per_s": 500.0, "tokens_per_s": 4000.0,
                                        "tokens_per_s_range": [3900.0, 4100.0], "tokens_per_step": 256.0,
                                        "generate_share": 0.4, "threads": 2, "workers": 1,
                                        "speedup_vs_trl": 1.0, "peak_rss_gib": 1.5,
                                        "phase_s": {"generate": 0.026, "score": 0.001, "reference": 0.005,
                                                    "train": 0.032}},
                    "realloc, 1 worker x 2 threads": {
                        "step_s": 0.128, "samples_per_s": 250.0, "tokens_per_s": 2000.0,
                        "tokens_per_s_range": [1500.0, 2100.0], "tokens_per_step": 256.0, "generate_share": 0.5,
                        "threads": 2, "workers": 1, "speedup_vs_trl": 0.5, "call_s": {"gen": 0.06, "train": 0.05},
                        "phase_s": {"generate": 0.06, "score": 0.002, "reference": 0.01, "train": 0.05,
                                    "other": 0.006}}}}}}
    return {"schema_version": 1, "command": "realloc bench --out out", "quick": False,
            "sections_run": ["plans", "search", "realloc", "peer", "validation"], "machine": MACHINE,
            "elapsed_s": 100.0,
            "sections": {
                "plans": {"title": "Plans", "status": "ok", "elapsed_s": 10.0, "data": plans},
                "search": {"title": "Search", "status": "ok", "elapsed_s": 5.0, "data": search},
                "realloc": {"title": "Realloc", "status": "failed", "elapsed_s": 1.0,
                            "error": "WorkerFailed: rank 2 failed: out of memory"},
                "peer": {"title": "Peer", "status": "ok", "elapsed_s": 50.0, "data": peer},
                "validation": {"title": "Validation", "status": "skipped", "elapsed_s": 0.0,
                               "note": "not importable"},
            }}


def test_markdown_of_a_synthetic_report() -> None:
    md = bench.render_markdown(synthetic_report())
    lines = md.splitlines()
    assert lines[0] == "# realloc bench"
    assert "Reproduce: `realloc bench --out out`" in md
    assert ("Machine: 2 cores, 1-minute load 1.5 -> 2.2 (before -> after), torch 2.13.0, transformers 5.23.0, "
            "TRL not installed, Python 3.11.9; 2026-11-21 18:00 UTC; commit 0123456789ab; 100 s in all.") in lines
    # plans: one row per plan, speedups as given, and the heuristic without a plan
    assert "| search | 0.100 | 0.0500 | 1.00x |" in lines
    assert "| symmetric | 0.200 | 0.0700 | 2.00x |" in lines
    assert "- colocated-dp: no plan (no fit)" in lines
    assert "median s/iteration of the last 9 of 12 iterations" in md
    # search
    assert "found the exact optimum in **1/2** random instances (worst gap 25.0%)" in md
    assert "| 2 | 8 | 3 | 900 | 2.00000 | 2.50000 | no | 2.0 | 0.5 |" in lines
    # failed and skipped sections say so in one line each
    assert "**failed** after 1.0 s: WorkerFailed: rank 2 failed: out of memory" in lines
    assert "_skipped: not importable_" in lines
    # peer: both systems, the failure of the third
    assert ("**tiny**: GRPO, size tiny: 8 prompts x 4 samples, 8 new tokens, every response exactly "
            "max_new_tokens long in both systems (equal generated tokens); 2 cores for every system; 3 interleaved "
            "rounds of 8 measured steps after 3 warm-up; median [min-max] over rounds; temperature 1.0, fp32.") in lines
    assert "Machine: 2 cores, 1-minute load 0.1 -> 1.9." in lines
    assert "| TRL GRPOTrainer | 1 x 2 | 4000 | 3900-4100 | 500.0 | 0.064 | 256.0 | 40% | 1.5 | 1.00x |" in lines
    assert ("| realloc, 1 worker x 2 threads | 1 x 2 | 2000 | 1500-2100 | 250.0 | 0.128 | 256.0 | 50% | - | "
            "0.50x |") in lines
    assert "| TRL GRPOTrainer | 0.026 | 0.001 | 0.005 | 0.032 | - |" in lines
    assert "| realloc, 1 worker x 2 threads | 0.060 | 0.002 | 0.010 | 0.050 | 0.006 |" in lines
    assert "realloc's median seconds per call: realloc, 1 worker x 2 threads: gen 0.060, train 0.050." in lines
    assert "- realloc, 2 workers (planned): failed: RuntimeError: boom" in lines
    # headings in section order
    order = [md.index(f"(`{n}`)") for n in ("plans", "search", "realloc", "peer", "validation")]
    assert order == sorted(order)


def test_readme_table_from_a_report() -> None:
    table = bench.render_readme_table(synthetic_report())
    lines = table.splitlines()
    assert lines[:2] == ["| benchmark | result |", "|---|---|"]
    # best heuristic is disaggregated (0.15 s < 0.2 s), 1.5x slower than the searched plan
    assert ("| searched plan, grpo_tiny, 4 CPU workers (measured) | 0.100 s/iteration; speedup over the best "
            "heuristic (disaggregated): 1.50x |") in lines
    assert "| annealing vs exhaustive search | optimum in 1/2 instances; annealing 1.0 s, exhaustive 3.0 s |" in lines
    assert ("| GRPO end to end, tiny model, 2 cores for every system | TRL GRPOTrainer: 4000 tokens/s; "
            "realloc, 1 worker x 2 threads: 2000 tokens/s (0.50x TRL) |") in lines
    assert not any("reallocation" in line for line in lines)  # the failed section gives no row
    assert lines[-1].endswith("by `realloc bench --out out`; details in the report.")


def test_update_readme_between_markers(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{bench.README_START}\nold numbers\n{bench.README_END}\noutro\n")
    bench.update_readme(readme, synthetic_report())
    text = readme.read_text()
    assert "old numbers" not in text
    assert text.startswith("intro\n") and text.endswith("outro\n")
    assert bench.render_readme_table(synthetic_report()) in text
    readme.write_text("no markers\n")
    with pytest.raises(ValueError, match="lacks the markers"):
        bench.update_readme(readme, synthetic_report())


def test_report_round_trip_and_schema_check(tmp_path: Path) -> None:
    js, md = bench.write_report(synthetic_report(), tmp_path)
    assert bench.load_report(tmp_path) == synthetic_report()
    assert md.read_text() == bench.render_markdown(synthetic_report())
    js.write_text(json.dumps({**synthetic_report(), "schema_version": 99}))
    with pytest.raises(ValueError, match="schema_version 99"):
        bench.load_report(js)
    with pytest.raises(UserError, match="realloc bench --out"):
        bench.load_report(tmp_path / "missing.json")


def test_md_table_escapes_pipes_and_dashes_missing() -> None:
    assert bench.md_table(["a", "b"], [["x|y", None], [float("nan"), 3]]) == [
        "| a | b |", "|---|---|", "| x\\|y | - |", "| - | 3 |"]


def test_unknown_section_is_a_one_line_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ValueError, match="unknown section 'plan'; known: plans, paper, search"):
        bench.parse_only("plan,search")
    assert bench.parse_only(" peer, search ") == ("peer", "search")
    assert main(["bench", "--only", "nope"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("realloc: error: --only: unknown section 'nope'")


def test_failing_section_is_reported_and_others_run() -> None:
    def boom(quick: bool, note: bench.Note) -> dict:
        raise RuntimeError("out of\nmemory")

    def fine(quick: bool, note: bench.Note) -> dict:
        note("working")
        return {"quick": quick}

    bad = bench.run_section(bench.Section(name="x", title="X", run=boom, render=lambda d: []), True, print)
    good = bench.run_section(bench.Section(name="y", title="Y", run=fine, render=lambda d: []), True, print)
    assert bad["status"] == "failed" and bad["error"] == "RuntimeError: out of memory"
    assert good["status"] == "ok" and good["data"] == {"quick": True}


def test_cli_quick_search_section(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "rep"
    assert main(["bench", "--quick", "--only", "search", "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["schema_version"] == 1 and report["quick"] is True
    assert report["sections_run"] == ["search"]
    assert report["command"] == f"realloc bench --out {out} --quick --only search"
    assert report["machine"]["cores"] >= 1 and len(report["machine"]["load_avg_after"]) == 3
    entry = report["sections"]["search"]
    assert entry["status"] == "ok", entry.get("error")
    rows = entry["data"]["rows"]
    assert len(rows) == 2
    for r in rows:  # annealing can never beat the exhaustive optimum
        assert r["anneal_s"] >= r["exact_s"] * (1 - 1e-9)
        assert r["optimal"] == (r["anneal_s"] <= r["exact_s"] * (1 + 1e-9))
    assert entry["data"]["optimal"] == sum(r["optimal"] for r in rows)
    printed = capsys.readouterr().out
    assert printed == (out / "report.md").read_text()
    assert "## Search: exhaustive on small instances, time and quality at scale (`search`)" in printed
    scale = entry["data"]["scale"]
    assert [r["command"] for r in scale["timings"]] == ["realloc plan ppo_tiny --dry-run"]
    assert scale["quality"]["larger_budget_never_worse"]  # the same seed, 0.3 and 3 nominal s
    assert main(["bench", "--readme", "--out", str(out)]) == 0
    assert "| annealing vs exhaustive search | optimum in" in capsys.readouterr().out


def test_validation_summary_rendering_and_fallback() -> None:
    data = {"summary": {"per_kind": {"generate": {"count": 10, "median": 0.125, "worst": 0.5}},
                        "iteration": {"median": 0.1, "worst": 0.2}, "spearman": 0.95,
                        "goals": {"median": 0.15, "worst": 0.35, "spearman": 0.9}}}
    lines = bench.get_section("validation").render(data)
    assert "| generate | 10 | 12.5% | 50.0% |" in lines
    assert ("Iteration time: median error 10.0%, worst 20.0%; Spearman rank correlation of predicted vs "
            "measured iteration times: 0.950.") in lines
    # goals judged against the worst call kind: 12.5% median meets 15%, 50% worst misses 35%
    assert "| median error, every call kind | <= 15.0% | 12.5% | yes |" in lines
    assert "| worst error, every call kind | <= 35.0% | 50.0% | no |" in lines
    assert "| Spearman | >= 0.9 | 0.950 | yes |" in lines
    # an unknown shape falls back to a key/value table of its scalars
    assert bench.get_section("validation").render({"a": {"b": 0.123456}, "c": [1, 2]}) == [
        "| key | value |", "|---|---|", "| a.b | 0.1235 |", ""]


def test_fusion_section_renders_measured_and_published_rows() -> None:
    row = {"measured_s": 1.0, "estimated_s": 0.9, "estimate_error": -0.1, "measured_speedup": 1.0,
           "estimated_speedup": 1.0, "estimated_measured_lengths_s": 0.8, "streamed": []}
    data = {"measured": {"experiment": "ppo_longtail_tiny", "devices": 4, "iterations": 6, "warmup": 2,
                         "load_before": 1.0, "load_after": 1.5,
                         "plans": {"unfused": row, "split_fused": {**row, "measured_s": 0.5, "measured_speedup": 2.0,
                                                                   "streamed": [["actor_gen", "ref_inf"]]}}},
            "published": [{"setting": "S", "unfused": {"iteration_s": 10.0},
                           "fused": {"iteration_s": 8.0, "speedup": 1.25}, "auto": {"iteration_s": None},
                           "intra": {"iteration_s": 9.0, "speedup": 1.111},
                           "off_policy": {"iteration_s": 5.0, "speedup": 2.0}}]}
    text = "\n".join(bench.get_section("fusion").render(data))
    assert "| split_fused | 0.5 | 0.9 | -10.0% | 2.00x | 1.00x |" in text
    assert "| S | 10.0 | 8.0 (1.25x) | 9.0 (1.111x) | no plan | 5.0 (2.0x) | - | - | - |" in text
    old = {**data, "published": [{k: v for k, v in data["published"][0].items() if k != "intra"}]}
    assert "| S | 10.0 | 8.0 (1.25x) | - | no plan | 5.0 (2.0x) | - | - | - |" in "\n".join(
        bench.get_section("fusion").render(old))
    rows = bench._readme_rows({"fusion": {"status": "ok", "data": data}})
    assert rows[0][1].startswith("unfused: 1.00 s (1.00x; est. 0.90 s); split_fused: 0.50 s (2.00x")


def test_engine_section_renders_ratios_and_readme_rows() -> None:
    data = {"sizes": {"tiny": {"model": "tiny", "params_m": 0.1, "threads": 2, "clock": "wall", "rounds": 5,
                               "repeats": 5, "batch": 32, "seq": 16, "prompt": 8, "new_tokens": 8,
                               "rows": [{"what": "train step", "engine_tok_s": 950.0, "hf_tok_s": 1000.0,
                                         "ratio": 0.95},
                                        {"what": "generate", "engine_tok_s": 300.4, "hf_tok_s": 400.0,
                                         "ratio": 0.751}]}}}
    lines = bench.get_section("engine").render(data)
    assert lines[0] == ("**tiny** (0.1M parameters): batch 32 x 16 tokens (prompt 8, 8 new), 2 thread(s) for both, "
                        "median of 5 alternations, wall time.")
    assert "| train step | 950 | 1000 | 0.95x |" in lines
    assert "| generate | 300 | 400 | 0.75x |" in lines
    rows = bench._readme_rows({"engine": {"status": "ok", "data": data}})
    assert rows == [["engine vs transformers, tiny model, 2 thread(s) each",
                     "train step 0.95x, generate 0.75x of transformers' tokens/s"]]


def test_a_plan_that_leaves_workers_idle_says_how_many_work() -> None:
    from realloc.bench.peer_trl import workers_text

    assert workers_text({"workers": 2, "threads": 2, "busy_workers": 1}) == "2 x 2 (1 busy)"
    assert workers_text({"workers": 2, "threads": 1, "busy_workers": 2}) == "2 x 1"
    assert workers_text({"threads": 2}) == "1 x 2"  # TRL: one process
