"""A user's own task end to end on one worker: a parquet dataset with a custom prompt column
and extra columns, two reward functions (one TRL-style, one returning None at times), an
overlong prompt dropped, and a validation file scored every 2 iterations. The reward
function records what it was given, so the test checks that each completion arrived with its
own prompt and its own row's columns (GRPO's groups included)."""

from __future__ import annotations

import dataclasses
import json
import textwrap

import pytest

from graph.placement.layout import DeviceMesh, Layout
from realloc.experiment import load_experiment
from realloc.run import make_job
from runtime.execution.launch import LaunchSpec, launch
from tests.runtime import dist_checks

pytestmark = pytest.mark.slow

REWARDS = textwrap.dedent('''
    import json, os

    def exact(prompts, completions, answer, level, **kwargs):
        with open(os.environ["REWARD_LOG"], "a") as fh:
            for p, c, a, lv in zip(prompts, completions, answer, level):
                fh.write(json.dumps({"prompt": p, "completion": c, "answer": a, "level": lv}) + "\\n")
        return [1.0 if c.strip() == a else 0.0 for c, a in zip(completions, answer)]

    def short(completions, **kwargs):
        return [None if len(c) == 0 else 1.0 / len(c) for c in completions]
''')


def _experiment(tmp_path):
    import pandas as pd

    rows = [{"question": f"{a}+{b}=", "answer": str(a + b), "level": a} for a in range(5) for b in range(5)]
    rows.append({"question": "1+2+3+4+5+6=", "answer": "21", "level": 9})  # 13 tokens: dropped
    pd.DataFrame(rows).to_parquet(tmp_path / "train.parquet")
    pd.DataFrame(rows[:6]).to_parquet(tmp_path / "valid.parquet")
    (tmp_path / "my_rewards.py").write_text(REWARDS)
    (tmp_path / "task.yaml").write_text(textwrap.dedent('''\
        defaults:
          - /common/tiny
          - /common/tiny_models
          - _self_
        name: my_task
        models:
          ref: {arch: "${models.actor.arch}", init_from: actor}
          reward:
            functions:
              - {function: my_rewards.py:exact, weight: 1.0}
              - {function: my_rewards.py:short, weight: 0.5}
            time_limit_s: 30
        data:
          format: prompts
          path: train.parquet
          eval_path: valid.parquet
          prompt_key: question
          max_prompt_len: 8
        graph:
          template: grpo
          batch_size: 4
          group_size: 2
          generate: {max_new_tokens: 3, temperature: 0.8}
          train: {lr: 1.0e-3}
        train:
          iterations: 3
          eval_every: 2
        cluster: {devices_per_node: 1}
        '''))
    exp = load_experiment(str(tmp_path / "task.yaml"),
                          [f"data.path={tmp_path / 'train.parquet'}", f"data.eval_path={tmp_path / 'valid.parquet'}",
                           f"train.run_dir={tmp_path / 'run'}"])
    return exp, rows


def test_user_task_end_to_end(tmp_path, monkeypatch):
    exp, rows = _experiment(tmp_path)
    monkeypatch.setenv("REWARD_LOG", str(tmp_path / "calls.jsonl"))
    one = Layout(mesh=DeviceMesh.span(0, 1), dp=1, tp=1, pp=1)
    job = dataclasses.replace(make_job(exp, {c.name: one for c in exp.graph.calls}), run_dir=str(tmp_path / "run"))
    results = launch(dist_checks.run_jobs, ([job],), LaunchSpec(nproc_per_node=1, log_dir=str(tmp_path / "logs")))
    history = results[0][0]
    assert [r["iteration"] for r in history] == [1, 2, 3]
    for r in history:  # each function is its own metric
        assert 0.0 <= r["reward_inf/reward_exact"] <= 1.0 and 0.0 < r["reward_inf/reward_short"] <= 1.0
    # validation at iterations 1 and 3 (every 2), greedy answers to the 6 validation prompts
    assert [r["iteration"] for r in history if "eval/reward" in r] == [1, 3]
    assert history[0]["eval/samples"] == 6.0 and "eval/reward_exact" in history[0]
    # every completion arrived with its own prompt and its own row's columns
    by_question = {r["question"]: r for r in rows}
    calls = [json.loads(line) for line in (tmp_path / "calls.jsonl").read_text().splitlines()]
    assert len(calls) == 3 * 4 * 2 + 2 * 6  # 3 iterations x 8 samples, plus 2 validations of 6
    for c in calls:
        row = by_question[c["prompt"]]
        assert (c["answer"], c["level"]) == (row["answer"], row["level"])
        assert c["prompt"] != "1+2+3+4+5+6="  # dropped: over data.max_prompt_len
    logs = "".join(p.read_text() for p in (tmp_path / "logs").rglob("*.log"))
    assert "dropped 1 of 26 prompts longer than data.max_prompt_len=8 tokens" in logs
