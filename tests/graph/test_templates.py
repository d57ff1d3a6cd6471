"""Every template's graph shape: calls, kinds, keys, batch sizes and dependencies."""

import dataclasses

import pytest

from graph.dataflow import DataflowGraph
from graph.dataset_keys import dataset_keys
from graph.errors import GraphError
from graph.spec import CallKind
from graph.templates import TemplateParams, build_template, check_ppo_calls, known_templates
from tests.graph.helpers import model

MODELS = {
    "actor": model("actor", trainable=True),
    "ref": model("ref"),
    "critic": model("critic", trainable=True, value_head=True),
    "reward": model("reward", value_head=True, trainable=True),
}
RULE = {**MODELS, "reward": model("reward", rule="arithmetic_exact")}


def build(name, models, fmt, **params):
    params = {"batch_size": 8, "prompt_len": 10, **params}
    calls = build_template(name, TemplateParams(**params), models)
    used = {c.model for c in calls}
    return DataflowGraph(models=[m for r, m in models.items() if r in used], calls=calls,
                         dataset_keys=dataset_keys(fmt))


def shape(g):
    return [(c.name, c.model, c.kind.value, c.interface, c.batch_size) for c in g.calls]


def test_known_templates():
    assert known_templates() == ("am", "dapo", "dpo", "dr_grpo", "grpo", "gspo", "ppo", "reinforce_pp",
                                 "remax", "rloo", "rm", "sft")


def test_ppo_with_reward_model():
    g = build("ppo", MODELS, "prompts", generate={"max_new_tokens": 20}, response_len=15)
    assert sorted(shape(g)) == sorted([
        ("actor_gen", "actor", "generate", "generate", 8),
        ("reward_inf", "reward", "inference", "reward_model", 8),
        ("ref_inf", "ref", "inference", "logprobs", 8),
        ("critic_inf", "critic", "inference", "values", 8),
        ("actor_train", "actor", "train", "ppo_actor", 8),
        ("critic_train", "critic", "train", "ppo_critic", 8),
    ])
    gen = g.call("actor_gen")
    assert (gen.prompt_len, gen.response_len, gen.max_new_tokens) == (10, 15, 20)
    assert g.topological_order()[0] == "actor_gen"
    for a, b in [("reward_inf", "ref_inf"), ("ref_inf", "critic_inf"), ("actor_train", "critic_train")]:
        assert g.may_run_concurrently(a, b)
    assert set(g.call("actor_train").inputs) == {"seq", "old_logp", "ref_logp", "rewards", "values"}
    assert {(e.src, e.dst) for e in g.cross_edges} >= {("actor_train", "actor_gen"),
                                                       ("critic_train", "critic_inf")}


def test_ppo_with_rule_reward_reads_answers():
    g = build("ppo", RULE, "prompts_with_answers")
    rew = g.call("reward_inf")
    assert rew.interface == "rule_reward" and set(rew.inputs) == {"seq", "answers"}
    # response length defaults to max_new_tokens (32 by default)
    assert g.call("actor_train").response_len == 32
    with pytest.raises(GraphError, match="consumes key 'answers'"):
        build("ppo", RULE, "prompts")


def test_grpo_groups_multiply_downstream_batches():
    g = build("grpo", RULE, "prompts_with_answers", group_size=4)
    assert [c.name for c in g.calls] == ["actor_gen", "reward_inf", "ref_inf", "actor_train"]
    assert "critic" not in g.models
    assert g.call("actor_gen").batch_size == 8 and g.call("actor_gen").args.num_samples == 4
    for name in ("reward_inf", "ref_inf", "actor_train"):
        assert g.call(name).batch_size == 32
    assert g.call("actor_train").args.group_size == 4
    with pytest.raises(GraphError, match="group_size >= 2"):
        build("grpo", RULE, "prompts_with_answers")
    with pytest.raises(GraphError, match="disagrees with graph.group_size"):
        build("grpo", RULE, "prompts_with_answers", group_size=4, generate={"num_samples": 2})


def test_remax_has_sampled_and_greedy_generation():
    g = build("remax", RULE, "prompts_with_answers")
    gens = [c for c in g.calls if c.kind is CallKind.GENERATE]
    assert {c.name for c in gens} == {"actor_gen", "actor_greedy"}
    assert g.call("actor_greedy").args.greedy and not g.call("actor_gen").args.greedy
    assert g.may_run_concurrently("actor_gen", "actor_greedy")
    assert g.producer("baseline_rewards") == "baseline_inf"
    assert "baseline_rewards" in g.call("actor_train").inputs


def test_sft_rm_dpo():
    g = build("sft", MODELS, "prompt_answer", response_len=5)
    assert shape(g) == [("actor_train", "actor", "train", "sft", 8)]
    g = build("rm", MODELS, "preference", response_len=5)
    assert shape(g) == [("reward_train", "reward", "train", "rw_pairwise", 16)]
    g = build("dpo", MODELS, "preference", response_len=5)
    assert shape(g) == [("ref_inf", "ref", "inference", "logprobs", 16),
                        ("actor_train", "actor", "train", "dpo", 16)]
    with pytest.raises(GraphError, match="data.response_len must be set"):
        build("sft", MODELS, "prompt_answer")
    with pytest.raises(GraphError, match="must be a neural model"):
        build("rm", RULE, "preference", response_len=5)


def test_template_errors():
    with pytest.raises(GraphError, match="unknown template 'ppp' \\(did you mean 'ppo'\\?\\); known: am, dapo, dpo, dr_grpo, grpo"):
        build("ppp", MODELS, "prompts")
    with pytest.raises(GraphError, match="template 'ppo' needs models actor, critic, ref, reward; missing: critic"):
        build("ppo", {k: v for k, v in MODELS.items() if k != "critic"}, "prompts")
    with pytest.raises(GraphError, match="unknown argument 'eps' for interface 'ppo_actor'"):
        build("ppo", MODELS, "prompts", train={"eps": 0.1})
    with pytest.raises(GraphError, match="exceeds graph.generate.max_new_tokens"):
        build("ppo", MODELS, "prompts", response_len=64)


def test_ppo_critic_takes_the_actors_reward_shaping():
    train = {"kl_coef": 0.05, "adaptive_kl_target": 2.0, "adaptive_kl_horizon": 500,
             "normalize_reward": True, "reward_clip": 3.0, "gamma": 0.99, "lam": 0.9, "kl_in_reward": False}
    g = build("ppo", RULE, "prompts_with_answers", train=train, critic_train={"lr": 1e-4, "kl_coef": 0.05})
    critic = g.call("critic_train").args
    assert {k: getattr(critic, k) for k in train} == train and critic.lr == 1e-4
    with pytest.raises(GraphError, match="graph.critic_train.gamma=0.5 disagrees with the actor's gamma=0.99"):
        build("ppo", RULE, "prompts_with_answers", train=train, critic_train={"gamma": 0.5})


def test_ppo_with_ptx_reads_the_ptx_dataset_key():
    calls = build_template("ppo", TemplateParams(batch_size=8, prompt_len=10, ptx=True,
                                                 train={"ptx_coef": 0.5}), RULE)
    g = DataflowGraph(models=list(RULE.values()), calls=calls,
                      dataset_keys=dataset_keys("prompts_with_answers", ptx_format="prompt_answer"))
    assert g.call("actor_train").inputs[-1] == "ptx" and "ptx" in g.dataset_keys
    assert g.producer("ptx") is None and "ptx" not in g.call("critic_train").inputs
    with pytest.raises(GraphError, match="template 'grpo' does not use it"):
        build_template("grpo", TemplateParams(batch_size=8, prompt_len=10, group_size=2, ptx=True), RULE)
    with pytest.raises(GraphError, match="data.ptx.format: 'preference' is not one of prompt_answer"):
        dataset_keys("prompts", ptx_format="preference")


def test_check_ppo_calls_for_custom_graphs():
    keys = frozenset(dataset_keys("prompts_with_answers", ptx_format="prompt_answer"))
    calls = build_template("ppo", TemplateParams(batch_size=8, prompt_len=10, ptx=True,
                                                 train={"ptx_coef": 0.5}), RULE)
    check_ppo_calls(calls, keys)  # the template's own graph passes
    with pytest.raises(GraphError, match="ptx input 'ptx' must be a dataset key"):
        check_ppo_calls(calls, frozenset({"prompts", "answers"}))
    no_ptx = build_template("ppo", TemplateParams(batch_size=8, prompt_len=10, train={"ptx_coef": 0.5}), RULE)
    with pytest.raises(GraphError, match="ptx_coef=0.5 needs ptx data"):
        check_ppo_calls(no_ptx, keys)
    unused = build_template("ppo", TemplateParams(batch_size=8, prompt_len=10, ptx=True), RULE)
    with pytest.raises(GraphError, match="reads ptx data but ptx_coef is 0"):
        check_ppo_calls(unused, keys)
    plain = build_template("ppo", TemplateParams(batch_size=8, prompt_len=10), RULE)
    critic = next(c for c in plain if c.interface == "ppo_critic")
    odd = dataclasses.replace(critic, args=dataclasses.replace(critic.args, reward_clip=1.0))
    with pytest.raises(GraphError, match="reward_clip=1.0 differs from reward_clip=10.0 of 'actor_train'"):
        check_ppo_calls([c for c in plain if c is not critic] + [odd], keys)


def test_advantage_model_template_and_reward_form():
    g = build("am", MODELS, "preference", response_len=5)
    assert shape(g) == [("reward_train", "reward", "train", "am_pairwise", 16)]
    assert g.call("reward_train").args.bound == 2.5
    with pytest.raises(GraphError, match="must be a neural model"):
        build("am", RULE, "preference", response_len=5)
    g = build("ppo", MODELS, "prompts", generate={"max_new_tokens": 20}, reward_form="advantage")
    assert g.call("reward_inf").interface == "advantage_model"
    g = build("ppo", RULE, "prompts_with_answers", generate={"max_new_tokens": 20}, reward_form="advantage")
    assert g.call("reward_inf").interface == "rule_reward"  # a rule has no advantage form
    with pytest.raises(GraphError, match="graph.reward_form must be reward or advantage"):
        build("ppo", MODELS, "prompts", generate={"max_new_tokens": 20}, reward_form="adv")


@pytest.mark.parametrize("name,want", [
    ("rloo", {"advantage": "rloo", "kl_in_reward": True, "loss_agg": "seq_mean_token_mean"}),
    ("reinforce_pp", {"advantage": "reinforce_pp", "kl_in_reward": True, "loss_agg": "token_mean"}),
    ("gspo", {"advantage": "grpo", "ratio": "sequence", "eps_low": 3e-4, "eps_high": 4e-4}),
    ("dr_grpo", {"advantage": "group_mean", "loss_agg": "seq_mean_token_sum_norm", "max_response_len": 6}),
    ("dapo", {"eps_low": 0.2, "eps_high": 0.28, "loss_agg": "token_mean", "dynamic_sampling": True,
              "kl_coef": 0.0}),
])
def test_policy_gradient_templates_preset_pg_actor(name, want):
    g = build(name, RULE, "prompts_with_answers", group_size=4, generate={"max_new_tokens": 6})
    kl = name in ("rloo", "reinforce_pp")  # the others have no KL term and so no reference call
    assert shape(g) == [("actor_gen", "actor", "generate", "generate", 8),
                        ("reward_inf", "reward", "inference", "rule_reward", 32),
                        *([("ref_inf", "ref", "inference", "logprobs", 32)] if kl else []),
                        ("actor_train", "actor", "train", "pg_actor", 32)]
    assert g.call("actor_train").inputs == ("seq", "old_logp", "rewards", *(("ref_logp",) if kl else ()))
    args = g.call("actor_train").args
    assert args.group_size == 4 and args.max_response_len == 6
    for key, value in want.items():
        assert getattr(args, key) == value, key


def test_policy_gradient_templates_take_overrides_and_refuse_conflicts():
    g = build("dapo", RULE, "prompts_with_answers", group_size=4, generate={"max_new_tokens": 6},
              train={"eps_high": 0.3, "overlong_buffer": 2})
    assert g.call("actor_train").args.eps_high == 0.3 and g.call("actor_train").args.overlong_buffer == 2
    with pytest.raises(GraphError, match="graph.train.group_size=2 disagrees"):
        build("rloo", RULE, "prompts_with_answers", group_size=4, train={"group_size": 2})
    with pytest.raises(GraphError, match="needs graph.group_size >= 2"):
        build("gspo", RULE, "prompts_with_answers", group_size=1)
    with pytest.raises(GraphError, match="overlong_buffer"):
        build("dapo", RULE, "prompts_with_answers", group_size=4, generate={"max_new_tokens": 6},
              train={"overlong_buffer": 7})
    # REINFORCE++ runs with one response per prompt
    assert build("reinforce_pp", RULE, "prompts_with_answers").call("actor_train").args.group_size == 1
    # a KL term brings the reference call back, and needs the reference model
    g = build("dapo", RULE, "prompts_with_answers", group_size=4, train={"kl_coef": 0.01})
    assert [c.name for c in g.calls] == ["actor_gen", "reward_inf", "ref_inf", "actor_train"]
    no_ref = {k: v for k, v in RULE.items() if k != "ref"}
    assert len(build("gspo", no_ref, "prompts_with_answers", group_size=4).calls) == 3
    with pytest.raises(GraphError, match="missing: ref"):
        build("rloo", no_ref, "prompts_with_answers", group_size=4)
    with pytest.raises(GraphError, match="kl_coef > 0 needs a reference model; define models.ref"):
        build("dapo", no_ref, "prompts_with_answers", group_size=4, train={"kl_coef": 0.01})


def test_a_custom_pg_actor_with_a_kl_term_needs_the_reference():
    from graph.catalog import make_args
    from graph.spec import Call
    from graph.templates import check_pg_calls

    call = Call(name="t", model="actor", kind=CallKind.TRAIN, interface="pg_actor",
                args=make_args("pg_actor", {"group_size": 2, "kl_coef": 0.1}), inputs=("seq", "logp", "rewards"))
    with pytest.raises(GraphError, match="needs the reference's log-probs as 4th input"):
        check_pg_calls([call])
    check_pg_calls([dataclasses.replace(call, inputs=("seq", "logp", "rewards", "ref_logp"))])


@pytest.mark.parametrize("name", ["rloo", "reinforce_pp", "gspo", "dr_grpo", "dapo"])
def test_policy_gradient_templates_train_at_the_sampling_temperature(name):
    g = build(name, RULE, "prompts_with_answers", group_size=4,
              generate={"max_new_tokens": 6, "temperature": 0.7})
    assert g.call("actor_train").args.temperature == 0.7
    if "ref_inf" in {c.name for c in g.calls}:
        assert g.call("ref_inf").args.temperature == 0.7
    with pytest.raises(GraphError, match="graph.train.temperature=0.5 disagrees with graph.generate.temperature=0.7"):
        build(name, RULE, "prompts_with_answers", group_size=4,
              generate={"max_new_tokens": 6, "temperature": 0.7}, train={"temperature": 0.5})


def test_rehearsal_pool_wiring_and_the_custom_graph_check() -> None:
    from graph.templates import with_rehearsal_pool

    params = TemplateParams(batch_size=8, prompt_len=8, response_len=2, reward_form="advantage",
                            train={"rehearsal_coef": 0.5, "rehearsal_source": "data", "rehearsal_path": "p.jsonl",
                                   "rehearsal_rank": "advantage", "rehearsal_every": 3})
    models = {r: model(r) for r in ("actor", "critic", "ref")} | {"reward": model("reward", value_head=True)}
    calls = build_template("ppo", params, models)
    with pytest.raises(GraphError, match="input 'rehearsal_scores' goes with rehearsal_rank=advantage"):
        check_ppo_calls(calls, dataset_keys("prompts"))  # not wired yet
    wired = with_rehearsal_pool(calls, 40)
    assert [c.name for c in wired] == ["actor_gen", "reward_inf", "rehearsal_score", "ref_inf", "critic_inf",
                                       "actor_train", "critic_train"]
    score = wired[2]
    assert (score.batch_size, score.args.form, score.args.every, score.micro_batches) == (40, "advantage", 3, 1)
    assert (score.prompt_len, score.response_len) == (8, 2)
    check_ppo_calls(wired, dataset_keys("prompts"))
    assert with_rehearsal_pool(wired, 40) == wired  # wiring twice adds nothing
    # without rehearsal from data: nothing changes
    plain = build_template("ppo", TemplateParams(batch_size=8, prompt_len=8, response_len=2), models)
    assert with_rehearsal_pool(plain, 0) == list(plain)


def test_rehearsal_on_the_policys_responses_wiring_and_the_custom_graph_check() -> None:
    """rehearsal_rank=advantage_policy: rehearsal_gen (after actor_gen, its sampling arguments,
    one response per pool prompt, every rehearsal_every) feeds rehearsal_score; the actor reads
    the scores and the responses. A custom actor must read the responses exactly with this rank."""
    from graph.roles import REHEARSAL_RESPONSES_KEY
    from graph.templates import with_rehearsal_pool

    train = {"rehearsal_coef": 0.5, "rehearsal_source": "data", "rehearsal_path": "p.jsonl",
             "rehearsal_rank": "advantage_policy", "rehearsal_every": 3}
    params = TemplateParams(batch_size=8, prompt_len=8, response_len=2, reward_form="advantage", train=train,
                            generate={"max_new_tokens": 5, "temperature": 0.7, "top_k": 3})
    models = {r: model(r) for r in ("actor", "critic", "ref")} | {"reward": model("reward", value_head=True)}
    calls = build_template("ppo", params, models)
    wired = with_rehearsal_pool(calls, 40)
    assert [c.name for c in wired] == ["actor_gen", "rehearsal_gen", "reward_inf", "rehearsal_score", "ref_inf",
                                       "critic_inf", "actor_train", "critic_train"]
    gen = wired[1]
    assert (gen.model, gen.kind, gen.interface, gen.batch_size, gen.max_new_tokens, gen.prompt_len,
            gen.response_len) == ("actor", CallKind.GENERATE, "pool_generate", 40, 5, 8, 2)
    assert (gen.args.temperature, gen.args.top_k, gen.args.num_samples, gen.args.every) == (0.7, 3, 1, 3)
    assert wired[3].inputs == (REHEARSAL_RESPONSES_KEY,)
    actor = wired[6]
    assert actor.inputs[5:] == ("rehearsal_scores", REHEARSAL_RESPONSES_KEY)
    check_ppo_calls(wired, dataset_keys("prompts"))
    assert with_rehearsal_pool(wired, 40) == wired
    # the responses without the rank, or the rank without them
    as_advantage = dataclasses.replace(actor, args=dataclasses.replace(actor.args, rehearsal_rank="advantage"))
    with pytest.raises(GraphError, match="input 'rehearsal_responses' goes with rehearsal_rank=advantage_policy"):
        check_ppo_calls([*wired[:6], as_advantage, wired[7]], dataset_keys("prompts"))
    no_responses = dataclasses.replace(actor, inputs=actor.inputs[:-1])
    with pytest.raises(GraphError, match="input 'rehearsal_responses' goes with rehearsal_rank=advantage_policy"):
        check_ppo_calls([*wired[:6], no_responses, wired[7]], dataset_keys("prompts"))
    # a graph without a generate call on the actor cannot generate the pool's responses
    no_gen = [c for c in calls if c.name != "actor_gen"]
    with pytest.raises(GraphError, match="advantage_policy generates the policy's responses .* has none"):
        with_rehearsal_pool(no_gen, 40)
