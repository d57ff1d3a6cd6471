"""The interface catalog: lookups, typed arguments and their errors."""

import pytest

from graph.catalog import GenerateArgs, get_interface, known_interfaces, make_args
from graph.dataset_keys import dataset_keys
from graph.errors import GraphError
from graph.spec import CallKind


def test_catalog_kinds():
    assert get_interface("generate").kind is CallKind.GENERATE
    assert get_interface("values").kind is CallKind.INFERENCE
    assert get_interface("dpo").kind is CallKind.TRAIN
    assert not get_interface("rule_reward").needs_weights
    assert get_interface("pool_generate").kind is CallKind.GENERATE
    assert len(known_interfaces()) == 17


def test_unknown_interface_lists_known():
    with pytest.raises(GraphError, match="unknown interface 'ppo_actr' \\(did you mean 'ppo_actor'\\?\\); known: advantage_model, am_pairwise, dpo, generate"):
        get_interface("ppo_actr")


def test_make_args_types():
    args = make_args("generate", {"max_new_tokens": 8, "temperature": 1, "stop_strings": ["\n"]})
    assert args == GenerateArgs(max_new_tokens=8, temperature=1.0, stop_strings=("\n",))
    assert isinstance(args.temperature, float)
    with pytest.raises(GraphError, match="argument 'max_new_tokens' of interface 'generate' must be int, got '8'"):
        make_args("generate", {"max_new_tokens": "8"})
    with pytest.raises(GraphError, match="must be bool, got 1"):
        make_args("generate", {"greedy": 1})
    with pytest.raises(GraphError, match="top_p must be in"):
        make_args("generate", {"top_p": 1.5})
    with pytest.raises(GraphError, match="kl_estimator must be k1 or k3"):
        make_args("grpo_actor", {"kl_estimator": "k2"})
    with pytest.raises(GraphError, match="where: unknown argument 'bta' for interface 'dpo' \\(did you mean 'beta'\\?\\)"):
        make_args("dpo", {"bta": 1.0}, where="where")


def test_dataset_formats():
    assert dataset_keys("prompts_with_answers") == ("prompts", "answers")
    with pytest.raises(GraphError, match="unknown dataset format 'prompt' \\(did you mean 'prompts'\\?\\)"):
        dataset_keys("prompt")

