"""The experiment schema: typed dataclasses that Hydra-composed YAML is checked against.

Every field carries a one-line docstring under it; `realloc keys` and the error
messages for unknown keys are generated from them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from planner.options import ManualLayout
from runtime.data.settings import DataConfig


@dataclass
class ArchConfig:
    """Inline model architecture (instead of a HF config.json)."""

    family: str = "llama"
    """Model family: llama, qwen2 or gpt2."""
    num_layers: int = 2
    """Number of transformer layers."""
    hidden_size: int = 64
    """Width of the residual stream."""
    ffn_hidden_size: int = 128
    """Width of the MLP's inner layer."""
    num_heads: int = 4
    """Number of attention heads."""
    num_kv_heads: int | None = None
    """Number of key/value heads (GQA); null means num_heads."""
    vocab_size: int = 64
    """Vocabulary size."""
    max_position_embeddings: int = 512
    """Longest sequence the model supports."""
    tied_embeddings: bool = False
    """Share the input embedding with the output layer."""
    qkv_bias: bool = False
    """Biases on the q/k/v projections (Qwen2 style)."""
    norm_eps: float = 1e-5
    """Epsilon of the normalisation layers."""
    rope_theta: float = 10000.0
    """RoPE base frequency."""


@dataclass
class LoraConfig:
    """LoRA adapters of a trainable model (under `models.ROLE.lora`)."""

    rank: int = 8
    """Rank r of the adapters (>= 1)."""
    alpha: float = 16.0
    """Scale numerator: the update is alpha / rank * B @ A."""
    targets: list[str] = field(default_factory=lambda: ["linear_qkv", "linear_proj", "linear_fc1", "linear_fc2"])
    """Linear layers to adapt: linear_qkv, linear_proj, linear_fc1, linear_fc2."""


@dataclass
class RewardFunctionConfig:
    """One reward function of `models.reward.functions`."""

    function: str = "???"
    """The function: path/to/file.py:name (relative to the experiment's folder, else the working directory) or package.module:name."""
    weight: float = 1.0
    """Weight of its score in the reward (weighted sum over the functions)."""


@dataclass
class ModelConfig:
    """One model, named by its role under `models:`."""

    arch: ArchConfig | None = None
    """Inline architecture; give this, `config`, `checkpoint` or `rule`."""
    config: str | None = None
    """Path to a HF config.json (or its directory) giving the architecture."""
    checkpoint: str | None = None
    """HF checkpoint directory to load weights from; null means random init."""
    trainable: bool = False
    """Whether a train call may update this model."""
    value_head: bool = False
    """Scalar value head instead of the LM head (critic and reward models)."""
    rule: str | None = None
    """Name of a rule-based reward function (no weights)."""
    function: str | None = None
    """Your reward function, path/to/file.py:name or package.module:name, called as name(prompts, completions, **columns)."""
    functions: list[RewardFunctionConfig] = field(default_factory=list)
    """Several reward functions, each {function, weight}; the reward is their weighted sum, each logged as reward_NAME."""
    time_limit_s: float = 0.0
    """Longest one reward function may take on one batch, in seconds (0: no limit)."""
    init_from: str | None = None
    """Role whose initial weights this model copies, e.g. ref from actor."""
    lora: LoraConfig | None = None
    """LoRA adapters (rank, alpha, targets); null trains every weight. Needs trainable: true."""


@dataclass
class CallConfig:
    """One call of a custom graph, under `graph.calls.NAME`."""

    model: str = "???"
    """Role of the model the call runs on."""
    kind: str = "???"
    """generate, inference or train."""
    interface: str = "???"
    """Interface name (see `realloc keys interfaces`)."""
    args: dict[str, Any] = field(default_factory=dict)
    """Arguments of the interface."""
    inputs: list[str] = field(default_factory=list)
    """Data keys the call consumes."""
    outputs: list[str] = field(default_factory=list)
    """Data keys the call produces."""
    batch_size: int | None = None
    """Sequences per iteration; null takes graph.batch_size (times group_size after generation)."""
    micro_batches: int | None = None
    """Micro-batches; null takes graph.micro_batches."""


@dataclass
class GraphConfig:
    """The algorithm: a template, or calls written one by one."""

    template: str | None = "ppo"
    """Template name (ppo, grpo, remax, sft, rm, am, dpo), or null for a custom graph in `calls`."""
    batch_size: int = 8
    """Prompts (RL), samples (SFT) or preference pairs (RM, DPO) per iteration."""
    group_size: int = 1
    """Responses per prompt (GRPO's group size)."""
    reward_form: str = "reward"
    """How a neural reward model scores rollouts: reward (last-token score) or advantage (an Advantage Model trained by template am)."""
    micro_batches: int = 1
    """Micro-batches per call (a lower bound; the planner may raise it)."""
    generate: dict[str, Any] = field(default_factory=dict)
    """Arguments of the generate interface (max_new_tokens, temperature, top_p, ...)."""
    train: dict[str, Any] = field(default_factory=dict)
    """Arguments of the main train interface (lr, eps_clip, kl_coef, ...)."""
    critic_train: dict[str, Any] = field(default_factory=dict)
    """Arguments of the critic's train interface (PPO)."""
    reward: dict[str, Any] | None = field(default_factory=dict)
    """Arguments of the rule/function reward call (correct, wrong, unfinished_scale)."""
    calls: dict[str, CallConfig] = field(default_factory=dict)
    """Custom graph: call name -> call; used when template is null."""


@dataclass
class ClusterConfig:
    """The devices to plan for and run on."""

    nodes: int = 1
    """Number of nodes."""
    devices_per_node: int = 4
    """Devices per node (GPUs, or worker processes on CPU)."""
    device: str = "cpu"
    """Device type: cpu (gloo) or cuda (NCCL)."""
    hardware: str = "cpu-gloo"
    """Hardware preset the cost model uses (cpu-gloo, a100-40g, a100-80g, h100-80g, h200)."""
    profile: str | None = None
    """Measured profile file (JSON); used instead of the preset when given."""
    port: int = 0
    """Rendezvous port of the workers; 0 picks a free one."""
    collective_timeout_s: float = 120.0
    """Longest a worker waits on a peer (a send, a gather) before the run fails; raise it when one iteration's call takes longer (real models on CPU)."""


@dataclass
class PlanConfig:
    """How the execution plan is chosen."""

    mode: str = "search"
    """search, heuristic:NAME (symmetric, colocated-dp, disaggregated), manual or file."""
    time_budget_s: float = 10.0
    """Search time budget in seconds."""
    seed: int = 0
    """Search seed; the same seed and budget give the same plan."""
    file: str | None = None
    """Plan file to run unchanged (mode=file)."""
    layouts: dict[str, ManualLayout] = field(default_factory=dict)
    """Per-call layouts (mode=manual), by call name."""
    allow_pp_generate: bool = False
    """Let generate calls use pipeline parallelism."""
    compare_heuristics: bool = True
    """Also price the heuristic baselines in `realloc plan`."""
    fusion: str = "off"
    """Stage fusion: off, inter (stream finished samples from generate into inference calls), intra (two train calls on the same devices, dp, tp and pp > 1 share one pipeline per step: one fill/drain instead of two), all (inter + intra), or auto (the planner keeps each streamed edge and fused pair that lowers the estimate)."""
    response_lengths: str = "fixed"
    """Response lengths generate calls are priced with: fixed, longtail, data, or a previous run's metrics.jsonl."""


@dataclass
class TrainConfig:
    """The training loop."""

    iterations: int = 20
    """RLHF iterations (or SFT/RM/DPO steps) to run."""
    run_dir: str = "runs/${name}"
    """Where the config, plan, logs, metrics and checkpoints go."""
    save_every: int = 0
    """Checkpoint every N iterations into run_dir/checkpoints (0: only after the last iteration)."""
    keep_checkpoints: int = 2
    """Complete checkpoints to keep (the newest ones)."""
    log_every: int = 1
    """Print a metrics line every N iterations."""
    dtype: str = "auto"
    """Parameter dtype: auto (bf16 on cuda, fp32 on cpu), fp32 or bf16."""
    resume: bool = False
    """Resume from the newest complete checkpoint in run_dir (same experiment and plan)."""
    ema_decay: float = 0.0
    """EMA decay d of the ema_models (ema = d*ema + (1-d)*w after each optimizer step); 0 is off."""
    ema_models: list[str] = field(default_factory=lambda: ["actor"])
    """Trained models that keep an EMA when ema_decay > 0; saved as run_dir/models/ROLE_ema."""
    eval_every: int = 0
    """Score data.eval_path's prompts (greedy responses, the reward call's rule or functions) every N iterations; 0 is off."""
    free_replicas: bool = True
    """Free a trained model's extra replicas between uses (reallocation refreshes them anyway)."""
    off_policy_steps: int = 0
    """0: on-policy; 1: generate batch k+1 with weights one version old, overlapping training of batch k."""


@dataclass
class ExperimentConfig:
    """A whole experiment."""

    name: str = "experiment"
    """Experiment name (used in run_dir)."""
    seed: int = 1
    """Global seed (model init, sampling)."""
    models: dict[str, ModelConfig] = field(default_factory=dict)
    """Models by role: actor, critic, ref, reward, ..."""
    graph: GraphConfig = field(default_factory=GraphConfig)
    """The algorithm's dataflow graph."""
    data: DataConfig = field(default_factory=DataConfig)
    """Training data."""
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    """Devices."""
    plan: PlanConfig = field(default_factory=PlanConfig)
    """Plan selection."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """Training loop."""
    defs: dict[str, Any] = field(default_factory=dict)
    """Reusable values for interpolation, e.g. ${defs.llama2_7b}; not read otherwise."""
