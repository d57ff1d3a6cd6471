"""Plain, frozen specs of the dataflow graph: model architectures, models and calls.

Everything here is pure data (no torch): the planner, the cost model and the runtime
all read the same objects.
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from graph.errors import GraphError
from graph.lengths import LengthDist

_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]*$")

FAMILIES = ("llama", "qwen2", "gpt2")
"""Model families the engines can build."""

# HF `model_type` values that map onto a family the engines build.
_HF_MODEL_TYPES = {"llama": "llama", "mistral": "llama", "qwen2": "qwen2", "gpt2": "gpt2"}


def _rope_theta(config: Mapping[str, Any]) -> float:
    """RoPE base: top-level `rope_theta`, or transformers 5's `rope_parameters["rope_theta"]`."""
    if config.get("rope_theta") is not None:
        return float(config["rope_theta"])
    params = config.get("rope_parameters") or {}
    return float(params.get("rope_theta", 10000.0)) if isinstance(params, Mapping) else 10000.0


class CallKind(enum.StrEnum):
    """What a call does with its model: sample, score, or update it."""

    GENERATE = "generate"
    INFERENCE = "inference"
    TRAIN = "train"


def check_name(what: str, name: str) -> None:
    """Raise GraphError unless `name` is a usable identifier for a call, key or role."""
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise GraphError(
            f"{what} {name!r} is not a valid name; use letters, digits, '_' or '-', "
            "starting with a letter"
        )


@dataclass(frozen=True, kw_only=True)
class ModelArch:
    """Sizes of a decoder-only transformer, enough to build it and to price it."""

    family: str
    """Model family: llama, qwen2 or gpt2."""
    num_layers: int
    """Number of transformer layers."""
    hidden_size: int
    """Width of the residual stream."""
    ffn_hidden_size: int
    """Width of the MLP's inner layer."""
    num_heads: int
    """Number of attention (query) heads."""
    num_kv_heads: int
    """Number of key/value heads (GQA); equal to num_heads for plain multi-head attention."""
    vocab_size: int
    """Vocabulary size."""
    max_position_embeddings: int = 2048
    """Longest sequence the model supports."""
    tied_embeddings: bool = False
    """Whether the output layer shares the input embedding's weights."""
    qkv_bias: bool = False
    """Attention biases: on q/k/v for qwen2 and gpt2; on q/k/v/o for llama (HF `attention_bias`)."""
    norm_eps: float = 1e-5
    """Epsilon of the RMSNorm (llama, qwen2) or LayerNorm (gpt2)."""
    rope_theta: float = 10000.0
    """RoPE base frequency (llama, qwen2)."""

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"unknown model family {self.family!r}; known: {', '.join(FAMILIES)}")
        for name in ("num_layers", "hidden_size", "ffn_hidden_size", "num_heads",
                     "num_kv_heads", "vocab_size", "max_position_embeddings"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"model architecture: {name} must be a positive integer, got {value!r}")
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"model architecture: hidden_size {self.hidden_size} is not divisible by "
                f"num_heads {self.num_heads}"
            )
        if self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"model architecture: num_heads {self.num_heads} is not divisible by "
                f"num_kv_heads {self.num_kv_heads}"
            )

    @property
    def head_dim(self) -> int:
        """Width of one attention head."""
        return self.hidden_size // self.num_heads

    @classmethod
    def from_hf_config(cls, config: Mapping[str, Any]) -> ModelArch:
        """Read the sizes from a HF `config.json` dictionary."""
        model_type = config.get("model_type")
        family = _HF_MODEL_TYPES.get(str(model_type))
        if family is None:
            raise ValueError(
                f"unsupported HF model_type {model_type!r}; supported: {', '.join(sorted(_HF_MODEL_TYPES))}"
            )
        if family == "gpt2":
            hidden = int(config["n_embd"])
            return cls(
                family=family,
                num_layers=int(config["n_layer"]),
                hidden_size=hidden,
                ffn_hidden_size=int(config.get("n_inner") or 4 * hidden),
                num_heads=int(config["n_head"]),
                num_kv_heads=int(config["n_head"]),
                vocab_size=int(config["vocab_size"]),
                max_position_embeddings=int(config.get("n_positions", 1024)),
                tied_embeddings=bool(config.get("tie_word_embeddings", True)),
                qkv_bias=True,
                norm_eps=float(config.get("layer_norm_epsilon", 1e-5)),
            )
        num_heads = int(config["num_attention_heads"])
        return cls(
            family=family,
            num_layers=int(config["num_hidden_layers"]),
            hidden_size=int(config["hidden_size"]),
            ffn_hidden_size=int(config["intermediate_size"]),
            num_heads=num_heads,
            num_kv_heads=int(config.get("num_key_value_heads") or num_heads),
            vocab_size=int(config["vocab_size"]),
            max_position_embeddings=int(config.get("max_position_embeddings", 2048)),
            tied_embeddings=bool(config.get("tie_word_embeddings", False)),
            qkv_bias=family == "qwen2" or bool(config.get("attention_bias", False)),
            norm_eps=float(config.get("rms_norm_eps", 1e-6 if family == "qwen2" else 1e-5)),
            rope_theta=_rope_theta(config),
        )

    @classmethod
    def from_config_file(cls, path: str | Path) -> ModelArch:
        """Read a HF `config.json` (or a directory holding one)."""
        p = Path(path)
        if p.is_dir():
            p = p / "config.json"
        if not p.is_file():
            raise FileNotFoundError(f"model config {str(p)!r} does not exist; point to a HF config.json or its directory")
        try:
            config = json.loads(p.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"model config {str(p)!r} is not valid JSON: {exc.msg} at line {exc.lineno}") from None
        return cls.from_hf_config(config)

    def to_hf_config(self) -> dict[str, Any]:
        """A HF `config.json` dictionary that transformers builds this architecture from."""
        if self.family == "gpt2":
            return {
                "model_type": "gpt2",
                "architectures": ["GPT2LMHeadModel"],
                "n_layer": self.num_layers,
                "n_embd": self.hidden_size,
                "n_inner": self.ffn_hidden_size,
                "n_head": self.num_heads,
                "vocab_size": self.vocab_size,
                "n_positions": self.max_position_embeddings,
                "layer_norm_epsilon": self.norm_eps,
                "activation_function": "gelu_new",
                "tie_word_embeddings": True,
            }
        arch_name = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM"}[self.family]
        out: dict[str, Any] = {
            "model_type": self.family,
            "architectures": [arch_name],
            "num_hidden_layers": self.num_layers,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.ffn_hidden_size,
            "num_attention_heads": self.num_heads,
            "num_key_value_heads": self.num_kv_heads,
            "vocab_size": self.vocab_size,
            "max_position_embeddings": self.max_position_embeddings,
            "tie_word_embeddings": self.tied_embeddings,
            "rms_norm_eps": self.norm_eps,
            "rope_theta": self.rope_theta,
            "hidden_act": "silu",
        }
        if self.family == "llama":
            out["attention_bias"] = self.qkv_bias
        return out

    def num_params(self, *, value_head: bool = False) -> int:
        """Parameter count of the whole model (the LM head, or a scalar value head)."""
        h, f, v = self.hidden_size, self.ffn_hidden_size, self.vocab_size
        q_out = self.num_heads * self.head_dim
        kv_out = self.num_kv_heads * self.head_dim
        embed = v * h
        if self.family == "gpt2":
            per_layer = 2 * h + (h * 3 * h + 3 * h) + (h * h + h) + 2 * h + (h * f + f) + (f * h + h)
            total = embed + self.max_position_embeddings * h + self.num_layers * per_layer + 2 * h
        else:
            attn = h * q_out + 2 * h * kv_out + q_out * h
            if self.qkv_bias:
                attn += q_out + 2 * kv_out + (h if self.family == "llama" else 0)
            per_layer = attn + 3 * h * f + 2 * h
            total = embed + self.num_layers * per_layer + h
        if value_head:
            total += h  # a scalar head replaces the LM head
        elif not self.tied_embeddings:
            total += v * h
        return total


LORA_TARGETS = ("linear_qkv", "linear_proj", "linear_fc1", "linear_fc2")
"""Linear layers LoRA can adapt (Megatron names): fused QKV, attention output, MLP in, MLP out."""


@dataclass(frozen=True, kw_only=True)
class LoraSpec:
    """Low-rank adapters W + (alpha / rank) * B @ A on some linear layers; the base stays frozen."""

    rank: int
    """Rank r of the adapters: A is [r, in], B is [out, r]."""
    alpha: float
    """Scale numerator: the update is (alpha / rank) * B @ A."""
    targets: tuple[str, ...] = LORA_TARGETS
    """Megatron linear layers that get adapters (see LORA_TARGETS)."""

    def __post_init__(self) -> None:
        if not isinstance(self.rank, int) or isinstance(self.rank, bool) or self.rank < 1:
            raise ValueError(f"lora.rank={self.rank!r}: must be an integer >= 1 (e.g. 8)")
        if not isinstance(self.alpha, (int, float)) or self.alpha <= 0:
            raise ValueError(f"lora.alpha={self.alpha!r}: must be a number > 0 (e.g. 2 * rank)")
        if not self.targets:
            raise ValueError(f"lora.targets is empty; list some of {', '.join(LORA_TARGETS)}")
        for target in self.targets:
            if target not in LORA_TARGETS:
                raise ValueError(f"lora.targets: unknown target {target!r}; known: {', '.join(LORA_TARGETS)}")
        if len(set(self.targets)) != len(self.targets):
            raise ValueError(f"lora.targets lists a target twice: {list(self.targets)}; list each once")

    @property
    def scale(self) -> float:
        """alpha / rank, the factor on B @ A."""
        return self.alpha / self.rank


@dataclass(frozen=True, kw_only=True)
class RewardFunctionSpec:
    """A reward function written by the user, as `path/to/file.py:name` or `package.module:name`."""

    function: str
    """Where the function is: `FILE.py:NAME` (absolute once loaded) or `MODULE:NAME`."""
    weight: float = 1.0
    """Weight of its score in the reward (the weighted sum over functions)."""

    def __post_init__(self) -> None:
        target, sep, name = self.function.rpartition(":")
        if not sep or not target or not name.isidentifier():
            raise ValueError(f"reward function {self.function!r} must be 'path/to/file.py:name' or "
                             "'package.module:name'")

    @property
    def name(self) -> str:
        """The function's name (the part after the colon)."""
        return self.function.rpartition(":")[2]


@dataclass(frozen=True, kw_only=True)
class ModelSpec:
    """One model of the experiment, named by its role (actor, critic, ref, reward, ...)."""

    role: str
    """The role other parts of the graph refer to."""
    arch: ModelArch | None
    """Architecture; None only for a rule-based reward, which has no weights."""
    checkpoint: str | None = None
    """HF checkpoint directory to load; None means random initialisation."""
    trainable: bool = False
    """Whether a train call may update this model."""
    value_head: bool = False
    """A scalar value head instead of the LM head (critic and reward models)."""
    rule: str | None = None
    """Name of a rule-based reward function; set instead of an architecture."""
    init_from: str | None = None
    """Role whose initial weights this model copies (e.g. ref from actor)."""
    lora: LoraSpec | None = None
    """LoRA adapters (train only them, plus a value head); None trains every weight."""
    functions: tuple[RewardFunctionSpec, ...] = ()
    """Reward functions written by the user (weighted sum); set instead of an architecture or rule."""
    time_limit_s: float = 0.0
    """Longest a reward function may take on one batch, in seconds (0: no limit)."""

    def __post_init__(self) -> None:
        check_name("model role", self.role)
        if sum((self.arch is not None, self.rule is not None, bool(self.functions))) != 1:
            raise ValueError(
                f"model {self.role!r}: give exactly one of an architecture, a rule-based reward or reward functions"
            )
        if self.is_rule and self.trainable:
            raise ValueError(f"model {self.role!r}: a rule-based reward cannot be trainable")
        if self.time_limit_s < 0:
            raise ValueError(f"model {self.role!r}: time_limit_s must be >= 0 (0: no limit), got {self.time_limit_s}")
        if self.lora is not None and not self.trainable:
            raise ValueError(f"model {self.role!r}: lora is set on a model that is not trainable; "
                             "set trainable: true or drop lora")

    @property
    def is_rule(self) -> bool:
        """True for a rule-based reward or reward functions: no parameters."""
        return self.rule is not None or bool(self.functions)

    @property
    def num_params(self) -> int:
        """Parameter count (0 for a rule-based reward)."""
        return 0 if self.arch is None else self.arch.num_params(value_head=self.value_head)


@dataclass(frozen=True, kw_only=True)
class Call:
    """One model function call: a node of the dataflow graph (ReaLHF's MFC)."""

    name: str
    """Unique call name."""
    model: str
    """Role of the model the call runs on."""
    kind: CallKind
    """generate, inference or train."""
    interface: str
    """Registry key of the interface that implements the call."""
    args: Any = None
    """Typed interface arguments (the interface's args dataclass)."""
    inputs: tuple[str, ...] = ()
    """Data keys the call consumes."""
    outputs: tuple[str, ...] = ()
    """Data keys the call produces."""
    batch_size: int = 1
    """Number of sequences the call processes per iteration."""
    micro_batches: int = 1
    """Micro-batches the batch is split into (a lower bound; the planner may raise it)."""
    prompt_len: int = 0
    """Expected prompt tokens per sequence."""
    response_len: int = 0
    """Expected response tokens per sequence (generated, or given by the data)."""
    max_new_tokens: int = 0
    """For generate calls: the most tokens a response may have (sizes the KV cache)."""
    response_lengths: LengthDist | None = None
    """For generate calls: the per-sample response-length distribution the cost model prices a
    static batch with (its expected longest response); None prices every response at response_len."""

    def __post_init__(self) -> None:
        check_name("call", self.name)
        if not isinstance(self.kind, CallKind):
            raise ValueError(f"call {self.name!r}: kind {self.kind!r} is not one of generate, inference, train")
        for key in (*self.inputs, *self.outputs):
            check_name(f"call {self.name!r}: data key", key)
        if len(set(self.outputs)) != len(self.outputs):
            raise ValueError(f"call {self.name!r} lists an output key twice: {list(self.outputs)}")
        if self.batch_size < 1:
            raise ValueError(f"call {self.name!r}: batch_size must be >= 1, got {self.batch_size}")
        if self.micro_batches < 1:
            raise ValueError(f"call {self.name!r}: micro_batches must be >= 1, got {self.micro_batches}")
        if self.prompt_len < 0 or self.response_len < 0 or self.max_new_tokens < 0:
            raise ValueError(f"call {self.name!r}: sequence lengths must be >= 0")

    @property
    def seq_len(self) -> int:
        """Expected tokens per sequence (prompt plus response)."""
        return self.prompt_len + self.response_len

    @property
    def num_tokens(self) -> int:
        """Expected tokens the call processes per iteration."""
        return self.batch_size * self.seq_len


@dataclass(frozen=True, kw_only=True)
class DatasetSpec:
    """What the dataset provides to the graph."""

    format: str
    """Record format (see graph.dataset_keys.DATASET_FORMATS)."""
    keys: frozenset[str] = field(default_factory=frozenset)
    """Data keys that come from the dataset rather than from a call."""
