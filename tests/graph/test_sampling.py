"""Which calls dynamic sampling reruns, and how often the planner expects them to run."""

import dataclasses

import pytest

from graph.dataflow import DataflowGraph
from graph.dataset_keys import dataset_keys
from graph.errors import GraphError
from graph.sampling import dynamic_sampling, expected_runs
from graph.templates import TemplateParams, build_template
from tests.graph.helpers import model

MODELS = {"actor": model("actor", trainable=True), "ref": model("ref"),
          "reward": model("reward", rule="arithmetic_exact")}


def _graph(name, **train):
    calls = build_template(name, TemplateParams(batch_size=4, prompt_len=8, group_size=4,
                                                generate={"max_new_tokens": 4}, train=train), MODELS)
    return DataflowGraph(models=list(MODELS.values()), calls=calls, dataset_keys=dataset_keys("prompts_with_answers"))


def test_dapo_reruns_generation_and_reward():
    ds = dynamic_sampling(_graph("dapo", max_sampling_rounds=5, expected_sampling_rounds=2.5))
    assert ds is not None
    assert ds.calls == ("actor_gen", "reward_inf")
    # with a KL term, not the reference either: it runs once, on the kept batch
    assert dynamic_sampling(_graph("dapo", kl_coef=0.01)).calls == ("actor_gen", "reward_inf")
    assert (ds.rewards_key, ds.rewards_call, ds.group_size, ds.max_rounds) == ("rewards", "reward_inf", 4, 5)
    assert expected_runs(_graph("dapo", expected_sampling_rounds=2.5)) == {"actor_gen": 2.5, "reward_inf": 2.5}


def test_no_dynamic_sampling_runs_everything_once():
    assert dynamic_sampling(_graph("dr_grpo")) is None
    assert expected_runs(_graph("dapo", dynamic_sampling=False)) == {}
    assert expected_runs(_graph("dapo", expected_sampling_rounds=1.0)) == {}


def test_rewards_from_the_dataset_cannot_be_resampled():
    g = _graph("dapo")
    train = g.call("actor_train")
    calls = [c for c in g.calls if c.name != "reward_inf"]
    calls[-1] = dataclasses.replace(train, inputs=("seq", "old_logp", "answers"))
    bad = DataflowGraph(models=list(MODELS.values()), calls=calls, dataset_keys=dataset_keys("prompts_with_answers"))
    with pytest.raises(GraphError, match="the dataset provides them"):
        dynamic_sampling(bad)


def test_the_rerun_calls_must_come_first():
    g = _graph("dapo", kl_coef=0.01)  # with a reference call
    calls = list(g.calls)
    reordered = [calls[2], calls[0], calls[1], calls[3]]  # ref_inf declared before the generation
    bad = DataflowGraph(models=list(MODELS.values()), calls=reordered,
                        dataset_keys=dataset_keys("prompts_with_answers"))
    with pytest.raises(GraphError, match="declare them first"):
        dynamic_sampling(bad)
