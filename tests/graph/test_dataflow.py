"""DataflowGraph: edges, orders, concurrency, and every validation error."""

import pytest

from graph.dataflow import DataflowGraph
from graph.errors import GraphError
from graph.spec import CallKind
from tests.graph.helpers import call, model

ACTOR = model("actor", trainable=True)
REF = model("ref")
CRITIC = model("critic", trainable=True, value_head=True)
RULE = model("reward", rule="arithmetic_exact")


def small_rl(**kw):
    calls = [
        call("gen", "actor", "generate", ["prompts"], ["seq", "old_logp"]),
        call("rew", "reward", "rule_reward", ["seq", "answers"], ["rewards"]),
        call("ref", "ref", "logprobs", ["seq"], ["ref_logp"]),
        call("val", "critic", "values", ["seq"], ["values"]),
        call("train", "actor", "ppo_actor", ["seq", "old_logp", "ref_logp", "rewards", "values"]),
        call("ctrain", "critic", "ppo_critic", ["seq", "old_logp", "ref_logp", "rewards", "values"]),
    ]
    return DataflowGraph(models=[ACTOR, REF, CRITIC, RULE], calls=calls, dataset_keys=["prompts", "answers"])


def test_edges_and_orders():
    g = small_rl()
    assert g.topological_order()[0] == "gen"
    assert set(g.topological_order()[-2:]) == {"train", "ctrain"}
    data = {(e.src, e.dst, e.key) for e in g.data_edges()}
    assert ("gen", "rew", "seq") in data and ("val", "train", "values") in data
    assert ("gen", "train", "old_logp") in data
    # params: calls that read a model's weights come before its train call
    param = {(e.src, e.dst) for e in g.param_edges()}
    assert param == {("gen", "train"), ("val", "ctrain")}
    # across iterations: the train of M precedes every call on M (itself included)
    cross = {(e.src, e.dst) for e in g.cross_edges}
    assert cross == {("train", "gen"), ("train", "train"), ("ctrain", "val"), ("ctrain", "ctrain")}
    assert g.producer("seq") == "gen" and g.producer("prompts") is None
    assert [c.name for c in g.calls_of("actor")] == ["gen", "train"]
    assert g.train_call("critic").name == "ctrain" and g.train_call("ref") is None


def test_concurrency():
    g = small_rl()
    # the three scorers only depend on generation
    for a, b in [("rew", "ref"), ("rew", "val"), ("ref", "val")]:
        assert g.may_run_concurrently(a, b)
    assert not g.may_run_concurrently("gen", "rew")
    assert not g.may_run_concurrently("val", "ctrain")
    # both train calls need all scores, but neither needs the other
    assert g.may_run_concurrently("train", "ctrain")
    pairs = {frozenset(p) for p in g.concurrent_pairs()}
    expected = [("rew", "ref"), ("rew", "val"), ("ref", "val"), ("train", "ctrain")]
    assert pairs == {frozenset(p) for p in expected}


def test_param_edge_orders_reader_before_trainer():
    # an inference on the actor that nothing else orders still precedes the actor's train
    calls = [call("train", "actor", "sft", ["prompt_answer"]),
             call("probe", "actor", "logprobs", ["prompt_answer"], ["lp"])]
    g = DataflowGraph(models=[ACTOR], calls=calls, dataset_keys=["prompt_answer"])
    assert g.topological_order() == ("probe", "train")
    assert g.depends_on("train", "probe")


@pytest.mark.parametrize("build,message", [
    (lambda: [call("a", "actor", "logprobs", ["prompts"], ["x"]),
              call("a", "ref", "logprobs", ["prompts"], ["y"])],
     "duplicate call name 'a'"),
    (lambda: [call("a", "actor", "logprobs", ["prompts"], ["x"]),
              call("b", "ref", "logprobs", ["prompts"], ["x"])],
     "key 'x' is produced by two calls, 'a' and 'b'"),
    (lambda: [call("a", "actor", "logprobs", ["y"], ["x"]),
              call("b", "ref", "logprobs", ["x"], ["y"])],
     "cycle"),
    (lambda: [call("a", "actor", "logprobs", ["promts"], ["x"])],
     "call 'a' consumes key 'promts' \\(did you mean 'prompts'\\?\\), which no call produces"),
    (lambda: [call("a", "actr", "logprobs", ["prompts"], ["x"])],
     "call 'a': unknown model role 'actr' \\(did you mean 'actor'\\?\\)"),
    (lambda: [call("a", "ref", "sft", ["prompts"])],
     "call 'a' trains model 'ref', which is not trainable; set models.ref.trainable=true"),
    (lambda: [call("a", "actor", "sft", ["prompts"], kind=CallKind.INFERENCE)],
     "interface 'sft' is a train interface but the call's kind is inference"),
    (lambda: [call("a", "actor", "sft", ["prompts"]), call("b", "actor", "sft", ["prompts"])],
     "model 'actor' is trained by two calls"),
    (lambda: [call("a", "reward", "logprobs", ["prompts"], ["x"])],
     "rule-based reward 'arithmetic_exact' and has no weights"),
    (lambda: [call("a", "actor", "rule_reward", ["prompts", "prompts"], ["x"])],
     "needs a rule-based model"),
    (lambda: [call("a", "critic", "generate", ["prompts"], ["x"])],
     "has a value head and cannot generate"),
    (lambda: [call("a", "actor", "logprobs", ["prompts"], ["prompts"])],
     "produces key 'prompts', which the dataset already provides"),
    (lambda: [],
     "the graph has no calls"),
])
def test_validation_errors(build, message):
    with pytest.raises(GraphError, match=message):
        DataflowGraph(models=[ACTOR, REF, CRITIC, RULE], calls=build(), dataset_keys=["prompts"])


def test_cycle_message_names_calls_and_keys():
    calls = [call("a", "actor", "logprobs", ["y"], ["x"]), call("b", "ref", "logprobs", ["x"], ["y"])]
    with pytest.raises(GraphError) as info:
        DataflowGraph(models=[ACTOR, REF], calls=calls)
    text = str(info.value)
    assert "a -> b" in text and "key 'x'" in text and "key 'y'" in text


def test_keys_must_fit_the_interface_roles():
    with pytest.raises(GraphError, match="interface 'ppo_actor' takes 4 to 8 input keys \\(sequences, logprobs, "
                                         "ref_logprobs, rewards, values, ptx, pool_scores, pool_responses, by position; "
                                         "pool_scores only as key rehearsal_scores; pool_responses only as key "
                                         "rehearsal_responses\\), got 2"):
        DataflowGraph(models=[ACTOR], calls=[call("t", "actor", "ppo_actor", ["p", "q"])], dataset_keys=["p", "q"])
    with pytest.raises(GraphError, match="interface 'sft' produces at most 0 output keys"):
        DataflowGraph(models=[ACTOR], calls=[call("t", "actor", "sft", ["p"], ["stats"])], dataset_keys=["p"])


def test_duplicate_model_role():
    with pytest.raises(GraphError, match="model role 'actor' is defined twice"):
        DataflowGraph(models=[ACTOR, ACTOR], calls=[call("a", "actor", "logprobs", ["p"], ["x"])],
                      dataset_keys=["p"])


def test_args_type_must_match_interface():
    from dataclasses import replace

    bad = replace(call("a", "actor", "logprobs", ["p"], ["x"]), interface="values")
    with pytest.raises(GraphError, match="args are LogprobsArgs, interface 'values' takes ValuesArgs"):
        DataflowGraph(models=[ACTOR], calls=[bad], dataset_keys=["p"])
