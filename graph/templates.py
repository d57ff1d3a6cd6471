"""Templates that build the standard RLHF graphs from a few parameters.

Each template returns the calls of one iteration. Batch sizes count sequences per
call: a generate call's batch is prompts, and with `group_size` n it produces n
sequences per prompt; preference data has two sequences (chosen, rejected) per pair.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from graph.catalog import REWARD_SHAPING_ARGS, SCORED_RANKS, make_args
from graph.dataset_keys import PTX_KEY, REHEARSAL_POOL_KEY
from graph.errors import GraphError
from graph.registry import Registry
from graph.roles import REHEARSAL_RESPONSES_KEY, REHEARSAL_SCORES_KEY
from graph.spec import Call, CallKind, ModelSpec


@dataclass(frozen=True, kw_only=True)
class TemplateParams:
    """What every template needs besides the models."""

    batch_size: int
    """Prompts (RL), samples (SFT) or preference pairs (RM, DPO) per iteration."""
    prompt_len: int
    """Expected prompt tokens."""
    response_len: int | None = None
    """Expected response tokens; None takes max_new_tokens for generated responses."""
    micro_batches: int = 1
    """Micro-batches per call."""
    group_size: int = 1
    """Responses per prompt (GRPO's group); the other templates use 1."""
    generate: Mapping[str, Any] = field(default_factory=dict)
    """Arguments of the generate interface."""
    train: Mapping[str, Any] = field(default_factory=dict)
    """Arguments of the main train interface (actor, or the reward model for RM)."""
    critic_train: Mapping[str, Any] = field(default_factory=dict)
    """Arguments of the critic's train interface (PPO)."""
    reward_form: str = "reward"
    """How a neural reward model scores: `reward` (its last-token score) or `advantage` (an Advantage Model: last-token minus last-prompt-token score)."""
    reward: Mapping[str, Any] = field(default_factory=dict)
    """Arguments of the rule/function reward call (rule_reward); a reward model takes none."""
    ptx: bool = False
    """Whether the dataset provides the `ptx` key (data.ptx), mixed into the PPO actor's loss."""

    def __post_init__(self) -> None:
        for name in ("batch_size", "micro_batches", "group_size"):
            if getattr(self, name) < 1:
                raise GraphError(f"graph.{name} must be >= 1, got {getattr(self, name)}")
        if self.prompt_len < 1:
            raise GraphError(f"data.prompt_len must be >= 1, got {self.prompt_len}")
        if self.response_len is not None and self.response_len < 1:
            raise GraphError(f"data.response_len must be >= 1, got {self.response_len}")
        if self.reward_form not in ("reward", "advantage"):
            raise GraphError(f"graph.reward_form must be reward or advantage, got {self.reward_form!r}")


TemplateFn = Callable[[TemplateParams, Mapping[str, ModelSpec]], tuple[Call, ...]]


@dataclass(frozen=True)
class TemplateInfo:
    """A registered template."""

    name: str
    fn: TemplateFn
    roles: tuple[str, ...]
    doc: str


TEMPLATES: Registry[TemplateInfo] = Registry("template", key="graph.template", error=GraphError)
"""Template name -> TemplateInfo."""


def template(name: str, *, roles: tuple[str, ...]) -> Callable[[TemplateFn], TemplateFn]:
    """Register a template needing models `roles`."""

    def register(fn: TemplateFn) -> TemplateFn:
        doc = (fn.__doc__ or "").strip().splitlines()[0]
        TEMPLATES.add(name, TemplateInfo(name, fn, roles, doc))
        return fn

    return register


def known_templates() -> tuple[str, ...]:
    """Names of every template, sorted."""
    return tuple(sorted(TEMPLATES))


def get_template(name: str) -> TemplateInfo:
    """Look up a template; an unknown name lists the known ones."""
    return TEMPLATES.get(name)


def build_template(name: str, params: TemplateParams,
                   models: Mapping[str, ModelSpec]) -> tuple[Call, ...]:
    """The calls of template `name`, after checking that its models exist."""
    info = get_template(name)
    if params.ptx and name != "ppo":
        raise GraphError(f"data.ptx is mixed into the PPO actor loss; template {name!r} does not use it "
                         "(set data.ptx=null)")
    missing = [role for role in info.roles if role not in models]
    if missing:
        raise GraphError(
            f"template {name!r} needs models {', '.join(info.roles)}; missing: "
            f"{', '.join(missing)} (define them under models:)"
        )
    return info.fn(params, models)


# --------------------------------------------------------------------------- helpers


def _generate_args(params: TemplateParams, *, greedy: bool = False) -> Any:
    values = dict(params.generate)
    given = values.get("num_samples")
    if given is not None and given != params.group_size:
        raise GraphError(
            f"graph.generate.num_samples={given} disagrees with graph.group_size="
            f"{params.group_size}; set only graph.group_size"
        )
    values["num_samples"] = 1 if greedy else params.group_size
    if greedy:
        values["greedy"] = True
    return make_args("generate", values, where="graph.generate")


def _lengths(params: TemplateParams, gen_args: Any | None = None) -> dict[str, int]:
    if gen_args is None:
        if params.response_len is None:
            raise GraphError("data.response_len must be set for templates without generation")
        return {"prompt_len": params.prompt_len, "response_len": params.response_len}
    response = params.response_len if params.response_len is not None else gen_args.max_new_tokens
    if response > gen_args.max_new_tokens:
        raise GraphError(
            f"data.response_len={response} exceeds graph.generate.max_new_tokens="
            f"{gen_args.max_new_tokens}; lower it or raise max_new_tokens"
        )
    return {"prompt_len": params.prompt_len, "response_len": response}


def _reward_call(name: str, params: TemplateParams, models: Mapping[str, ModelSpec],
                 seq_key: str, out_key: str, batch: int, lengths: dict[str, int]) -> Call:
    reward = models["reward"]
    if reward.is_rule:  # a rule reads the answers key; reward functions read every column themselves
        return Call(name=name, model="reward", kind=CallKind.INFERENCE, interface="rule_reward",
                    args=make_args("rule_reward", params.reward, where="graph.reward"),
                    inputs=(seq_key, "answers") if reward.rule is not None else (seq_key,),
                    outputs=(out_key,), batch_size=batch, micro_batches=1, **lengths)
    at_defaults = make_args("rule_reward", params.reward, where="graph.reward") == make_args("rule_reward", {})
    if params.reward and not at_defaults:
        raise GraphError(f"graph.reward sets {', '.join(sorted(params.reward))} of a rule or function reward, "
                         "but models.reward is a reward model; remove graph.reward (or override "
                         "graph.reward=null, or set its defaults)")
    interface = "advantage_model" if params.reward_form == "advantage" else "reward_model"
    return Call(name=name, model="reward", kind=CallKind.INFERENCE, interface=interface,
                args=make_args(interface, {}), inputs=(seq_key,), outputs=(out_key,),
                batch_size=batch, micro_batches=params.micro_batches, **lengths)


def _infer(name: str, role: str, interface: str, params: TemplateParams, inputs: tuple[str, ...],
           outputs: tuple[str, ...], batch: int, lengths: dict[str, int],
           values: Mapping[str, Any] | None = None) -> Call:
    return Call(name=name, model=role, kind=CallKind.INFERENCE, interface=interface,
                args=make_args(interface, values or {}), inputs=inputs, outputs=outputs,
                batch_size=batch, micro_batches=params.micro_batches, **lengths)


def _train(name: str, role: str, interface: str, values: Mapping[str, Any], where: str,
           params: TemplateParams, inputs: tuple[str, ...], batch: int,
           lengths: dict[str, int]) -> Call:
    return Call(name=name, model=role, kind=CallKind.TRAIN, interface=interface,
                args=make_args(interface, values, where=where), inputs=inputs,
                batch_size=batch, micro_batches=params.micro_batches, **lengths)


def _at_sampling_temperature(train_values: Mapping[str, Any], gen_args: Any) -> dict[str, Any]:
    """A policy update's arguments with the sampling temperature copied in: its loss divides the
    logits by the temperature the responses were drawn at (as the old log-probs were)."""
    values = dict(train_values)
    given = values.get("temperature")
    if given is not None and float(given) != gen_args.temperature:
        raise GraphError(f"graph.train.temperature={given} disagrees with graph.generate.temperature="
                         f"{gen_args.temperature}; set only graph.generate.temperature")
    values["temperature"] = gen_args.temperature
    return values


def _generate(name: str, params: TemplateParams, gen_args: Any, outputs: tuple[str, ...],
              lengths: dict[str, int]) -> Call:
    return Call(name=name, model="actor", kind=CallKind.GENERATE, interface="generate",
                args=gen_args, inputs=("prompts",), outputs=outputs,
                batch_size=params.batch_size, micro_batches=params.micro_batches,
                max_new_tokens=gen_args.max_new_tokens, **lengths)


# --------------------------------------------------------------------------- templates


@template("ppo", roles=("actor", "critic", "ref", "reward"))
def ppo(params: TemplateParams, models: Mapping[str, ModelSpec]) -> tuple[Call, ...]:
    """PPO: actor generates; reward, ref and critic score; actor and critic train."""
    if params.group_size != 1:
        raise GraphError("template 'ppo' samples one response per prompt; set graph.group_size=1 or use 'grpo'")
    gen = _generate_args(params)
    lengths = _lengths(params, gen)
    n = params.batch_size
    rl_inputs = ("seq", "old_logp", "ref_logp", "rewards", "values")
    actor_inputs = rl_inputs + ((PTX_KEY,) if params.ptx else ())
    actor = _train("actor_train", "actor", "ppo_actor", _at_sampling_temperature(params.train, gen),
                   "graph.train", params, actor_inputs, n, lengths)
    critic_values = _shared_reward_args(actor.args, params.critic_train)
    return (
        _generate("actor_gen", params, gen, ("seq", "old_logp"), lengths),
        _reward_call("reward_inf", params, models, "seq", "rewards", n, lengths),
        _infer("ref_inf", "ref", "logprobs", params, ("seq",), ("ref_logp",), n, lengths,
               {"temperature": gen.temperature}),
        _infer("critic_inf", "critic", "values", params, ("seq",), ("values",), n, lengths),
        actor,
        _train("critic_train", "critic", "ppo_critic", critic_values,
               "graph.critic_train", params, rl_inputs, n, lengths),
    )


def _shared_reward_args(actor_args: Any, critic_values: Mapping[str, Any]) -> dict[str, Any]:
    """The critic's arguments with the actor's reward shaping copied in (REWARD_SHAPING_ARGS):
    both compute the same GAE targets, so a differing value set on the critic is an error."""
    values = dict(critic_values)
    for key in REWARD_SHAPING_ARGS:
        want = getattr(actor_args, key)
        if key in values and values[key] != want:
            raise GraphError(
                f"graph.critic_train.{key}={values[key]!r} disagrees with the actor's {key}={want!r}; "
                f"the critic takes it from graph.train, so set it there only"
            )
        values[key] = want
    return values


def _rehearses_by_advantage(call: Call) -> bool:
    args = call.args
    return (call.interface == "ppo_actor" and args.rehearsal_coef > 0 and args.rehearsal_source == "data"
            and args.rehearsal_rank in SCORED_RANKS)


def _rehearses_policy_responses(call: Call) -> bool:
    return _rehearses_by_advantage(call) and call.args.rehearsal_rank == "advantage_policy"


def with_rehearsal_pool(calls: tuple[Call, ...] | list[Call], pool_size: int) -> list[Call]:
    """The calls with a Selective Rehearsal data pool of `pool_size` records wired in (a no-op
    without one): each ppo_actor rehearsing from data learns the pool's size (the planner prices
    its selection by it); one ranking by advantage reads REHEARSAL_SCORES_KEY, which a new call
    `rehearsal_score` produces: the graph's reward model (same role, same form as its reward
    call) scoring every (prompt, answer) pair of the pool (key REHEARSAL_POOL_KEY) every
    rehearsal_every iterations. With rehearsal_rank=advantage_policy a call `rehearsal_gen`
    (interface pool_generate, the actor's model, the first generate call's sampling arguments)
    first generates the policy's response to every pool prompt (key REHEARSAL_RESPONSES_KEY),
    which the scorer scores and the actor reads. The pool's pairs are priced at the graph's
    prompt and response lengths."""
    out: list[Call] = []
    after: dict[str, Call] = {}  # call name -> the call placed right after it
    for call in calls:
        args = call.args
        if call.interface != "ppo_actor" or args.rehearsal_coef <= 0 or args.rehearsal_source != "data":
            out.append(call)
            continue
        call = dataclasses.replace(call, args=dataclasses.replace(args, rehearsal_pool_size=pool_size))
        if _rehearses_by_advantage(call) and REHEARSAL_SCORES_KEY not in call.inputs:
            reward = next((c for c in calls if c.interface in ("reward_model", "advantage_model")), None)
            if reward is None:
                raise GraphError(f"graph.train.rehearsal_rank={args.rehearsal_rank} scores the rehearsal pool with the "
                                 "graph's reward model, but this graph has none (models.reward is a rule or reward "
                                 "functions); set graph.train.rehearsal_rank=likelihood or use a reward model")
            scored = REHEARSAL_POOL_KEY
            if _rehearses_policy_responses(call):
                gen = next((c for c in calls if c.interface == "generate" and c.model == call.model), None)
                if gen is None:
                    raise GraphError(f"graph.train.rehearsal_rank=advantage_policy generates the policy's responses to "
                                     f"the pool with the generate call of model {call.model!r}, but this graph has "
                                     "none; set graph.train.rehearsal_rank=advantage")
                values = {f.name: getattr(gen.args, f.name) for f in dataclasses.fields(gen.args)}
                after[gen.name] = Call(
                    name="rehearsal_gen", model=gen.model, kind=CallKind.GENERATE, interface="pool_generate",
                    args=make_args("pool_generate", {**values, "num_samples": 1, "every": args.rehearsal_every}),
                    inputs=(REHEARSAL_POOL_KEY,), outputs=(REHEARSAL_RESPONSES_KEY,),
                    batch_size=max(pool_size, 1), micro_batches=gen.micro_batches, prompt_len=gen.prompt_len,
                    response_len=gen.response_len, max_new_tokens=gen.max_new_tokens)
                scored = REHEARSAL_RESPONSES_KEY
            form = "advantage" if reward.interface == "advantage_model" else "reward"
            after[reward.name] = Call(name="rehearsal_score", model=reward.model, kind=CallKind.INFERENCE,
                                      interface="pool_scores",
                                      args=make_args("pool_scores", {"form": form, "every": args.rehearsal_every}),
                                      inputs=(scored,), outputs=(REHEARSAL_SCORES_KEY,),
                                      batch_size=max(pool_size, 1), micro_batches=reward.micro_batches,
                                      prompt_len=reward.prompt_len, response_len=reward.response_len)
            extra = (REHEARSAL_RESPONSES_KEY,) if scored == REHEARSAL_RESPONSES_KEY else ()
            call = dataclasses.replace(call, inputs=call.inputs + (REHEARSAL_SCORES_KEY, *extra))
        out.append(call)
    return [c for call in out for c in ((call, after[call.name]) if call.name in after else (call,))]


def check_ppo_calls(calls: tuple[Call, ...] | list[Call], dataset_keys: frozenset[str] | set[str]) -> None:
    """Checks templates pass by construction, for custom graphs too: a ppo_critic shares the
    reward shaping of the ppo_actor, ptx input and ptx_coef go together, and a ppo_actor ranks
    its rehearsal pool by advantage exactly when it reads the pool's scores, and by the policy's
    responses exactly when it reads them."""
    actors = [c for c in calls if c.interface == "ppo_actor"]
    for actor in actors:
        scored = REHEARSAL_SCORES_KEY in actor.inputs
        if scored != _rehearses_by_advantage(actor):
            raise GraphError(f"call {actor.name!r}: input {REHEARSAL_SCORES_KEY!r} goes with rehearsal_rank=advantage "
                             f"or advantage_policy (rehearsal_source=data, rehearsal_coef > 0); add or remove one of them")
        responses = REHEARSAL_RESPONSES_KEY in actor.inputs
        if responses != _rehearses_policy_responses(actor):
            raise GraphError(f"call {actor.name!r}: input {REHEARSAL_RESPONSES_KEY!r} goes with rehearsal_rank="
                             f"advantage_policy (rehearsal_source=data, rehearsal_coef > 0); add or remove one of them")
        ptx = [k for k in actor.inputs[5:] if k not in (REHEARSAL_SCORES_KEY, REHEARSAL_RESPONSES_KEY)]
        has_ptx = bool(ptx)
        if has_ptx and ptx[0] not in dataset_keys:
            raise GraphError(f"call {actor.name!r}: its ptx input {ptx[0]!r} must be a dataset key "
                             f"(set data.ptx; it provides {PTX_KEY!r})")
        if has_ptx and actor.args.ptx_coef == 0:
            raise GraphError(f"call {actor.name!r} reads ptx data but ptx_coef is 0; set "
                             "graph.train.ptx_coef > 0 or data.ptx=null")
        if not has_ptx and actor.args.ptx_coef > 0:
            raise GraphError(f"call {actor.name!r}: ptx_coef={actor.args.ptx_coef} needs ptx data; "
                             "set data.ptx (a JSONL path or a generator)")
    for critic in (c for c in calls if c.interface == "ppo_critic"):
        for actor in actors:
            for key in REWARD_SHAPING_ARGS:
                a, c = getattr(actor.args, key), getattr(critic.args, key)
                if a != c:
                    raise GraphError(f"call {critic.name!r}: {key}={c!r} differs from {key}={a!r} of "
                                     f"{actor.name!r}; actor and critic must shape rewards alike")


@template("grpo", roles=("actor", "ref", "reward"))
def grpo(params: TemplateParams, models: Mapping[str, ModelSpec]) -> tuple[Call, ...]:
    """GRPO: a group of responses per prompt, no critic; optional reward-variance increase."""
    if params.group_size < 2:
        raise GraphError("template 'grpo' needs graph.group_size >= 2 responses per prompt")
    gen = _generate_args(params)
    lengths = _lengths(params, gen)
    n = params.batch_size * params.group_size
    train_values = _at_sampling_temperature(params.train, gen)
    if train_values.get("group_size", params.group_size) != params.group_size:
        raise GraphError(
            f"graph.train.group_size={train_values['group_size']} disagrees with graph.group_size="
            f"{params.group_size}; set only graph.group_size"
        )
    train_values["group_size"] = params.group_size
    return (
        _generate("actor_gen", params, gen, ("seq", "old_logp"), lengths),
        _reward_call("reward_inf", params, models, "seq", "rewards", n, lengths),
        _infer("ref_inf", "ref", "logprobs", params, ("seq",), ("ref_logp",), n, lengths,
               {"temperature": gen.temperature}),
        _train("actor_train", "actor", "grpo_actor", train_values, "graph.train", params,
               ("seq", "old_logp", "ref_logp", "rewards"), n, lengths),
    )


@template("remax", roles=("actor", "ref", "reward"))
def remax(params: TemplateParams, models: Mapping[str, ModelSpec]) -> tuple[Call, ...]:
    """ReMax: a sampled and a greedy generation; the greedy reward is the baseline."""
    if params.group_size != 1:
        raise GraphError("template 'remax' samples one response per prompt; set graph.group_size=1")
    gen = _generate_args(params)
    greedy = _generate_args(params, greedy=True)
    lengths = _lengths(params, gen)
    n = params.batch_size
    greedy_call = _generate("actor_greedy", params, greedy, ("greedy_seq",), lengths)
    return (
        _generate("actor_gen", params, gen, ("seq", "old_logp"), lengths),
        greedy_call,
        _reward_call("reward_inf", params, models, "seq", "rewards", n, lengths),
        _reward_call("baseline_inf", params, models, "greedy_seq", "baseline_rewards", n, lengths),
        _infer("ref_inf", "ref", "logprobs", params, ("seq",), ("ref_logp",), n, lengths,
               {"temperature": gen.temperature}),
        _train("actor_train", "actor", "remax_actor", _at_sampling_temperature(params.train, gen),
               "graph.train", params,
               ("seq", "old_logp", "ref_logp", "rewards", "baseline_rewards"), n, lengths),
    )


@template("sft", roles=("actor",))
def sft(params: TemplateParams, models: Mapping[str, ModelSpec]) -> tuple[Call, ...]:
    """Supervised fine-tuning of the actor on prompt/answer pairs."""
    lengths = _lengths(params)
    return (_train("actor_train", "actor", "sft", params.train, "graph.train", params,
                   ("prompt_answer",), params.batch_size, lengths),)


@template("rm", roles=("reward",))
def reward_modeling(params: TemplateParams, models: Mapping[str, ModelSpec]) -> tuple[Call, ...]:
    """Reward-model training on chosen/rejected pairs (Bradley-Terry)."""
    if models["reward"].is_rule:
        raise GraphError("template 'rm' trains the reward model; models.reward must be a neural model, not a rule")
    lengths = _lengths(params)
    return (_train("reward_train", "reward", "rw_pairwise", params.train, "graph.train", params,
                   ("pairs",), 2 * params.batch_size, lengths),)


@template("am", roles=("reward",))
def advantage_modeling(params: TemplateParams, models: Mapping[str, ModelSpec]) -> tuple[Call, ...]:
    """Advantage-Model training on chosen/rejected pairs (ranking on advantages, centred, bounded)."""
    if models["reward"].is_rule:
        raise GraphError("template 'am' trains the advantage model; models.reward must be a neural model, not a rule")
    lengths = _lengths(params)
    return (_train("reward_train", "reward", "am_pairwise", params.train, "graph.train", params,
                   ("pairs",), 2 * params.batch_size, lengths),)


@template("dpo", roles=("actor", "ref"))
def dpo(params: TemplateParams, models: Mapping[str, ModelSpec]) -> tuple[Call, ...]:
    """DPO: the reference scores chosen/rejected pairs; the actor trains on them."""
    lengths = _lengths(params)
    n = 2 * params.batch_size
    return (
        _infer("ref_inf", "ref", "logprobs", params, ("pairs",), ("ref_logp",), n, lengths),
        _train("actor_train", "actor", "dpo", params.train, "graph.train", params,
               ("pairs", "ref_logp"), n, lengths),
    )


# --------------------------------------------------------------------------- policy-gradient family

PG_PRESETS: dict[str, dict[str, Any]] = {
    "rloo": {"advantage": "rloo", "kl_in_reward": True, "kl_coef": 0.05, "loss_agg": "seq_mean_token_mean"},
    "reinforce_pp": {"advantage": "reinforce_pp", "kl_in_reward": True, "kl_coef": 0.01, "loss_agg": "token_mean"},
    "gspo": {"advantage": "grpo", "ratio": "sequence", "loss_agg": "seq_mean_token_mean",
             "eps_low": 3e-4, "eps_high": 4e-4, "kl_coef": 0.0},
    "dr_grpo": {"advantage": "group_mean", "loss_agg": "seq_mean_token_sum_norm", "kl_coef": 0.0},
    "dapo": {"advantage": "grpo", "loss_agg": "token_mean", "eps_low": 0.2, "eps_high": 0.28,
             "kl_coef": 0.0, "dynamic_sampling": True},
}
"""The pg_actor arguments each template presets; graph.train overrides any of them.
Sources: runtime.interfaces.pg_math and the README's algorithm table. A template whose KL
coefficient is 0 has no reference call (models.ref is then not needed)."""


def _pg_template(name: str, params: TemplateParams, models: Mapping[str, ModelSpec], *,
                 min_group: int) -> tuple[Call, ...]:
    if params.group_size < min_group:
        raise GraphError(f"template {name!r} needs graph.group_size >= {min_group} responses per prompt, "
                         f"got {params.group_size}")
    gen = _generate_args(params)
    lengths = _lengths(params, gen)
    n = params.batch_size * params.group_size
    values = _at_sampling_temperature({**PG_PRESETS[name], **params.train}, gen)
    for key, want in (("group_size", params.group_size), ("max_response_len", gen.max_new_tokens)):
        if values.get(key, want) != want:
            raise GraphError(f"graph.train.{key}={values[key]} disagrees with the template's {want} "
                             f"(graph.group_size / graph.generate.max_new_tokens); set it there only")
        values[key] = want
    # without a KL term the reference is never read: no reference call (DAPO, GSPO, Dr. GRPO)
    kl = make_args("pg_actor", values, where="graph.train").kl_coef > 0
    if kl and "ref" not in models:
        raise GraphError(f"template {name!r} with graph.train.kl_coef > 0 needs a reference model; define "
                         "models.ref (e.g. init_from: actor) or set graph.train.kl_coef=0")
    inputs = ("seq", "old_logp", "rewards", *(("ref_logp",) if kl else ()))
    actor = _train("actor_train", "actor", "pg_actor", values, "graph.train", params, inputs, n, lengths)
    ref = (_infer("ref_inf", "ref", "logprobs", params, ("seq",), ("ref_logp",), n, lengths,
                  {"temperature": gen.temperature}),) if kl else ()
    return (
        _generate("actor_gen", params, gen, ("seq", "old_logp"), lengths),
        _reward_call("reward_inf", params, models, "seq", "rewards", n, lengths),
        *ref,
        actor,
    )


def check_pg_calls(calls: tuple[Call, ...] | list[Call]) -> None:
    """A pg_actor with a KL term reads the reference's log-probs (its 4th input)."""
    for call in calls:
        if call.interface == "pg_actor" and call.args.kl_coef > 0 and len(call.inputs) < 4:
            raise GraphError(f"call {call.name!r}: kl_coef={call.args.kl_coef} needs the reference's log-probs "
                             "as 4th input (seq, old_logp, rewards, ref_logp); add them or set kl_coef=0")


@template("rloo", roles=("actor", "ref", "reward"))
def rloo(params: TemplateParams, models: Mapping[str, ModelSpec]) -> tuple[Call, ...]:
    """RLOO (Ahmadian et al. 2024): leave-one-out baseline per group, KL in the reward."""
    return _pg_template("rloo", params, models, min_group=2)


@template("reinforce_pp", roles=("actor", "ref", "reward"))
def reinforce_pp(params: TemplateParams, models: Mapping[str, ModelSpec]) -> tuple[Call, ...]:
    """REINFORCE++ (Hu 2025): token-level KL in the reward, global batch advantage normalisation."""
    return _pg_template("reinforce_pp", params, models, min_group=1)


@template("gspo", roles=("actor", "reward"))
def gspo(params: TemplateParams, models: Mapping[str, ModelSpec]) -> tuple[Call, ...]:
    """GSPO (Zheng et al. 2025): length-normalised sequence importance ratio, clipped per sequence."""
    return _pg_template("gspo", params, models, min_group=2)


@template("dr_grpo", roles=("actor", "reward"))
def dr_grpo(params: TemplateParams, models: Mapping[str, ModelSpec]) -> tuple[Call, ...]:
    """Dr. GRPO (Liu et al. 2025): no length and no std normalisation."""
    return _pg_template("dr_grpo", params, models, min_group=2)


@template("dapo", roles=("actor", "reward"))
def dapo(params: TemplateParams, models: Mapping[str, ModelSpec]) -> tuple[Call, ...]:
    """DAPO (Yu et al. 2025): clip-higher, token-level loss, overlong shaping, dynamic sampling."""
    return _pg_template("dapo", params, models, min_group=2)
