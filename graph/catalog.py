"""The catalog of interfaces: name, call kind and typed arguments.

The graph validates calls against this catalog; the runtime registers an
implementation under the same name. Arguments are frozen dataclasses so a Call stays
hashable and a misspelt argument is caught when the experiment loads. The registry itself
(entries, lookup, building arguments from YAML) is `graph.interface_registry`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from graph.interface_registry import INTERFACES as INTERFACES
from graph.interface_registry import InterfaceInfo as InterfaceInfo
from graph.interface_registry import get_interface as get_interface
from graph.interface_registry import interface
from graph.interface_registry import known_interfaces as known_interfaces
from graph.interface_registry import make_args as make_args
from graph.spec import CallKind

REHEARSAL_SOURCES = ("rollouts", "data")
"""Where ppo_actor's Selective Rehearsal draws its pairs from (PPOActorArgs.rehearsal_source)."""
REHEARSAL_RANKS = ("likelihood", "advantage", "advantage_policy")
"""How ppo_actor ranks a data pool's pairs within a cluster (PPOActorArgs.rehearsal_rank)."""
SCORED_RANKS = ("advantage", "advantage_policy")
"""Ranks that read the reward model's scores of the pool (the `rehearsal_score` call):
advantage scores the pool's reference answers, advantage_policy the policy's own responses to
the pool's prompts (the `rehearsal_gen` call generates them)."""


def _check_temperature(args: Any) -> None:
    if args.temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {args.temperature}")


POLICY_INTERFACES = ("ppo_actor", "grpo_actor", "remax_actor", "pg_actor")
"""Train interfaces whose loss recomputes the log-probs of sampled tokens: they divide the logits
by their `temperature`, which must be the sampling temperature of the generate call feeding them."""


def _check_range(name: str, value: float, lo: float, hi: float) -> None:
    if not lo <= value <= hi:
        raise ValueError(f"{name} must be in [{lo}, {hi}], got {value}")


# --------------------------------------------------------------------------- generate


@interface("generate", CallKind.GENERATE, inputs=("prompts",), outputs=("sequences", "logprobs"), required=1)
@dataclass(frozen=True, kw_only=True)
class GenerateArgs:
    """Sample responses to prompts (KV-cached decoding)."""

    max_new_tokens: int = 32
    """Most tokens generated per response."""
    min_new_tokens: int = 0
    """Fewest tokens generated before EOS is allowed."""
    greedy: bool = False
    """Take the most likely token instead of sampling."""
    temperature: float = 1.0
    """Sampling temperature."""
    top_p: float = 1.0
    """Nucleus sampling mass (1.0 keeps every token)."""
    top_k: int = 0
    """Keep only the k most likely tokens (0 keeps every token)."""
    num_samples: int = 1
    """Responses per prompt (the group size of GRPO)."""
    stop_strings: tuple = ()
    """Strings that end a response besides EOS."""

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if not 0 <= self.min_new_tokens <= self.max_new_tokens:
            raise ValueError("min_new_tokens must be in [0, max_new_tokens]")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        _check_range("top_p", self.top_p, 1e-6, 1.0)
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {self.top_k}")
        if self.num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {self.num_samples}")


@interface("pool_generate", CallKind.GENERATE, inputs=("prompts",), outputs=("sequences",))
@dataclass(frozen=True, kw_only=True)
class PoolGenerateArgs(GenerateArgs):
    """The policy's responses to the Selective Rehearsal pool's prompts, generated every `every` iterations."""

    every: int = 1
    """Iterations between two generations (the actor's rehearsal_every); in between the call returns the last responses."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.every < 1:
            raise ValueError(f"every must be >= 1, got {self.every}")
        if self.num_samples != 1:
            raise ValueError(f"num_samples must be 1 (one response per pool prompt), got {self.num_samples}")


# --------------------------------------------------------------------------- inference


@interface("logprobs", CallKind.INFERENCE, inputs=("sequences",), outputs=("logprobs",))
@dataclass(frozen=True, kw_only=True)
class LogprobsArgs:
    """Token log-probabilities of the response under the model (ref or old actor)."""

    temperature: float = 1.0
    """Temperature the logits are divided by (match the generation's)."""

    def __post_init__(self) -> None:
        _check_temperature(self)


@interface("values", CallKind.INFERENCE, inputs=("sequences",), outputs=("values",))
@dataclass(frozen=True, kw_only=True)
class ValuesArgs:
    """Per-token values from a critic."""


@interface("reward_model", CallKind.INFERENCE, inputs=("sequences",), outputs=("rewards",))
@dataclass(frozen=True, kw_only=True)
class RewardModelArgs:
    """Sequence rewards from a reward model's value head at the last token."""


@interface("advantage_model", CallKind.INFERENCE, inputs=("sequences",), outputs=("rewards",))
@dataclass(frozen=True, kw_only=True)
class AdvantageModelArgs:
    """Sequence rewards in the Advantage Model form: the score at the last token minus the score at the last prompt token."""


@interface("pool_scores", CallKind.INFERENCE, inputs=("sequences",), outputs=("pool_scores",))
@dataclass(frozen=True, kw_only=True)
class PoolScoresArgs:
    """Reward-model scores of the Selective Rehearsal pool's pairs (reference answers, or the policy's responses), computed every `every` iterations."""

    form: str = "advantage"
    """How the reward model scores: advantage (last-token minus last-prompt-token score, an AM) or reward (last-token score)."""
    every: int = 1
    """Iterations between two scorings (the actor's rehearsal_every); in between the call returns the last scores."""

    def __post_init__(self) -> None:
        if self.form not in ("advantage", "reward"):
            raise ValueError(f"form must be advantage or reward, got {self.form!r}")
        if self.every < 1:
            raise ValueError(f"every must be >= 1, got {self.every}")


@interface("rule_reward", CallKind.INFERENCE, needs_weights=False, inputs=("sequences", "answers"), outputs=("rewards",),
           required=1)
@dataclass(frozen=True, kw_only=True)
class RuleRewardArgs:
    """Sequence rewards from a rule (the model's `rule`) or the user's reward functions (its `functions`)."""

    correct: float = 1.0
    """Reward of a correct response."""
    wrong: float = 0.0
    """Reward of a wrong or malformed response."""
    unfinished_scale: float = 1.0
    """Factor on the score of a response that does not end at EOS (cut at max_new_tokens): 1 ignores stopping, 0 scores only responses that stop."""
    eos_bonus: float = 0.0
    """Added to the reward of every response that ends at EOS: a format term that teaches stopping."""

    def __post_init__(self) -> None:
        _check_range("unfinished_scale", self.unfinished_scale, 0.0, 1.0)
        if self.eos_bonus < 0:
            raise ValueError(f"eos_bonus must be >= 0, got {self.eos_bonus}")


# --------------------------------------------------------------------------- train


@dataclass(frozen=True, kw_only=True)
class OptimArgs:
    """Settings every train interface shares."""

    lr: float = 1e-5
    """Peak learning rate."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    grad_clip: float = 1.0
    """Gradient-norm clip (0 disables it)."""
    warmup_steps: int = 0
    """Linear warm-up steps of the LR schedule."""
    lr_schedule: str = "constant"
    """constant, linear or cosine decay after warm-up."""

    def __post_init__(self) -> None:
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.lr_schedule not in ("constant", "linear", "cosine"):
            raise ValueError(f"lr_schedule must be constant, linear or cosine, got {self.lr_schedule!r}")


@interface("sft", CallKind.TRAIN, inputs=("sequences",))
@dataclass(frozen=True, kw_only=True)
class SFTArgs(OptimArgs):
    """Supervised fine-tuning: cross-entropy on the answer tokens."""


@interface("rw_pairwise", CallKind.TRAIN, inputs=("pairs",))
@dataclass(frozen=True, kw_only=True)
class RewardPairwiseArgs(OptimArgs):
    """Reward-model training with the Bradley-Terry pairwise loss."""


@interface("am_pairwise", CallKind.TRAIN, inputs=("pairs",))
@dataclass(frozen=True, kw_only=True)
class AdvantagePairwiseArgs(OptimArgs):
    """Advantage-Model training: ranking loss on advantages, centred and bounded (Peng et al. 2023)."""

    bound: float = 2.5
    """m: advantages beyond +-bound are penalised (the paper's m(x) = 2.5)."""
    bound_coef: float = 1.0
    """Weight of the squared hinge relu(|a| - bound)^2 that keeps advantages bounded."""
    center_coef: float = 1.0
    """Weight of the squared pair-mean advantage ((a_c + a_r) / 2)^2 that centres advantages at 0 per prompt."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.bound <= 0:
            raise ValueError(f"bound must be > 0, got {self.bound}")
        if self.bound_coef < 0 or self.center_coef < 0:
            raise ValueError("bound_coef and center_coef must be >= 0")


REWARD_SHAPING_ARGS = ("kl_coef", "kl_in_reward", "adaptive_kl_target", "adaptive_kl_horizon",
                      "reward_clip", "normalize_reward", "gamma", "lam")
"""Arguments ppo_actor and ppo_critic must share: both compute the same GAE targets from the
same (normalised, clipped, KL-penalised) rewards, each on its own engine, from the same
batch statistics (see runtime.interfaces.train.shape_rewards)."""


def _check_reward_shaping(args: Any) -> None:
    if args.kl_coef < 0:
        raise ValueError(f"kl_coef must be >= 0, got {args.kl_coef}")
    if args.adaptive_kl_target < 0:
        raise ValueError(f"adaptive_kl_target must be >= 0 (0 keeps kl_coef fixed), got {args.adaptive_kl_target}")
    if args.adaptive_kl_horizon < 1:
        raise ValueError(f"adaptive_kl_horizon must be >= 1, got {args.adaptive_kl_horizon}")
    if args.adaptive_kl_target > 0 and args.kl_coef == 0:
        raise ValueError("adaptive_kl_target needs kl_coef > 0 (the controller scales it)")
    if args.reward_clip <= 0:
        raise ValueError(f"reward_clip must be > 0, got {args.reward_clip}")
    _check_range("gamma", args.gamma, 0.0, 1.0)
    _check_range("lam", args.lam, 0.0, 1.0)


@interface("ppo_actor", CallKind.TRAIN,
           inputs=("sequences", "logprobs", "ref_logprobs", "rewards", "values", "ptx", "pool_scores",
                   "pool_responses"), required=4)
@dataclass(frozen=True, kw_only=True)
class PPOActorArgs(OptimArgs):
    """PPO policy update: clipped ratio, KL to the reference (fixed or adaptive), entropy bonus, ptx."""

    eps_clip: float = 0.2
    """Ratio clip range."""
    kl_coef: float = 0.1
    """Initial KL penalty coefficient."""
    kl_in_reward: bool = True
    """Add the KL penalty to the reward (True) or as a loss term (False)."""
    adaptive_kl_target: float = 0.0
    """Target KL of the adaptive controller (0 keeps the coefficient fixed)."""
    adaptive_kl_horizon: int = 10000
    """Horizon of the adaptive KL controller, in samples: coef *= 1 + clip(kl/target - 1, +-0.2) * batch/horizon."""
    entropy_coef: float = 0.0
    """Entropy bonus coefficient."""
    gamma: float = 1.0
    """GAE discount."""
    lam: float = 0.95
    """GAE lambda."""
    reward_clip: float = 10.0
    """Clip rewards to [-reward_clip, reward_clip]."""
    normalize_reward: bool = False
    """Normalise sequence rewards by their running mean and std over all batches so far (before clipping)."""
    whiten_advantages: bool = True
    """Whiten advantages over the batch."""
    ppo_epochs: int = 1
    """Passes over the batch per iteration."""
    mini_batches: int = 1
    """Optimizer steps per pass."""
    ptx_coef: float = 0.0
    """Weight of the pretraining/SFT loss on data.ptx mixed into the actor loss (0 disables ptx)."""
    rehearsal_coef: float = 0.0
    """Weight of the Selective Rehearsal SFT loss on the kept rollouts (0 disables rehearsal)."""
    rehearsal_every: int = 1
    """Iterations between two selections of the rehearsal set (1 reselects every iteration)."""
    rehearsal_clusters: int = 2
    """k of the k-means over the actor's prompt embeddings (mean last hidden state)."""
    rehearsal_per_cluster: int = 2
    """Rollouts kept per cluster: the highest-reward ones whose reward (advantage) is > rehearsal_min_reward."""
    rehearsal_min_reward: float = 0.0
    """A rollout (rehearsal_rank=advantage / advantage_policy: a pool pair / the policy's response) is kept only above this reward (0: better than expected under the AM); not read with rehearsal_rank=likelihood."""
    rehearsal_source: str = "rollouts"
    """Where the rehearsed pairs come from: rollouts (this iteration's PPO rollouts, ranked by reward) or data (the supervised pool at rehearsal_path, ranked by rehearsal_rank)."""
    rehearsal_path: str | None = None
    """rehearsal_source=data: JSONL of {prompt, answer} records (the data.ptx format), the rehearsal pool."""
    rehearsal_rank: str = "likelihood"
    """rehearsal_source=data: how pairs are ranked per cluster: likelihood (the policy's mean log-likelihood of the answer), advantage (the reward model's score of the reference pair) or advantage_policy (the reward model's score of the policy's own response to the pool prompt, which is then rehearsed)."""
    rehearsal_pool_size: int = 0
    """Records in the rehearsal pool: set when the experiment loads (read from rehearsal_path); the planner prices the selection by it."""
    temperature: float = 1.0
    """Sampling temperature of the generate call feeding this update: log-probs use logits / temperature (templates copy graph.generate's)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_range("eps_clip", self.eps_clip, 0.0, 1.0)
        if self.rehearsal_coef < 0:
            raise ValueError(f"rehearsal_coef must be >= 0, got {self.rehearsal_coef}")
        if min(self.rehearsal_every, self.rehearsal_clusters, self.rehearsal_per_cluster) < 1:
            raise ValueError("rehearsal_every, rehearsal_clusters and rehearsal_per_cluster must be >= 1")
        if self.rehearsal_source not in REHEARSAL_SOURCES:
            raise ValueError(f"rehearsal_source: {self.rehearsal_source!r} is not one of {', '.join(REHEARSAL_SOURCES)}")
        if self.rehearsal_source == "data" and self.rehearsal_coef > 0 and not self.rehearsal_path:
            raise ValueError("rehearsal_source=data needs the pool: set graph.train.rehearsal_path to a JSONL of "
                             "{prompt, answer} records")
        if self.rehearsal_rank not in REHEARSAL_RANKS:
            raise ValueError(f"rehearsal_rank: {self.rehearsal_rank!r} is not one of {', '.join(REHEARSAL_RANKS)}")
        if self.rehearsal_rank in SCORED_RANKS and self.rehearsal_source != "data":
            raise ValueError(f"rehearsal_rank={self.rehearsal_rank} ranks a data pool; with rehearsal_source=rollouts "
                             "the rollouts are already ranked by their reward: set rehearsal_source=data or "
                             "rehearsal_rank=likelihood")
        if self.rehearsal_pool_size < 0:
            raise ValueError(f"rehearsal_pool_size must be >= 0, got {self.rehearsal_pool_size}")
        if self.rehearsal_path and self.rehearsal_source != "data":
            raise ValueError(f"rehearsal_path={self.rehearsal_path!r} is read only with rehearsal_source=data; "
                             "set graph.train.rehearsal_source=data or rehearsal_path=null")
        _check_reward_shaping(self)
        if self.ppo_epochs < 1 or self.mini_batches < 1:
            raise ValueError("ppo_epochs and mini_batches must be >= 1")
        if self.entropy_coef < 0 or self.ptx_coef < 0:
            raise ValueError("entropy_coef and ptx_coef must be >= 0")
        _check_temperature(self)


@interface("ppo_critic", CallKind.TRAIN, inputs=("sequences", "logprobs", "ref_logprobs", "rewards", "values"))
@dataclass(frozen=True, kw_only=True)
class PPOCriticArgs(OptimArgs):
    """PPO value update with a clipped value loss."""

    value_clip: float = 0.2
    """Value clip range around the old values."""
    gamma: float = 1.0
    """GAE discount."""
    lam: float = 0.95
    """GAE lambda."""
    kl_coef: float = 0.1
    """KL penalty folded into the reward (the PPO template copies it from the actor)."""
    kl_in_reward: bool = True
    """Whether the actor folds the KL penalty into the reward (copied from the actor)."""
    adaptive_kl_target: float = 0.0
    """Target KL of the adaptive controller (copied from the actor)."""
    adaptive_kl_horizon: int = 10000
    """Horizon of the adaptive KL controller (copied from the actor)."""
    reward_clip: float = 10.0
    """Clip rewards to [-reward_clip, reward_clip] (copied from the actor)."""
    normalize_reward: bool = False
    """Normalise rewards by running statistics (copied from the actor)."""
    ppo_epochs: int = 1
    """Passes over the batch per iteration."""
    mini_batches: int = 1
    """Optimizer steps per pass."""

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_reward_shaping(self)
        if self.value_clip <= 0:
            raise ValueError(f"value_clip must be > 0, got {self.value_clip}")
        if self.ppo_epochs < 1 or self.mini_batches < 1:
            raise ValueError("ppo_epochs and mini_batches must be >= 1")


@interface("grpo_actor", CallKind.TRAIN, inputs=("sequences", "logprobs", "ref_logprobs", "rewards"))
@dataclass(frozen=True, kw_only=True)
class GRPOActorArgs(OptimArgs):
    """GRPO policy update with group-normalised advantages and a KL loss."""

    group_size: int = 4
    """Responses per prompt."""
    eps_clip: float = 0.2
    """Ratio clip range."""
    kl_coef: float = 0.04
    """KL loss coefficient."""
    kl_estimator: str = "k3"
    """KL estimator: k1 or k3."""
    variance_increase: bool = False
    """GRPOVI: adjust each group's rewards to maximise their variance (arXiv 2505.23247)."""
    reward_min: float = 0.0
    """Lower bound m of the adjusted rewards (GRPOVI)."""
    reward_max: float = 1.0
    """Upper bound M of the adjusted rewards (GRPOVI)."""
    ppo_epochs: int = 1
    """Passes over the batch per iteration."""
    mini_batches: int = 1
    """Optimizer steps per pass."""
    temperature: float = 1.0
    """Sampling temperature of the generate call feeding this update: log-probs use logits / temperature (templates copy graph.generate's)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.group_size < 2:
            raise ValueError(f"group_size must be >= 2, got {self.group_size}")
        if self.kl_estimator not in ("k1", "k3"):
            raise ValueError(f"kl_estimator must be k1 or k3, got {self.kl_estimator!r}")
        if self.reward_min >= self.reward_max:
            raise ValueError("reward_min must be below reward_max")
        _check_temperature(self)


@interface("remax_actor", CallKind.TRAIN, inputs=("sequences", "logprobs", "ref_logprobs", "rewards", "baseline_rewards"))
@dataclass(frozen=True, kw_only=True)
class ReMaxActorArgs(OptimArgs):
    """ReMax policy update: sampled reward minus the greedy baseline's reward."""

    kl_coef: float = 0.1
    """KL penalty coefficient."""
    temperature: float = 1.0
    """Sampling temperature of the generate call feeding this update: log-probs use logits / temperature (templates copy graph.generate's)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_temperature(self)

@interface("dpo", CallKind.TRAIN, inputs=("pairs", "ref_logprobs"))
@dataclass(frozen=True, kw_only=True)
class DPOArgs(OptimArgs):
    """Direct preference optimisation against a frozen reference."""

    beta: float = 0.1
    """Inverse temperature of the implicit reward."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.beta <= 0:
            raise ValueError(f"beta must be > 0, got {self.beta}")


# --------------------------------------------------------------------------- policy-gradient family

ADVANTAGE_ESTIMATORS = ("grpo", "rloo", "reinforce_pp", "group_mean")
"""pg_actor's advantage estimators (runtime.interfaces.pg_math)."""
LOSS_AGGREGATIONS = ("token_mean", "seq_mean_token_mean", "seq_mean_token_sum_norm")
"""pg_actor's loss aggregations (runtime.interfaces.pg_math.aggregate)."""


@interface("pg_actor", CallKind.TRAIN, inputs=("sequences", "logprobs", "rewards", "ref_logprobs"), required=3)
@dataclass(frozen=True, kw_only=True)
class PGActorArgs(OptimArgs):
    """Critic-free policy gradient: RLOO, REINFORCE++, GSPO, Dr. GRPO, DAPO (by options).

    The reference's log-probs (4th input) are needed only with kl_coef > 0.
    """

    group_size: int = 1
    """Responses per prompt (consecutive sequences); 1 only for reinforce_pp."""
    advantage: str = "grpo"
    """grpo (group mean/std), rloo (leave-one-out), reinforce_pp (KL in reward, global norm), group_mean (Dr. GRPO)."""
    ratio: str = "token"
    """Importance ratio: token (PPO/GRPO) or sequence (GSPO: length-normalised, clipped per sequence)."""
    loss_agg: str = "token_mean"
    """token_mean (DAPO), seq_mean_token_mean (GRPO paper) or seq_mean_token_sum_norm (Dr. GRPO)."""
    eps_low: float = 0.2
    """Lower clip: the ratio is clipped at 1 - eps_low."""
    eps_high: float = 0.2
    """Upper clip: 1 + eps_high (DAPO's clip-higher sets it above eps_low)."""
    kl_coef: float = 0.0
    """KL coefficient: a per-token penalty in the reward (kl_in_reward) or a loss term."""
    kl_in_reward: bool = False
    """Fold -kl_coef x (logp - ref_logp) into the reward per token (RLOO, REINFORCE++) instead of a KL loss."""
    kl_estimator: str = "k3"
    """KL estimator of the loss term: k1 or k3."""
    max_response_len: int = 0
    """Generation budget in tokens (templates copy graph.generate.max_new_tokens); Dr. GRPO's divisor and DAPO's overlong limit."""
    temperature: float = 1.0
    """Sampling temperature of the generate call feeding this update: log-probs use logits / temperature (templates copy graph.generate's)."""
    overlong_buffer: int = 0
    """DAPO soft overlong punishment: the last this-many tokens before max_response_len are penalised linearly (0: off)."""
    overlong_penalty: float = 1.0
    """Penalty at max_response_len of the overlong punishment."""
    dynamic_sampling: bool = False
    """DAPO: drop groups whose rewards are all equal and refill the batch by generating more."""
    max_sampling_rounds: int = 4
    """Most generation rounds per iteration with dynamic sampling (the first included)."""
    expected_sampling_rounds: float = 1.5
    """Generation rounds per iteration the planner expects with dynamic sampling (prices the generate and reward calls)."""
    ppo_epochs: int = 1
    """Passes over the batch per iteration."""
    mini_batches: int = 1
    """Optimizer steps per pass."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.group_size < 1:
            raise ValueError(f"group_size must be >= 1, got {self.group_size}")
        for key, value, known in (("advantage", self.advantage, ADVANTAGE_ESTIMATORS),
                                  ("ratio", self.ratio, ("token", "sequence")),
                                  ("loss_agg", self.loss_agg, LOSS_AGGREGATIONS),
                                  ("kl_estimator", self.kl_estimator, ("k1", "k3"))):
            if value not in known:
                raise ValueError(f"{key} must be one of {', '.join(known)}, got {value!r}")
        if self.group_size < 2 and self.advantage != "reinforce_pp":
            raise ValueError(f"advantage {self.advantage!r} compares responses of one prompt: "
                             f"group_size must be >= 2, got {self.group_size}")
        _check_range("eps_low", self.eps_low, 0.0, 1.0)
        if self.eps_high < 0:
            raise ValueError(f"eps_high must be >= 0, got {self.eps_high}")
        if self.kl_coef < 0:
            raise ValueError(f"kl_coef must be >= 0, got {self.kl_coef}")
        if self.max_response_len < 0 or self.overlong_buffer < 0:
            raise ValueError("max_response_len and overlong_buffer must be >= 0")
        if self.overlong_buffer and not self.overlong_buffer <= self.max_response_len:
            raise ValueError(f"overlong_buffer={self.overlong_buffer} needs max_response_len >= it "
                             f"(got {self.max_response_len}); the templates copy it from max_new_tokens")
        if self.loss_agg == "seq_mean_token_sum_norm" and self.max_response_len < 1:
            raise ValueError("loss_agg seq_mean_token_sum_norm divides by max_response_len; set it >= 1")
        if self.dynamic_sampling and self.group_size < 2:
            raise ValueError("dynamic_sampling drops groups with equal rewards: it needs group_size >= 2")
        if self.max_sampling_rounds < 1:
            raise ValueError(f"max_sampling_rounds must be >= 1, got {self.max_sampling_rounds}")
        if not 1.0 <= self.expected_sampling_rounds <= self.max_sampling_rounds:
            raise ValueError(f"expected_sampling_rounds must be in [1, max_sampling_rounds="
                             f"{self.max_sampling_rounds}], got {self.expected_sampling_rounds}")
        if self.ppo_epochs < 1 or self.mini_batches < 1:
            raise ValueError("ppo_epochs and mini_batches must be >= 1")
