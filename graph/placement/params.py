"""The parameter manifest of a model as Megatron-core's GPTModel (local layer spec) holds it.

Each ParamInfo names one parameter with Megatron's naming and the GLOBAL layer index
(`decoder.layers.3.self_attention.linear_qkv.weight`), its global shape, how tensor
parallelism cuts it, and which pipeline stage(s) hold it. Transfer plans
(`cost_model.transfer_cost`) and the runtime's reallocation both read it.

How a TP shard is cut along `tp_dim` (the rank's local tensor is the concatenation,
in order, of the global index runs `shard_runs` returns):
- "replicated": every TP rank holds the whole tensor (norms, row-parallel biases,
  position embeddings, a value head);
- "contiguous": rank r holds rows [r*n/tp, (r+1)*n/tp). The fused QKV weight
  [ng*(nh/ng+2)*d, h] is ordered per query group (group g's q heads, k_g, v_g), so a
  contiguous cut is a run of whole groups (this needs num_kv_heads % tp == 0);
- "gate_up": the fused SwiGLU `linear_fc1` [2f, h] = cat[gate, up]; rank r holds
  cat[gate_r, up_r], i.e. runs [r*f/tp, (r+1)*f/tp) and [f + r*f/tp, f + (r+1)*f/tp).

Stages: layers are split evenly (num_layers % pp == 0); the embeddings sit on the
first stage, the final norm and the output layer on the last. With tied embeddings
Megatron keeps a copy of the word embeddings as `output_layer.weight` on the last
stage when pp > 1 (`tied_to` names the parameter it copies); with pp == 1 there is no
separate output weight. A value-head model has `value_head.weight`, [1, hidden],
replicated across TP, in place of the output layer (the runtime's engine uses that name).

LoRA (`lora=LoraSpec`): each targeted linear layer `X` gains adapters `X.lora_a` [r, in]
and `X.lora_b` [out, r], cut like their base under TP: a column-parallel base
(linear_qkv, linear_fc1) has B cut like its weight (contiguous, or gate_up for SwiGLU)
and A replicated; a row-parallel base (linear_proj, linear_fc2) has A cut along `in`
(dim 1) and B replicated. With `trainable_only=True` a LoRA manifest keeps only what a
train step changes, the adapters and a value head: what a replica's refresh moves.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from graph.spec import LoraSpec, ModelArch

Run = tuple[int, int]
Slice = tuple[tuple[int, int], ...]

VALUE_HEAD = "value_head.weight"
"""Name of a critic's or reward model's scalar head (the runtime uses the same name)."""

SPLITS = ("replicated", "contiguous", "gate_up")
PLACES = ("first", "layer", "last")


@dataclass(frozen=True, kw_only=True)
class ParamInfo:
    """One parameter of the model: global name, global shape, TP cut, stage placement."""

    name: str
    """Megatron parameter name with the global layer index."""
    shape: tuple[int, ...]
    """Global (unsharded) shape."""
    tp_dim: int | None
    """Dimension TP partitions, or None when replicated."""
    split: str
    """"replicated", "contiguous" or "gate_up" (see the module docstring)."""
    place: str
    """"first" (embeddings), "layer" (a transformer layer) or "last" (final norm, output layer)."""
    layer: int | None = None
    """Global layer index for place == "layer"."""
    tied_to: str | None = None
    """Name of the parameter this one is a copy of (tied output layer), else None."""
    adapter: bool = False
    """A LoRA adapter (`.lora_a` / `.lora_b` of a linear layer)."""

    def __post_init__(self) -> None:
        if self.split not in SPLITS:
            raise ValueError(f"parameter {self.name!r}: split {self.split!r} is not one of {SPLITS}")
        if self.place not in PLACES:
            raise ValueError(f"parameter {self.name!r}: place {self.place!r} is not one of {PLACES}")
        if (self.split == "replicated") != (self.tp_dim is None):
            raise ValueError(f"parameter {self.name!r}: tp_dim must be None exactly when replicated")
        if (self.place == "layer") != (self.layer is not None):
            raise ValueError(f"parameter {self.name!r}: layer index must be given exactly for layer parameters")

    @property
    def numel(self) -> int:
        """Number of elements of the global tensor."""
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def data_name(self) -> str:
        """The parameter whose data this one holds (itself, or the one it is tied to)."""
        return self.tied_to or self.name

    def stages(self, pp: int, num_layers: int) -> tuple[int, ...]:
        """Pipeline stages that hold this parameter under `pp` stages."""
        if self.place == "first":
            return (0,)
        if self.place == "last":
            return (pp - 1,)
        assert self.layer is not None
        return (self.layer // (num_layers // pp),)

    def local_name(self, pp: int, num_layers: int) -> str:
        """Name inside a stage's Megatron module (layer index local to the stage)."""
        if self.layer is None:
            return self.name
        local = self.layer % (num_layers // pp)
        return self.name.replace(f"decoder.layers.{self.layer}.", f"decoder.layers.{local}.", 1)

    def shard_runs(self, tp: int, tp_rank: int) -> tuple[Run, ...]:
        """Global index runs along tp_dim that TP rank `tp_rank` holds, in local order."""
        if self.tp_dim is None:
            return ((0, self.shape[0]),) if self.shape else ()
        n = self.shape[self.tp_dim]
        if self.split == "gate_up":
            half = n // 2
            if half % tp:
                raise ValueError(f"parameter {self.name!r}: ffn size {half} is not divisible by tp={tp}")
            c = half // tp
            return ((tp_rank * c, (tp_rank + 1) * c), (half + tp_rank * c, half + (tp_rank + 1) * c))
        if n % tp:
            raise ValueError(f"parameter {self.name!r}: dim {self.tp_dim} of size {n} is not divisible by tp={tp}")
        c = n // tp
        return ((tp_rank * c, (tp_rank + 1) * c),)

    def local_shape(self, tp: int) -> tuple[int, ...]:
        """Shape of one TP rank's shard."""
        if self.tp_dim is None:
            return self.shape
        shape = list(self.shape)
        shape[self.tp_dim] = sum(b - a for a, b in self.shard_runs(tp, 0))
        return tuple(shape)

    def shard_slices(self, tp: int, tp_rank: int) -> tuple[Slice, ...]:
        """The global slices (one per run) whose concatenation along tp_dim is the shard."""
        full = [(0, d) for d in self.shape]
        if self.tp_dim is None:
            return (tuple(full),)
        out = []
        for run in self.shard_runs(tp, tp_rank):
            s = list(full)
            s[self.tp_dim] = run
            out.append(tuple(s))
        return tuple(out)

    def to_local(self, tp: int, tp_rank: int, global_slice: Slice) -> Slice:
        """Map a global slice that lies inside one of the rank's runs to local shard coordinates."""
        if self.tp_dim is None:
            return global_slice
        lo, hi = global_slice[self.tp_dim]
        offset = 0
        for a, b in self.shard_runs(tp, tp_rank):
            if a <= lo and hi <= b:
                out = list(global_slice)
                out[self.tp_dim] = (lo - a + offset, hi - a + offset)
                return tuple(out)
            offset += b - a
        raise ValueError(
            f"parameter {self.name!r}: global slice {global_slice} is not inside one shard run of "
            f"tp rank {tp_rank}/{tp}"
        )


def _layer_params(arch: ModelArch, i: int) -> list[ParamInfo]:
    h, f, d = arch.hidden_size, arch.ffn_hidden_size, arch.head_dim
    qkv_rows = (arch.num_heads + 2 * arch.num_kv_heads) * d
    gpt2 = arch.family == "gpt2"
    p = f"decoder.layers.{i}."

    def mk(name: str, shape: tuple[int, ...], tp_dim: int | None, split: str) -> ParamInfo:
        return ParamInfo(name=p + name, shape=shape, tp_dim=tp_dim, split=split, place="layer", layer=i)

    out = [mk("input_layernorm.weight", (h,), None, "replicated")]
    if gpt2:
        out.append(mk("input_layernorm.bias", (h,), None, "replicated"))
    out.append(mk("self_attention.linear_qkv.weight", (qkv_rows, h), 0, "contiguous"))
    if arch.qkv_bias or gpt2:  # GPT-2's c_attn always has a bias
        out.append(mk("self_attention.linear_qkv.bias", (qkv_rows,), 0, "contiguous"))
    out.append(mk("self_attention.linear_proj.weight", (h, arch.num_heads * d), 1, "contiguous"))
    if gpt2:
        out.append(mk("self_attention.linear_proj.bias", (h,), None, "replicated"))
    out.append(mk("pre_mlp_layernorm.weight", (h,), None, "replicated"))
    if gpt2:
        out.append(mk("pre_mlp_layernorm.bias", (h,), None, "replicated"))
        out.append(mk("mlp.linear_fc1.weight", (f, h), 0, "contiguous"))
        out.append(mk("mlp.linear_fc1.bias", (f,), 0, "contiguous"))
    else:
        out.append(mk("mlp.linear_fc1.weight", (2 * f, h), 0, "gate_up"))
    out.append(mk("mlp.linear_fc2.weight", (h, f), 1, "contiguous"))
    if gpt2:
        out.append(mk("mlp.linear_fc2.bias", (h,), None, "replicated"))
    return out


def lora_layer_params(arch: ModelArch, i: int, lora: LoraSpec) -> list[ParamInfo]:
    """The adapters of layer `i`: (A, B) per target, cut like the base layer under TP."""
    h, f, d, r = arch.hidden_size, arch.ffn_hidden_size, arch.head_dim, lora.rank
    fc1_rows, fc1_split = (f, "contiguous") if arch.family == "gpt2" else (2 * f, "gate_up")
    # target -> (module path, in, out, column-parallel, split of the column-parallel B)
    linears = {
        "linear_qkv": ("self_attention.linear_qkv", h, (arch.num_heads + 2 * arch.num_kv_heads) * d,
                       True, "contiguous"),
        "linear_proj": ("self_attention.linear_proj", arch.num_heads * d, h, False, ""),
        "linear_fc1": ("mlp.linear_fc1", h, fc1_rows, True, fc1_split),
        "linear_fc2": ("mlp.linear_fc2", f, h, False, ""),
    }
    out = []
    p = f"decoder.layers.{i}."
    for target in lora.targets:
        path, n_in, n_out, column, split = linears[target]
        a_cut = (None, "replicated") if column else (1, "contiguous")
        b_cut = (0, split) if column else (None, "replicated")
        for leaf, shape, (dim, kind) in (("lora_a", (r, n_in), a_cut), ("lora_b", (n_out, r), b_cut)):
            out.append(ParamInfo(name=f"{p}{path}.{leaf}", shape=shape, tp_dim=dim, split=kind,
                                 place="layer", layer=i, adapter=True))
    return out


@functools.lru_cache(maxsize=256)
def param_manifest(arch: ModelArch, *, value_head: bool = False, pp: int = 1,
                   vocab_size: int | None = None, lora: LoraSpec | None = None,
                   trainable_only: bool = False) -> tuple[ParamInfo, ...]:
    """Every parameter of GPTModel for `arch` under `pp` stages, in module order.

    `vocab_size` overrides the arch's vocabulary (e.g. Megatron's padded vocabulary).
    `pp` only matters for tied embeddings, which add a last-stage copy when pp > 1.
    `lora` adds the adapters of its targets to every layer; with `trainable_only` a LoRA
    manifest keeps only the adapters and a value head (without LoRA it changes nothing).
    """
    full = _full_manifest(arch, value_head=value_head, pp=pp, vocab_size=vocab_size, lora=lora)
    if lora is None or not trainable_only:
        return full
    return tuple(p for p in full if p.adapter or p.name == VALUE_HEAD)


def _full_manifest(arch: ModelArch, *, value_head: bool, pp: int, vocab_size: int | None,
                   lora: LoraSpec | None) -> tuple[ParamInfo, ...]:
    if pp < 1 or arch.num_layers % pp:
        raise ValueError(
            f"pp={pp} must be >= 1 and divide num_layers={arch.num_layers} (layers are split evenly)"
        )
    h = arch.hidden_size
    vocab = vocab_size or arch.vocab_size
    word = "embedding.word_embeddings.weight"
    out = [ParamInfo(name=word, shape=(vocab, h), tp_dim=0, split="contiguous", place="first")]
    if arch.family == "gpt2":
        out.append(ParamInfo(name="embedding.position_embeddings.weight",
                             shape=(arch.max_position_embeddings, h), tp_dim=None,
                             split="replicated", place="first"))
    for i in range(arch.num_layers):
        out.extend(_layer_params(arch, i))
        if lora is not None:
            out.extend(lora_layer_params(arch, i, lora))
    out.append(ParamInfo(name="decoder.final_layernorm.weight", shape=(h,), tp_dim=None,
                         split="replicated", place="last"))
    if arch.family == "gpt2":
        out.append(ParamInfo(name="decoder.final_layernorm.bias", shape=(h,), tp_dim=None,
                             split="replicated", place="last"))
    if value_head:
        out.append(ParamInfo(name=VALUE_HEAD, shape=(1, h), tp_dim=None,
                             split="replicated", place="last"))
    elif not arch.tied_embeddings:
        out.append(ParamInfo(name="output_layer.weight", shape=(vocab, h), tp_dim=0,
                             split="contiguous", place="last"))
    elif pp > 1:
        out.append(ParamInfo(name="output_layer.weight", shape=(vocab, h), tp_dim=0,
                             split="contiguous", place="last", tied_to=word))
    return tuple(out)


def check_tp(arch: ModelArch, tp: int, *, vocab_size: int | None = None) -> str:
    """Why `arch` cannot be split over `tp` ranks ("" when it can)."""
    vocab = vocab_size or arch.vocab_size
    checks = (
        ("num_heads", arch.num_heads), ("num_kv_heads", arch.num_kv_heads),
        ("ffn_hidden_size", arch.ffn_hidden_size), ("vocab_size", vocab),
    )
    for name, value in checks:
        if value % tp:
            return f"{name}={value} is not divisible by tp={tp}"
    return ""


def padded_vocab(vocab_size: int, tp: int, multiple: int = 128) -> int:
    """Megatron's padded vocabulary: the next multiple of `multiple * tp`."""
    step = multiple * tp
    return -(-vocab_size // step) * step


@functools.lru_cache(maxsize=4096)
def stage_params(arch: ModelArch, *, value_head: bool, tp: int, pp: int,
                 vocab_size: int | None = None, lora: LoraSpec | None = None,
                 trainable_only: bool = False) -> tuple[float, ...]:
    """Parameters one device of each pipeline stage holds (its TP shard of the stage);
    with `trainable_only`, only those a LoRA model trains (see `param_manifest`)."""
    out = [0.0] * pp
    for p in param_manifest(arch, value_head=value_head, pp=pp, vocab_size=vocab_size, lora=lora,
                            trainable_only=trainable_only):
        share = p.numel / tp if p.tp_dim is not None else p.numel
        for stage in p.stages(pp, arch.num_layers):
            out[stage] += share
    return tuple(out)
