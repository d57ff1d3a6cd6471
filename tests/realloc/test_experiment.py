"""Loading experiments: every shipped file, overrides, and every bad-input message."""

import dataclasses
import typing

import pytest

from graph.errors import GraphError
from graph.roles import input_roles
from realloc import config as schema_module
from realloc.experiment import ConfigError, known_experiments, load_experiment
from realloc.schema import field_docs, reference, resolve, suggest


@pytest.mark.parametrize("name", known_experiments())
def test_every_shipped_experiment_loads(name):
    from runtime.engine.real_models import smollm2_available

    if "smollm2" in name and not smollm2_available():
        pytest.skip("optional extra 'smollm2' absent")
    exp = load_experiment(name)
    assert exp.graph.calls
    assert exp.config.name == name.split("/")[-1]


def test_required_experiments_are_shipped():
    names = set(known_experiments())
    assert {"ppo_tiny", "grpo_tiny", "sft_tiny", "rm_tiny", "dpo_tiny", "remax_tiny"} <= names
    for actor, gpus in [("7b", 8), ("13b", 16), ("34b", 32), ("70b", 64), ("70b", 128)]:
        assert f"paper/ppo-{actor}-7b-{gpus}gpu" in names


def test_shipped_model_resolver_names_unknown_models():
    with pytest.raises(ConfigError, match=r"data.tokenizer: unknown shipped model 'nope'; known: smollm2"):
        load_experiment("grpo_tiny", ["data.tokenizer=${model_dir:nope}"])


def test_smollm2_experiments_are_the_tiny_ones_on_the_real_model():
    from runtime.engine.real_models import smollm2_available

    if not smollm2_available():
        pytest.skip("optional extra 'smollm2' absent")
    for name, tiny in (("ppo_smollm2", "ppo_tiny"), ("grpo_smollm2", "grpo_tiny")):
        exp, base = load_experiment(name), load_experiment(tiny)
        assert [c.name for c in exp.graph.calls] == [c.name for c in base.graph.calls]
        for role, model in exp.graph.models.items():
            if model.arch is not None:  # every model with weights is SmolLM2 (vocab 49152, 30 layers)
                assert (model.arch.vocab_size, model.arch.num_layers) == (49152, 30), role
        assert exp.config.data.tokenizer.endswith("smollm2-135m-instruct")


def test_paper_experiment_sizes():
    exp = load_experiment("paper/ppo-70b-7b-128gpu")
    models = exp.graph.models
    # LLaMA-2-70B: ~69B parameters; the critic is a 7B trunk with a value head
    assert 68.5e9 < models["actor"].num_params < 69.5e9
    assert models["actor"].arch.num_kv_heads == 8
    assert 6.5e9 < models["critic"].num_params < 6.8e9
    assert exp.config.cluster.nodes * exp.config.cluster.devices_per_node == 128


def test_overrides_apply():
    exp = load_experiment("ppo_tiny", ["graph.batch_size=32", "train.iterations=3",
                                       "models.actor.arch.num_layers=4", "graph.generate.top_k=5"])
    assert exp.graph.call("actor_gen").batch_size == 32
    assert exp.config.train.iterations == 3
    # the ref's arch interpolates the actor's
    assert exp.graph.models["ref"].arch.num_layers == 4
    assert exp.graph.call("actor_gen").args.top_k == 5
    assert exp.config.train.run_dir == "runs/ppo_tiny"


@pytest.mark.parametrize("name", ["ppo_tiny", "grpo_tiny", "remax_tiny"])
def test_sampling_temperature_reaches_the_policy_loss_and_the_reference(name):
    g = load_experiment(name, ["graph.generate.temperature=0.7"]).graph
    assert g.call("actor_gen").args.temperature == 0.7
    assert g.call("actor_train").args.temperature == 0.7
    assert g.call("ref_inf").args.temperature == 0.7


def test_grpovi_switch():
    exp = load_experiment("grpo_tiny", ["graph.train.variance_increase=true"])
    assert exp.graph.call("actor_train").args.variance_increase


def test_advantage_model_and_selective_rehearsal_switches():
    am = load_experiment("am_tiny")
    assert am.graph.call("reward_train").interface == "am_pairwise"
    assert am.graph.call("reward_train").args.bound == 2.5
    exp = load_experiment("ppo_tiny", ["models.reward.rule=null", "+models.reward.arch=${models.actor.arch}",
                                       "models.reward.value_head=true", "graph.reward_form=advantage",
                                       "graph.train.rehearsal_coef=0.5", "graph.train.rehearsal_every=5",
                                       "graph.reward=null"])  # ppo_tiny's rule settings do not apply
    assert exp.graph.call("reward_inf").interface == "advantage_model"
    args = exp.graph.call("actor_train").args
    assert (args.rehearsal_coef, args.rehearsal_every) == (0.5, 5)


@pytest.mark.parametrize("overrides,message", [
    (["graph.batch_sise=3"], "unknown config key 'graph.batch_sise'; did you mean 'graph.batch_size'"),
    (["graph.generate.temperature=0.7", "graph.train.temperature=1.0"],
     "graph.train.temperature=1.0 disagrees with graph.generate.temperature=0.7"),
    (["+foo=1"], "unknown config key 'foo'; valid keys at the top level: name, seed"),
    (["graph.batch_size=abc"], "config key 'graph.batch_size' has a wrong type.*expected int"),
    (["graph.template=ppp"], "unknown template 'ppp' \\(did you mean 'ppo'\\?\\)"),
    (["models.actor.trainable=false"], "trains model 'actor', which is not trainable"),
    (["graph.generate.max_new_token=3"], "unknown argument 'max_new_token' for interface 'generate'"),
    (["models.critic.rule=x"], "models.critic: give only one of arch, config, rule, function or functions"),
    (["cluster.device=tpu"], "cluster.device: 'tpu' is not one of cpu, cuda"),
    (["plan.mode=heuristic:magic"], "unknown heuristic 'magic'; known: symmetric"),
    (["plan.mode=fast"], "plan.mode: 'fast' is not one of search"),
    (["models.actor.checkpoint=/nonexistent/ckpt"], "checkpoint '/nonexistent/ckpt' does not exist"),
    (["data.format=prompt"], "unknown dataset format 'prompt' \\(did you mean 'prompts'\\?\\)"),
    (["graph.batch_size"], "not of the form key=value"),
    (["graph.batch_size=[1,2"], "cannot compose"),
    (["graph.reward_form=adv"], "graph.reward_form must be reward or advantage, got 'adv'"),
    (["graph.train.rehearsal_every=0"], "rehearsal_every, rehearsal_clusters and rehearsal_per_cluster must be >= 1"),
    (["graph.train.rehearsal_source=sft"], "rehearsal_source: 'sft' is not one of rollouts, data"),
    (["graph.train.rehearsal_coef=0.5", "graph.train.rehearsal_source=data"],
     "rehearsal_source=data needs the pool: set graph.train.rehearsal_path"),
    (["graph.train.rehearsal_coef=0.5", "graph.train.rehearsal_source=data", "graph.train.rehearsal_path=/nope.jsonl"],
     "graph.train.rehearsal_path: .*nope.jsonl"),
])
def test_bad_overrides(overrides, message):
    with pytest.raises((ConfigError, GraphError), match=message):
        load_experiment("ppo_tiny", overrides)


def write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="experiment 'nope.yaml' not found; give a YAML path or one of: .*ppo_tiny"):
        load_experiment("nope.yaml")
    malformed = write(tmp_path, "m.yaml", "models: [1, 2\n")
    with pytest.raises(ConfigError, match="cannot read .*m.yaml.*expected ',' or ']'"):
        load_experiment(malformed)
    unknown = write(tmp_path, "u.yaml", "defaults:\n  - /common/tiny\n  - _self_\nmodels:\n"
                                        "  actor: {arch: {family: llama}, trianable: true}\n")
    with pytest.raises(ConfigError, match="unknown config key 'models.actor.trianable'; did you mean 'models.actor.trainable'"):
        load_experiment(unknown)
    missing = write(tmp_path, "d.yaml", "defaults:\n  - /common/nothere\n  - _self_\n")
    with pytest.raises(ConfigError, match="Could not load 'common/nothere'"):
        load_experiment(missing)
    no_models = write(tmp_path, "n.yaml", "name: x\n")
    with pytest.raises(ConfigError, match="no models defined"):
        load_experiment(no_models)


def test_experiment_outside_the_tree_reuses_common(tmp_path):
    path = write(tmp_path, "mine.yaml", "defaults:\n  - /common/tiny\n  - /common/tiny_models\n  - _self_\n"
                                        "name: mine\ndata: {format: prompt_answer, response_len: 4}\n"
                                        "graph: {template: sft}\n")
    exp = load_experiment(path)
    assert [c.name for c in exp.graph.calls] == ["actor_train"]


def test_model_from_hf_config_file(tmp_path):
    (tmp_path / "config.json").write_text(
        '{"model_type": "qwen2", "num_hidden_layers": 3, "hidden_size": 32, "intermediate_size": 64,'
        ' "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 64, "tie_word_embeddings": true}')
    exp = load_experiment("sft_tiny", ["models.actor.arch=null", f"models.actor.config={tmp_path}"])
    arch = exp.graph.models["actor"].arch
    assert (arch.family, arch.num_layers, arch.qkv_bias, arch.tied_embeddings) == ("qwen2", 3, True, True)


def test_custom_graph_in_yaml(tmp_path):
    path = write(tmp_path, "c.yaml", """\
defaults:
  - /common/tiny
  - /common/tiny_models
  - _self_
name: custom
models:
  reward: {rule: arithmetic_exact}
  ref: {arch: "${models.actor.arch}", init_from: actor}
graph:
  template: null
  calls:
    gen: {model: actor, kind: generate, interface: generate, args: {max_new_tokens: 4}, inputs: [prompts], outputs: [seq, logp]}
    score: {model: reward, kind: inference, interface: rule_reward, inputs: [seq, answers], outputs: [rewards]}
    refp: {model: ref, kind: inference, interface: logprobs, inputs: [seq], outputs: [rlogp]}
    train: {model: actor, kind: train, interface: ppo_actor, args: {lr: 0.01}, inputs: [seq, logp, rlogp, rewards]}
""")
    g = load_experiment(path).graph
    assert g.topological_order() == ("gen", "score", "refp", "train")
    assert g.call("train").args.lr == 0.01 and g.call("gen").max_new_tokens == 4
    assert g.call("score").response_len == 4
    bad = write(tmp_path, "b.yaml", open(path).read().replace("kind: train", "kind: trian"))
    with pytest.raises(ConfigError, match="graph.calls.train.kind: 'trian' is not one of"):
        load_experiment(bad)
    missing = write(tmp_path, "x.yaml", open(path).read().replace("model: reward, ", ""))
    with pytest.raises(ConfigError, match="config key 'graph.calls.score.model' is required"):
        load_experiment(missing)
    # a custom graph sets the sampling temperature on the update and the reference itself
    hot = open(path).read().replace("max_new_tokens: 4}", "max_new_tokens: 4, temperature: 0.5}")
    with pytest.raises(ConfigError, match="call 'train' \\(ppo_actor\\) has temperature 1 but its samples "
                                          "come from 'gen' at temperature 0.5; set temperature: 0.5"):
        load_experiment(write(tmp_path, "h.yaml", hot))
    hot = hot.replace("args: {lr: 0.01}", "args: {lr: 0.01, temperature: 0.5}")
    with pytest.raises(ConfigError, match="call 'refp' \\(logprobs\\) has temperature 1 but 'train'"):
        load_experiment(write(tmp_path, "h.yaml", hot))
    hot = hot.replace("interface: logprobs,", "interface: logprobs, args: {temperature: 0.5},")
    assert load_experiment(write(tmp_path, "h.yaml", hot)).graph.call("refp").args.temperature == 0.5
    # an update that cannot divide by the temperature is refused at T != 1
    blind = hot.replace("interface: ppo_actor, args: {lr: 0.01, temperature: 0.5}, inputs: [seq, logp, rlogp, rewards]",
                        "interface: sft, inputs: [seq]")
    with pytest.raises(ConfigError, match="call 'train' \\(sft\\) trains on samples drawn at temperature 0.5 but "
                                          "does not divide its logits by it"):
        load_experiment(write(tmp_path, "h.yaml", blind))


def _schema_classes():
    return [obj for obj in vars(schema_module).values()
            if isinstance(obj, type) and dataclasses.is_dataclass(obj) and obj.__module__ == schema_module.__name__]


@pytest.mark.parametrize("cls", _schema_classes(), ids=lambda c: c.__name__)
def test_every_config_field_has_a_one_line_docstring(cls):
    docs = field_docs(cls)
    for f in dataclasses.fields(cls):
        assert f.name in docs and docs[f.name] and "\n" not in docs[f.name], f"{cls.__name__}.{f.name}"


def test_schema_paths_and_reference():
    assert resolve("models.anything.arch.num_layers")[1] is int
    assert resolve("graph.generate.anything") is not None  # free-form interface args
    assert resolve("graph.nothere") is None
    assert "did you mean 'cluster.devices_per_node'" in suggest("cluster.device_per_node")
    ref = reference("cluster")
    assert "cluster.devices_per_node = 4  # Devices per node" in ref
    assert typing.get_type_hints(schema_module.ExperimentConfig)["models"]
    with pytest.raises(ValueError, match="unknown config section"):
        reference("clustr")


def test_unknown_reward_rule_is_named_at_load():
    with pytest.raises(ConfigError, match="models.reward.rule: unknown reward rule 'arithmetc' "
                                          "\\(did you mean 'arithmetic_exact'\\?\\); known: arithmetic_exact"):
        load_experiment("ppo_tiny", ["models.reward.rule=arithmetc"])


def test_dataset_with_a_missing_field_fails_at_load_naming_file_line_and_field(tmp_path):
    data = write(tmp_path, "d.jsonl", '{"prompt": "1+1=", "answer": "2"}\n\n{"prompt": "2+2="}\n')
    with pytest.raises(ConfigError, match=f"data.path: {data}:3: missing field 'answer'") as info:
        load_experiment("ppo_tiny", [f"data.path={data}"])
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match=f"data.ptx.path: {data}:3: missing field 'answer'"):
        load_experiment("ppo_tiny", [f"+data.ptx.path={data}", "graph.train.ptx_coef=0.1"])


def test_ptx_config_binds_the_ptx_key():
    exp = load_experiment("ppo_tiny", ["+data.ptx.generator=arithmetic", "graph.train.ptx_coef=0.1"])
    assert "ptx" in exp.graph.dataset_keys and exp.graph.call("actor_train").inputs[-1] == "ptx"
    assert exp.config.data.ptx.format == "prompt_answer"
    with pytest.raises(GraphError, match="ptx_coef=0.5 needs ptx data"):
        load_experiment("ppo_tiny", ["graph.train.ptx_coef=0.5"])
    with pytest.raises(ConfigError, match="data.ptx: 10 ptx records cannot fill one iteration's ptx batch of 16"):
        load_experiment("ppo_tiny", ["+data.ptx.num_records=10", "graph.train.ptx_coef=0.1", "graph.batch_size=16"])


def test_init_from_copies_the_sources_checkpoint(tmp_path):
    from runtime.engine.convert import random_hf_state
    from runtime.engine.hf_checkpoint import save_hf_checkpoint

    arch = load_experiment("ppo_tiny").graph.models["actor"].arch
    save_hf_checkpoint(str(tmp_path / "sft"), random_hf_state(arch, seed=5, value_head=False), arch, value_head=False)
    models = load_experiment("ppo_tiny", [f"models.actor.checkpoint={tmp_path / 'sft'}"]).graph.models
    assert models["actor"].checkpoint == str((tmp_path / "sft").resolve())
    assert models["ref"].checkpoint == models["actor"].checkpoint  # ref: init_from actor
    assert models["critic"].checkpoint is None  # no init_from: its own initialisation


def test_reward_functions_are_checked_at_load(tmp_path):
    (tmp_path / "fns.py").write_text("def ok(prompts, completions, answer, **kw):\n    return [0.0] * len(completions)\n"
                                     "def wants(prompts, completions, level):\n    return []\n")
    ok = load_experiment("grpo_tiny", ["models.reward.rule=null", f"models.reward.function={tmp_path}/fns.py:ok"])
    reward = ok.graph.models["reward"]
    assert reward.functions[0].function == f"{tmp_path}/fns.py:ok" and reward.is_rule
    assert ok.graph.call("reward_inf").inputs == ("seq",)  # the functions read every column themselves
    for overrides, message in [
        ([f"models.reward.function={tmp_path}/fns.py:ok"], "give only one of arch, config, rule, function"),
        (["models.reward.rule=null", f"models.reward.function={tmp_path}/none.py:ok"],
         "models.reward: reward function .*none.py:ok': file .* does not exist"),
        (["models.reward.rule=null", f"models.reward.function={tmp_path}/fns.py:nope"], "has no 'nope'"),
        (["models.reward.rule=null", f"models.reward.function={tmp_path}/fns.py:wants"],
         "requires 'level', which the dataset does not give \\(its columns: answer\\)"),
    ]:
        with pytest.raises(ConfigError, match=message):
            load_experiment("grpo_tiny", overrides)


@pytest.mark.parametrize("overrides,message", [
    (["train.eval_every=5"], "train.eval_every=5 needs a validation dataset; set data.eval_path"),
    (["data.eval_path=x.jsonl"], "data.eval_path is set but train.eval_every is 0"),
    (["data.overlong_prompts=cut"], "data.overlong_prompts: 'cut' is not one of drop, truncate"),
    (["graph.reward.unfinished_scale=2"], "unfinished_scale must be in \\[0.0, 1.0\\]"),
])
def test_data_and_eval_settings_are_checked_at_load(overrides, message):
    with pytest.raises((ConfigError, GraphError), match=message):
        load_experiment("grpo_tiny", overrides)


@pytest.mark.parametrize("override,message", [
    ("train.off_policy_steps=1", "train.off_policy_steps=1 with dynamic sampling"),
    ("plan.fusion=inter", "plan.fusion=inter with dynamic sampling"),
])
def test_dynamic_sampling_refuses_overlap(override, message):
    with pytest.raises(ConfigError, match=message):
        load_experiment("dapo_tiny", [override])


def test_rehearsal_from_data_loads_a_pool_and_refuses_an_empty_one(tmp_path):
    pool = write(tmp_path, "pool.jsonl", '{"prompt": "2*3=", "answer": "6"}\n')
    exp = load_experiment("ppo_tiny", ["graph.train.rehearsal_coef=0.5", "graph.train.rehearsal_source=data",
                                       f"graph.train.rehearsal_path={pool}"])
    args = exp.graph.call("actor_train").args
    assert (args.rehearsal_source, args.rehearsal_path) == ("data", pool)
    empty = write(tmp_path, "empty.jsonl", "")
    with pytest.raises(ConfigError, match="graph.train.rehearsal_path: "):
        load_experiment("ppo_tiny", ["graph.train.rehearsal_coef=0.5", "graph.train.rehearsal_source=data",
                                     f"graph.train.rehearsal_path={empty}"])


AM_REWARD = ["models.reward.rule=null", "models.reward.value_head=true", "models.reward.arch=${models.actor.arch}",
             "graph.reward=null"]


def test_rehearsal_ranked_by_advantage_adds_a_pool_scoring_call_on_the_reward_model(tmp_path):
    pool = write(tmp_path, "pool.jsonl", '{"prompt": "2*3=", "answer": "6"}\n{"prompt": "1+1=", "answer": "2"}\n'
                 '{"prompt": "3-1=", "answer": "2"}\n')
    data = ["graph.train.rehearsal_coef=0.5", "graph.train.rehearsal_source=data", f"graph.train.rehearsal_path={pool}",
            "graph.train.rehearsal_every=4"]
    # the default rank: today's graph, only the pool's size added to the actor's arguments
    plain = load_experiment("ppo_tiny", data).graph
    assert [c.name for c in plain.calls] == ["actor_gen", "reward_inf", "ref_inf", "critic_inf", "actor_train",
                                             "critic_train"]
    assert plain.call("actor_train").inputs == ("seq", "old_logp", "ref_logp", "rewards", "values")
    assert plain.call("actor_train").args.rehearsal_rank == "likelihood"
    assert plain.call("actor_train").args.rehearsal_pool_size == 3
    assert "rehearsal_pool" not in plain.dataset_keys
    for form, interface in (("advantage", "advantage_model"), ("reward", "reward_model")):
        graph = load_experiment("ppo_tiny", [*AM_REWARD, f"graph.reward_form={form}", *data,
                                             "graph.train.rehearsal_rank=advantage"]).graph
        assert graph.call("reward_inf").interface == interface
        score = graph.call("rehearsal_score")
        assert (score.model, score.interface, score.inputs, score.outputs, score.batch_size) == (
            "reward", "pool_scores", ("rehearsal_pool",), ("rehearsal_scores",), 3)
        assert (score.args.form, score.args.every) == (form, 4)
        assert graph.call("actor_train").inputs[-1] == "rehearsal_scores"
        assert "rehearsal_pool" in graph.dataset_keys
    # with ptx too: the scores bind by name whatever their position
    ptx = write(tmp_path, "ptx.jsonl", '{"prompt": "2*3=", "answer": "6"}\n' * 128)
    graph = load_experiment("ppo_tiny", [*AM_REWARD, "graph.reward_form=advantage", *data,
                                         "graph.train.rehearsal_rank=advantage", f"+data.ptx.path={ptx}",
                                         "graph.train.ptx_coef=0.1"]).graph
    assert graph.call("actor_train").inputs[5:] == ("ptx", "rehearsal_scores")


def test_rehearsal_ranked_on_the_policys_responses_adds_a_pool_generation_on_the_actor(tmp_path):
    """rehearsal_rank=advantage_policy: rehearsal_gen (the actor, the generate call's sampling,
    one response per pool prompt, every rehearsal_every iterations) feeds rehearsal_score, and
    the actor reads both the scores and the responses (bound by key, after ptx here)."""
    pool = write(tmp_path, "pool.jsonl", '{"prompt": "2*3=", "answer": "6"}\n{"prompt": "1+1=", "answer": "2"}\n')
    ptx = write(tmp_path, "ptx.jsonl", '{"prompt": "2*3=", "answer": "6"}\n' * 128)
    exp = load_experiment("ppo_tiny", [
        *AM_REWARD, "graph.reward_form=advantage", "graph.train.rehearsal_coef=0.5", "graph.train.rehearsal_source=data",
        f"graph.train.rehearsal_path={pool}", "graph.train.rehearsal_every=4", "graph.generate.temperature=0.7",
        "graph.train.rehearsal_rank=advantage_policy", f"+data.ptx.path={ptx}", "graph.train.ptx_coef=0.1"])
    graph = exp.graph
    assert [c.name for c in graph.calls] == ["actor_gen", "rehearsal_gen", "reward_inf", "rehearsal_score", "ref_inf",
                                             "critic_inf", "actor_train", "critic_train"]
    gen, pool_gen = graph.call("actor_gen"), graph.call("rehearsal_gen")
    assert (pool_gen.model, pool_gen.kind.value, pool_gen.interface, pool_gen.inputs, pool_gen.outputs,
            pool_gen.batch_size) == ("actor", "generate", "pool_generate", ("rehearsal_pool",),
                                     ("rehearsal_responses",), 2)
    assert (pool_gen.args.every, pool_gen.args.temperature, pool_gen.args.max_new_tokens, pool_gen.max_new_tokens) == (
        4, 0.7, gen.args.max_new_tokens, gen.max_new_tokens)
    assert graph.call("rehearsal_score").inputs == ("rehearsal_responses",)
    actor = graph.call("actor_train")
    assert actor.inputs[5:] == ("ptx", "rehearsal_scores", "rehearsal_responses")
    assert input_roles("ppo_actor", actor.inputs)[5:] == ("ptx", "pool_scores", "pool_responses")
    # the default rank and rehearsal_rank=advantage have no pool generation
    for rank in ("likelihood", "advantage"):
        g = load_experiment("ppo_tiny", [*AM_REWARD, "graph.train.rehearsal_coef=0.5", "graph.train.rehearsal_source=data",
                                         f"graph.train.rehearsal_path={pool}", f"graph.train.rehearsal_rank={rank}"]).graph
        assert "rehearsal_gen" not in [c.name for c in g.calls]
        assert "rehearsal_responses" not in g.call("actor_train").inputs


@pytest.mark.parametrize("overrides, message", [
    (["graph.train.rehearsal_rank=advantage"], "rehearsal_rank=advantage ranks a data pool; with "
                                               "rehearsal_source=rollouts the rollouts are already ranked"),
    (["graph.train.rehearsal_rank=amscore"], "rehearsal_rank: 'amscore' is not one of likelihood, advantage"),
    (["graph.train.rehearsal_rank=advantage", "graph.train.rehearsal_source=data", "graph.train.rehearsal_path=POOL"],
     "rehearsal_rank=advantage scores the rehearsal pool with the graph's reward model, but this graph has none"),
    (["graph.train.rehearsal_rank=advantage_policy"], "rehearsal_rank=advantage_policy ranks a data pool; with "
                                                      "rehearsal_source=rollouts"),
    (["graph.train.rehearsal_rank=advantage_policy", "graph.train.rehearsal_source=data",
      "graph.train.rehearsal_path=POOL"], "rehearsal_rank=advantage_policy scores the rehearsal pool with the graph's "
                                          "reward model, but this graph has none"),
    ([*AM_REWARD, "graph.train.rehearsal_rank=advantage_policy", "graph.train.rehearsal_source=data",
      "graph.train.rehearsal_path=POOL", "train.off_policy_steps=1"],
     "train.off_policy_steps=1 does not run the rehearsal pool's generation .* one batch ahead"),
])
def test_rehearsal_rank_load_errors(tmp_path, overrides, message):
    from graph.errors import UserError

    pool = write(tmp_path, "pool.jsonl", '{"prompt": "2*3=", "answer": "6"}\n')
    with pytest.raises(UserError, match=message):  # ConfigError, GraphError, OverlapError: exit 2
        load_experiment("ppo_tiny", ["graph.train.rehearsal_coef=0.5", *(o.replace("POOL", pool) for o in overrides)])
