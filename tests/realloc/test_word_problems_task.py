"""The shipped word-problem task: its data file is what its script writes, its reward functions
score hand-written replies as documented, and (with the `smollm2` extra) the experiment runs
two short iterations on SmolLM2-135M-Instruct with prompts through the chat template."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import re

import pytest

from realloc.experiment import EXPERIMENTS_DIR
from runtime.engine.real_models import smollm2_available

TASKS = EXPERIMENTS_DIR / "tasks"


def _module(name: str):
    spec = importlib.util.spec_from_file_location(name, TASKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_shipped_files_are_what_the_script_writes():
    make = _module("make_word_problems")
    for name, n, seed in (("word_problems.jsonl", 512, 1), ("word_problems_valid.jsonl", 32, 2)):
        shipped = [json.loads(line) for line in (TASKS / name).read_text().splitlines()]
        assert shipped == make.rows(n, seed), name
    for row in make.rows(50, 3):  # every answer is the value of its story, worked independently
        text = row["prompt"][1]["content"]
        nums = [int(t) for t in re.findall(r"\d+", text)]
        want = {"add": nums[0] + nums[1], "subtract": nums[0] - nums[1], "multiply": nums[0] * nums[1]}
        assert int(row["answer"]) == want[row["operation"]], text


def test_reward_functions_by_hand():
    r = _module("word_problems_reward")
    replies = ["3 + 4 = 7. The answer is 7.", "The answer is 7 because 3+4", "It is 7", "The answer is 8",
               [{"role": "assistant", "content": "So, the answer is 7"}], "1,000 - 993 = 7"]
    answers = ["7"] * 6
    assert r.correct(prompts=[None] * 6, completions=replies, answer=answers) == [1.0, 0.0, 1.0, 0.0, 1.0, 1.0]
    assert r.answer_format(completions=replies) == [1.0, 0.5, 0.0, 1.0, 1.0, 0.0]


@pytest.mark.slow
@pytest.mark.skipif(not smollm2_available(), reason="optional extra 'smollm2' absent")
def test_smollm2_word_problems_runs_two_iterations(tmp_path):
    from graph.placement.layout import DeviceMesh, Layout
    from realloc.experiment import load_experiment
    from realloc.run import make_job
    from runtime.execution.launch import LaunchSpec, launch
    from tests.runtime import dist_checks

    exp = load_experiment("grpo_smollm2_words", ["train.iterations=2", "graph.batch_size=2", "graph.group_size=2",
                                                 "graph.generate.max_new_tokens=6", "train.eval_every=0",
                                                 "data.eval_path=null", "cluster.devices_per_node=1"])
    one = Layout(mesh=DeviceMesh.span(0, 1), dp=1, tp=1, pp=1)
    job = dataclasses.replace(make_job(exp, {c.name: one for c in exp.graph.calls}), run_dir=str(tmp_path / "run"))
    history = launch(dist_checks.run_jobs, ([job],), LaunchSpec(nproc_per_node=1, log_dir=str(tmp_path / "logs")))[0][0]
    assert [r["iteration"] for r in history] == [1, 2]
    for rec in history:
        assert {"reward_inf/reward_correct", "reward_inf/reward_answer_format"} <= set(rec)
        assert 0.0 <= rec["reward_inf/reward"] <= 1.5
        assert 0 < rec["actor_gen/response_len"] <= 6
