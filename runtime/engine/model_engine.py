"""ModelEngine: one model in one layout on this rank, built on Megatron-core's GPTModel.

Build with `build_engine(spec, layout, rank)`: a world-collective call (every rank calls
it for every engine, in the same order; ranks outside the layout get None). Each engine
owns a `ProcessGroupCollection`, so several models and layouts live in one process.

Weights travel by **global name** (Megatron parameter names with global layer indices,
see `runtime.engine.convert`): `named_local_shards()` exposes this rank's shards in place,
`global_state()` gathers the whole model, `save_hf()` writes a HF checkpoint.

A spec with `lora` gets adapters on its target layers (`runtime.engine.lora`), its base frozen;
its global state holds the adapters by name, and `save_hf` writes the merged weights.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
import torch.nn.functional as F

from graph.placement.layout import Layout
from graph.spec import ModelArch, ModelSpec
from runtime.engine import convert, lora, platform
from runtime.engine.groups import RankCoords, build_layout_groups
from runtime.engine.hf_checkpoint import read_hf_checkpoint, save_hf_checkpoint, validate_checkpoint

if TYPE_CHECKING:
    from runtime.engine.ema import EMA
    from runtime.engine.schedule import Trainer


def validate_engine(spec: ModelSpec, layout: Layout) -> None:
    """Raise ValueError for a spec/layout pair that cannot be built (no groups are made)."""
    if spec.arch is None:
        raise ValueError(f"model {spec.role!r} is a rule-based reward; it has no engine")
    arch = spec.arch
    if arch.num_heads % layout.tp:
        raise ValueError(f"model {spec.role!r}: tp={layout.tp} does not divide num_heads "
                         f"{arch.num_heads}; pick a tp that divides it")
    if arch.num_kv_heads % layout.tp:
        raise ValueError(f"model {spec.role!r}: tp={layout.tp} does not divide num_kv_heads "
                         f"{arch.num_kv_heads}; pick a tp that divides it")
    if arch.ffn_hidden_size % layout.tp:
        raise ValueError(f"model {spec.role!r}: tp={layout.tp} does not divide ffn_hidden_size "
                         f"{arch.ffn_hidden_size}")
    if layout.pp > arch.num_layers:
        raise ValueError(f"model {spec.role!r}: pp={layout.pp} is larger than num_layers "
                         f"{arch.num_layers}; use pp <= {arch.num_layers}")
    if arch.num_layers % layout.pp:
        raise ValueError(f"model {spec.role!r}: pp={layout.pp} does not divide num_layers "
                         f"{arch.num_layers}; pick a pp that divides it")
    if spec.checkpoint is not None:
        validate_checkpoint(spec.checkpoint, arch, value_head=spec.value_head)


def _gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    return F.gelu(x, approximate="tanh")


def transformer_config(arch: ModelArch, layout: Layout, *, bf16: bool) -> Any:
    """Megatron TransformerConfig of `arch` for the layout's tp and pp."""
    from megatron.core.transformer.transformer_config import TransformerConfig

    gpt2 = arch.family == "gpt2"
    dtype = torch.bfloat16 if bf16 else torch.float32
    return TransformerConfig(
        num_layers=arch.num_layers, hidden_size=arch.hidden_size,
        ffn_hidden_size=arch.ffn_hidden_size, num_attention_heads=arch.num_heads,
        num_query_groups=arch.num_kv_heads, kv_channels=arch.head_dim,
        normalization="LayerNorm" if gpt2 else "RMSNorm", layernorm_epsilon=arch.norm_eps,
        gated_linear_unit=not gpt2, activation_func=_gelu_tanh if gpt2 else F.silu,
        add_bias_linear=gpt2, add_qkv_bias=gpt2 or arch.qkv_bias,
        hidden_dropout=0.0, attention_dropout=0.0,
        tensor_model_parallel_size=layout.tp, pipeline_model_parallel_size=layout.pp,
        params_dtype=dtype, bf16=bf16, pipeline_dtype=dtype,
        variable_seq_lengths=layout.pp > 1, moe_token_dispatcher_type="alltoall",
        bias_activation_fusion=False, masked_softmax_fusion=False, bias_dropout_fusion=False,
        apply_rope_fusion=False, persist_layer_norm=False, gradient_accumulation_fusion=False,
        sequence_parallel=False, perform_initialization=True, init_method_std=0.02,
    )


class ValueHead(torch.nn.Module):
    """Scalar head replacing the LM head (critic, reward); replicated over TP."""

    def __init__(self, hidden_size: int, dtype: torch.dtype) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1, hidden_size, dtype=dtype))
        self.weight.sequence_parallel = False
        self.weight.tensor_model_parallel = False

    def forward(self, hidden: torch.Tensor, weight: Any = None, runtime_gather_output: Any = None,
                **_: Any) -> tuple[torch.Tensor, None]:
        return F.linear(hidden, self.weight), None


_LAYER_RE = re.compile(r"^decoder\.layers\.(\d+)\.")


@dataclass(frozen=True, kw_only=True)
class LocalShard:
    """One parameter shard this rank holds, by its global name."""

    name: str
    """Global name (Megatron name, global layer index)."""
    tensor: torch.Tensor
    """The parameter's data, in place: writing into it changes the model."""
    spec: convert.ShardSpec
    """How the global tensor splits over TP."""
    global_shape: tuple[int, ...]
    """Shape of the whole (unsharded) tensor, true vocabulary (layout-independent)."""
    ranges: tuple[tuple[int, int], ...]
    """[start, stop) ranges along `spec.dim` of the global tensor this shard holds, in
    local order; empty when replicated (the shard is the whole tensor). For vocab-parallel tensors the coordinates are those of the vocabulary
    padded to a multiple of tp: rows >= vocab_size are zero padding."""


class ModelEngine:
    """A Megatron GPTModel (or value-head trunk) for one ModelSpec on one layout."""

    def __init__(self, spec: ModelSpec, layout: Layout, coords: RankCoords, pgc: Any, *,
                 seed: int = 0, bf16: bool | None = None) -> None:
        from megatron.core import parallel_state
        from megatron.core.models.gpt import GPTModel
        from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_spec
        from megatron.core.tensor_parallel.random import model_parallel_cuda_manual_seed

        assert spec.arch is not None
        self.spec, self.arch, self.layout, self.coords, self.pgc = spec, spec.arch, layout, coords, pgc
        self.seed = seed
        self.bf16 = platform.has_cuda() if bf16 is None else bf16
        self.dtype = torch.bfloat16 if self.bf16 else torch.float32
        self.config = transformer_config(self.arch, layout, bf16=self.bf16)
        if parallel_state._GLOBAL_MEMORY_BUFFER is None:
            parallel_state._set_global_memory_buffer()
        cpu_rng = torch.get_rng_state()  # on CPU the tracker would reseed the global generator
        model_parallel_cuda_manual_seed(seed, tp_rank=coords.tp_rank, ep_rank=0, etp_rank=0)
        torch.set_rng_state(cpu_rng)
        gpt2 = self.arch.family == "gpt2"
        self.vocab = convert.padded_vocab(self.arch, layout.tp)
        self.model = GPTModel(
            config=self.config,
            transformer_layer_spec=get_gpt_layer_local_spec(
                normalization="LayerNorm" if gpt2 else "RMSNorm"),
            vocab_size=self.vocab, max_sequence_length=self.arch.max_position_embeddings,
            pre_process=self.is_first_stage, post_process=self.is_last_stage,
            share_embeddings_and_output_weights=self.arch.tied_embeddings and not spec.value_head,
            position_embedding_type="learned_absolute" if gpt2 else "rope",
            rotary_base=int(self.arch.rope_theta), parallel_output=True, pg_collection=pgc,
        ).to(platform.device())
        if spec.value_head and self.is_last_stage:
            self.model.output_layer = ValueHead(self.arch.hidden_size, self.dtype).to(platform.device())
        if spec.lora is not None:
            lora.attach_lora(self.model, spec.lora, family=self.arch.family, tp_group=pgc.tp)
            lora.freeze_base(self.model, keep=("output_layer.weight",) if spec.value_head else ())
        self.layer_offset = coords.pp_rank * (self.arch.num_layers // layout.pp)
        self.module = self.model  # the bare GPTModel; `model` may become a DDP wrapper
        self.trainer: Trainer | None = None
        """Megatron DDP + distributed optimizer, built by the first train call on this engine."""
        self.ema: EMA | None = None
        """The EMA of the weights (runtime.engine.ema.EMA) when the run keeps one."""
        self.state: dict[str, Any] = {}
        """JSON-able state of the interfaces that train this model (e.g. a KL controller):
        it survives across iterations and is saved in checkpoints."""
        self._load_initial_weights()

    # ------------------------------------------------------------------ topology

    def set_training(self, training: bool) -> None:
        """Put the model in train or eval mode; a no-op when it already is (the recursive
        `Module.train` walks every submodule: ~1 ms a call on a small model on CPU)."""
        if self.module.training != training:
            self.module.train(training)

    @property
    def is_first_stage(self) -> bool:
        return self.coords.pp_rank == 0

    @property
    def is_last_stage(self) -> bool:
        return self.coords.pp_rank == self.layout.pp - 1

    def stage_rank(self, pp_rank: int) -> int:
        """Global rank of the same (dp, tp) position at pipeline stage `pp_rank`."""
        return self.layout.device(dp_rank=self.coords.dp_rank, tp_rank=self.coords.tp_rank,
                                  pp_rank=pp_rank)

    # ------------------------------------------------------------------ names and shards

    def global_name(self, local_name: str) -> str:
        """Global name of a local parameter name (layer index made global)."""
        name = local_name.removeprefix("module.")
        if name == "output_layer.weight" and self.spec.value_head:
            return convert.VALUE_HEAD
        m = _LAYER_RE.match(name)
        if m:
            name = f"decoder.layers.{int(m.group(1)) + self.layer_offset}." + name[m.end():]
        return name

    def _shard_spec(self, global_name: str) -> convert.ShardSpec:
        if global_name == convert.VALUE_HEAD:
            return convert.ShardSpec(dim=None)
        return convert.shard_spec(global_name, self.arch.family)

    def named_local_shards(self) -> dict[str, LocalShard]:
        """Every parameter shard on this rank by global name; tensors are the live data."""
        out = {}
        for local, param in self.module.named_parameters():
            name = self.global_name(local)
            spec = self._shard_spec(name)
            shape = list(param.shape)
            if spec.dim is not None:
                shape[spec.dim] *= self.layout.tp
            padded_len = shape[spec.dim] if spec.dim is not None else 0
            if name in convert.VOCAB_PARALLEL:
                shape[0] = self.arch.vocab_size  # local rows past it are zero padding
            ranges = () if spec.dim is None else convert.shard_ranges(
                spec, padded_len, self.layout.tp, self.coords.tp_rank)
            out[name] = LocalShard(name=name, tensor=param.data, spec=spec,
                                   global_shape=tuple(shape), ranges=ranges)
        return out

    def load_global_state(self, mg: dict[str, torch.Tensor], *, partial: bool = False) -> None:
        """Copy this rank's shards out of Megatron-global tensors (any superset works; with
        `partial`, parameters `mg` lacks keep their values, e.g. to load LoRA adapters alone)."""
        tp, tp_rank = self.layout.tp, self.coords.tp_rank
        with torch.no_grad():
            for name, local in self.named_local_shards().items():
                if partial and name not in mg:
                    continue
                source = name
                if name == "output_layer.weight" and name not in mg:
                    source = "embedding.word_embeddings.weight"  # tied, last stage of pp > 1
                full = convert.pad_vocab(name, mg[source], self.arch, tp)
                value = convert.shard(full, local.spec, tp, tp_rank)
                if tuple(value.shape) != tuple(local.tensor.shape):
                    raise ValueError(f"parameter {name!r}: got shape {list(value.shape)}, this "
                                     f"rank holds {list(local.tensor.shape)}")
                local.tensor.copy_(value)
        self.weights_changed()

    def refreshed_parameters(self) -> list[torch.nn.Parameter]:
        """The parameters a refresh of this replica rewrites: all of them, or with LoRA only
        the trained ones (adapters, value head); the frozen base stays in place."""
        params = list(self.module.parameters())
        return params if self.spec.lora is None else [p for p in params if p.requires_grad]

    def weights_changed(self) -> None:
        """Call after writing shards in place: refreshes the optimizer's main params."""
        if self.trainer is not None:
            self.trainer.reload_model_params()

    def _load_initial_weights(self) -> None:
        spec, arch = self.spec, self.arch
        if spec.checkpoint is not None:
            hf = read_hf_checkpoint(spec.checkpoint, arch)
            if spec.value_head and "score.weight" not in hf:
                hf["score.weight"] = convert.init_tensor("score.weight", (1, arch.hidden_size), self.seed)
        else:
            hf = convert.random_hf_state(arch, seed=self.seed, value_head=spec.value_head)
        mg = convert.hf_to_megatron(hf, arch, value_head=spec.value_head)
        if spec.lora is not None:
            mg.update(lora.init_adapters(arch, spec.lora, self.seed))
        self.load_global_state(mg)

    def global_state(self, tensors: Mapping[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor] | None:
        """Gather every Megatron-global tensor (fp32, CPU) onto the layout's first rank.

        `tensors` (named like `named_local_shards`, e.g. an EMA of them) replaces the
        weights. Collective over the layout's mesh; returns None on every other rank. The
        shards travel one tensor at a time, so the first rank holds the full model once
        plus one shard, whatever the model's size.
        """
        if tensors is None:
            tensors = {n: s.tensor for n, s in self.named_local_shards().items()}
        mine = {n: t.detach().float().contiguous() for n, t in tensors.items()} if self.coords.dp_rank == 0 else {}
        dst = self.layout.mesh.devices[0]
        me = dist.get_rank()
        metas: list[Any] = [None] * self.layout.mesh.size if me == dst else []
        dist.gather_object((self.coords, [(n, tuple(t.shape)) for n, t in mine.items()]),
                           metas if me == dst else None, dst=dst, group=self.pgc.mesh)
        if me != dst:
            for tensor in mine.values():
                dist.send(tensor, dst=dst)
            return None
        by_name: dict[str, dict[int, torch.Tensor]] = {}
        for group_rank, (coords, names) in enumerate(metas):
            src = dist.get_global_rank(self.pgc.mesh, group_rank)
            for name, shape in names:
                if src == me:
                    part = mine[name]
                else:
                    part = torch.empty(shape, dtype=torch.float32, device=platform.device())
                    dist.recv(part, src=src)
                by_name.setdefault(name, {})[coords.tp_rank] = part.cpu()
        specs = {n: s.spec for n, s in self.named_local_shards().items()}
        out = {}
        for name in list(by_name):
            parts = by_name.pop(name)
            full = convert.unshard([parts[r] for r in sorted(parts)], specs.get(name) or self._shard_spec(name))
            out[name] = convert.unpad_vocab(name, full, self.arch)
        return out

    def save_hf(self, path: str) -> None:
        """Write the model as a HF checkpoint (collective over the mesh; first rank writes).

        A LoRA model is written merged (W + alpha/r * B @ A: a plain HF model), with its
        adapters alone beside it (`runtime.engine.lora.save_adapters`).
        """
        mg = self.global_state()
        if mg is not None:
            weights = mg if self.spec.lora is None else lora.merge_lora(mg, self.spec.lora)
            hf = convert.megatron_to_hf(weights, self.arch, value_head=self.spec.value_head)
            save_hf_checkpoint(path, hf, self.arch, value_head=self.spec.value_head)
            if self.spec.lora is not None:
                lora.save_adapters(path, mg, self.spec.lora)
        dist.barrier(group=self.pgc.mesh)

    def release(self) -> None:
        """Drop this rank's parameters, gradients and optimizer state (e.g. after moving the
        weights to another layout); the engine cannot be used afterwards."""
        for hook in ("no_sync_func", "finalize_model_grads_func", "grad_scale_func"):
            setattr(self.config, hook, None)
        self.trainer = None
        self.model = self.module = None
        if platform.has_cuda():
            torch.cuda.empty_cache()

    # ------------------------------------------------------------------ forward

    def forward_stage(self, input_ids: torch.Tensor, position_ids: torch.Tensor,
                      inference_context: Any = None) -> torch.Tensor:
        """One pipeline stage's forward (input tensor of later stages set beforehand)."""
        return self.model(input_ids, position_ids, None, inference_context=inference_context)


def build_engine(spec: ModelSpec, layout: Layout, rank: int, *, seed: int = 0,
                 bf16: bool | None = None) -> ModelEngine | None:
    """Build `spec` on `layout` (world-collective); None on ranks outside the layout.

    Validation (heads vs tp, layers vs pp, checkpoint presence, family and shapes) runs
    before any process group is created.
    """
    validate_engine(spec, layout)
    platform.apply_platform_patches()
    built = build_layout_groups(layout, rank)
    if built is None:
        return None
    pgc, coords = built
    return ModelEngine(spec, layout, coords, pgc, seed=seed, bf16=bf16)
