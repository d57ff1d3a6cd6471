"""Checks that need several gloo processes, run in ONE launch of 4 workers.

Every worker builds the same engines in the same order (engine construction is
world-collective), runs the checks its rank takes part in and writes `{check: value}`
to `out/rank{r}.json`; the pytest module asserts on the merged results. References are
independent: transformers' logits and `generate`, and a 1-process run of the engine.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

FAMILIES = ("llama", "qwen2", "gpt2")
# (name, dp, tp, pp, mesh start): world has 4 ranks.
LOGIT_LAYOUTS = (("tp1", 1, 1, 1, 0), ("tp2", 1, 2, 1, 0), ("pp2", 1, 1, 2, 2),
                 ("tp2pp2", 1, 2, 2, 0))
TRAIN_LAYOUTS = (("single", 1, 1, 1, 0), ("tp2", 1, 2, 1, 0), ("pp2", 1, 1, 2, 0),
                 ("dp2", 2, 1, 1, 0), ("tp2dp2", 2, 2, 1, 0), ("dp2pp2", 2, 1, 2, 0))
TRAIN_STEPS = 3  # step 3 is the first whose loss sees the grad-norm clip (Adam's step 1 does not)
SHORT = ("single", "tp2dp2", "dp2pp2")  # layouts for the cases that add little per layout
PROMPTS = ([5, 17, 33], [9, 2, 71, 44, 6, 12], [88, 3], [40, 41, 42, 43])


def tiny_arch(family: str) -> Any:
    from graph.spec import ModelArch

    extra = {"llama": {}, "qwen2": {"qkv_bias": True, "tied_embeddings": True},
             "gpt2": {"qkv_bias": True, "tied_embeddings": True}}[family]
    heads = (4, 4) if family == "gpt2" else (4, 2)
    return ModelArch(family=family, num_layers=2, hidden_size=64, ffn_hidden_size=128,
                     num_heads=heads[0], num_kv_heads=heads[1], vocab_size=101,
                     max_position_embeddings=64, **extra)


def hf_model(arch: Any, state: dict[str, torch.Tensor]) -> Any:
    import transformers

    config = transformers.AutoConfig.for_model(**arch.to_hf_config())
    config.bos_token_id = config.eos_token_id = config.pad_token_id = None
    model = transformers.AutoModelForCausalLM.from_config(config)
    model.load_state_dict(state, strict=False)
    model.tie_weights()
    return model.eval()


def hf_scorer(arch: Any, state: dict[str, torch.Tensor]) -> Any:
    import transformers

    config = transformers.AutoConfig.for_model(**arch.to_hf_config(), num_labels=1)
    config.pad_token_id = 0
    model = transformers.AutoModelForSequenceClassification.from_config(config)
    model.load_state_dict(state, strict=True)
    return model.eval()


def write_checkpoints(root: Path) -> None:
    """HF checkpoints of the tiny models (and a Llama scorer), written by transformers."""
    from runtime.engine.convert import random_hf_state

    for i, family in enumerate(FAMILIES):
        arch = tiny_arch(family)
        hf_model(arch, random_hf_state(arch, seed=100 + i, value_head=False)).save_pretrained(
            root / family)
    arch = tiny_arch("llama")
    hf_scorer(arch, random_hf_state(arch, seed=200, value_head=True)).save_pretrained(root / "scorer")


def _layout(dp: int, tp: int, pp: int, start: int, micro_batches: int = 1) -> Any:
    from graph.placement.layout import DeviceMesh, Layout

    return Layout(mesh=DeviceMesh.span(start, dp * tp * pp), dp=dp, tp=tp, pp=pp,
                  micro_batches=micro_batches)


def _full_logits(engine: Any, batch: Any) -> torch.Tensor | None:
    """Full-vocabulary logits [B, T, V] of a batch through the engine's pipeline."""
    from runtime.engine import vocab_parallel
    from runtime.engine.schedule import run_micro_batches

    def grab(mb: Any, out: torch.Tensor) -> tuple[torch.Tensor, dict]:
        full = vocab_parallel.gather_vocab(out.detach().float(), engine.pgc.tp,
                                           vocab_size=engine.arch.vocab_size)
        return torch.zeros(()), {"logits": full}

    engine.module.eval()
    with torch.no_grad():
        reports = run_micro_batches(engine, [batch], grab, forward_only=True)
    return reports[0]["logits"]


def check_logits_and_generate(rank: int, ckpt: Path, res: dict[str, Any]) -> None:
    from graph.catalog import GenerateArgs
    from graph.spec import ModelSpec
    from runtime.data.batch import SeqBatch
    from runtime.engine.hf_checkpoint import read_hf_checkpoint
    from runtime.engine.model_engine import build_engine
    from runtime.interfaces import CallContext, run_interface

    g = torch.Generator().manual_seed(7)
    seqs = [torch.randint(0, 101, (n,), generator=g).tolist() for n in (9, 5, 12)]
    batch = SeqBatch.from_lists(seqs, [3, 2, 4])
    prompts = SeqBatch.from_lists([list(p) for p in PROMPTS], [len(p) for p in PROMPTS])
    for family in FAMILIES:
        arch = tiny_arch(family)
        hf = hf_model(arch, read_hf_checkpoint(str(ckpt / family), arch))
        with torch.no_grad():
            ref = [hf(torch.tensor([s])).logits[0] for s in seqs]
            ref_gen = [hf.generate(torch.tensor([p]), max_new_tokens=6, do_sample=False,
                                   min_new_tokens=6)[0].tolist() for p in PROMPTS]
        spec = ModelSpec(role="actor", arch=arch, checkpoint=str(ckpt / family))
        for name, dp, tp, pp, start in LOGIT_LAYOUTS:
            engine = build_engine(spec, _layout(dp, tp, pp, start), rank)
            if engine is None:
                continue
            logits = _full_logits(engine, batch)
            err = max(float((logits[i, : len(s)] - ref[i]).abs().max()) for i, s in enumerate(seqs))
            res[f"logits/{family}/{name}"] = err
            out = run_interface("generate", engine, prompts,
                                GenerateArgs(max_new_tokens=6, greedy=True), CallContext())
            same = all(out.tokens(i) == ref_gen[i] for i in range(prompts.size))
            res[f"generate/{family}/{name}"] = same


def check_inference(rank: int, ckpt: Path, res: dict[str, Any]) -> None:
    """logprobs, values and reward_model against transformers at tp2 and pp2 x dp... layouts."""
    from graph.spec import ModelSpec
    from runtime.data.batch import SeqBatch
    from runtime.engine.hf_checkpoint import read_hf_checkpoint
    from runtime.engine.model_engine import build_engine
    from runtime.interfaces import run_interface

    g = torch.Generator().manual_seed(3)
    seqs = [torch.randint(1, 101, (n,), generator=g).tolist() for n in (9, 5, 12, 7)]
    batch = SeqBatch.from_lists(seqs, [3, 2, 4, 1])
    arch = tiny_arch("llama")
    lm = hf_model(arch, read_hf_checkpoint(str(ckpt / "llama"), arch))
    scorer = hf_scorer(arch, read_hf_checkpoint(str(ckpt / "scorer"), arch))
    with torch.no_grad():
        ref_lp = [torch.log_softmax(lm(torch.tensor([s])).logits[0, :-1], -1)
                  .gather(-1, torch.tensor(s[1:])[:, None])[:, 0] for s in seqs]
        ref_v = [scorer.score(scorer.model(torch.tensor([s])).last_hidden_state)[0, :-1, 0]
                 for s in seqs]
        ref_r = [float(scorer(torch.tensor([s])).logits[0, 0]) for s in seqs]
        # Advantage Model: score at the last token minus at the last prompt token; the
        # selection's prompt embedding: mean final-norm hidden state over the prompt tokens
        ref_a = [float(v[-1] - v[p - 1]) for v, p in
                 ((scorer.score(scorer.model(torch.tensor([s])).last_hidden_state)[0, :, 0], int(p))
                  for s, p in zip(seqs, batch.prompt_lens))]
        ref_e = [lm.model(torch.tensor([s[:int(p)]])).last_hidden_state[0].mean(0)
                 for s, p in zip(seqs, batch.prompt_lens)]
    for name, dp, tp, pp in (("tp2", 1, 2, 1), ("dp2pp2", 2, 1, 2)):
        layout = _layout(dp, tp, pp, 0, micro_batches=2)
        actor = build_engine(ModelSpec(role="ref", arch=arch, checkpoint=str(ckpt / "llama")),
                             layout, rank)
        critic = build_engine(ModelSpec(role="critic", arch=arch, value_head=True,
                                        checkpoint=str(ckpt / "scorer")), layout, rank)
        if actor is None:
            continue
        lp = run_interface("logprobs", actor, batch).token_fields["logprobs"]
        vals = run_interface("values", critic, batch).token_fields["values"]
        rew = run_interface("reward_model", critic, batch).seq_fields["rewards"]
        res[f"infer/logprobs/{name}"] = max(float((lp[i, 1:len(s)] - ref_lp[i]).abs().max())
                                            for i, s in enumerate(seqs))
        res[f"infer/values/{name}"] = max(float((vals[i, 1:len(s)] - ref_v[i]).abs().max())
                                          for i, s in enumerate(seqs))
        res[f"infer/rewards/{name}"] = max(abs(float(rew[i]) - ref_r[i]) for i in range(len(seqs)))
        adv = run_interface("advantage_model", critic, batch).seq_fields["rewards"]
        res[f"infer/advantages/{name}"] = max(abs(float(adv[i]) - ref_a[i]) for i in range(len(seqs)))
        # the rehearsal pool's scores: the AM form (a selection step), then the reward form
        from graph.catalog import PoolScoresArgs
        from runtime.interfaces import CallContext

        pool = run_interface("pool_scores", critic, batch, PoolScoresArgs(form="advantage", every=2),
                             CallContext(step=4)).seq_fields["pool_scores"]
        res[f"infer/pool_advantages/{name}"] = max(abs(float(pool[i]) - ref_a[i]) for i in range(len(seqs)))
        pool = run_interface("pool_scores", critic, batch, PoolScoresArgs(form="reward", every=2),
                             CallContext(step=5)).seq_fields["pool_scores"]  # its first scoring in this form
        res[f"infer/pool_rewards/{name}"] = max(abs(float(pool[i]) - ref_r[i]) for i in range(len(seqs)))
        from runtime.interfaces.rehearsal import prompt_embeddings, response_loglik

        emb = prompt_embeddings(actor, batch)
        # rehearsal_source=data's rank: mean log-likelihood of the answer tokens (t >= prompt_len)
        ll = response_loglik(actor, batch)
        res[f"infer/response_loglik/{name}"] = max(abs(float(ll[i]) - float(ref_lp[i][int(p) - 1:].mean()))
                                                   for i, p in enumerate(batch.prompt_lens))
        res[f"infer/prompt_embeddings/{name}"] = max(float((emb[i] - ref_e[i]).abs().max())
                                                     for i in range(len(seqs)))
        res[f"infer/zero_outside/{name}"] = float(lp[~batch.valid_mask()].abs().sum()
                                                  + lp[:, 0].abs().sum())
    # a critic initialised from a causal-LM checkpoint: trunk copied, head from the seed
    from runtime.engine import convert

    critic = build_engine(ModelSpec(role="critic", arch=arch, value_head=True,
                                    checkpoint=str(ckpt / "llama")), _layout(1, 2, 1, 0), rank, seed=4)
    state = critic.global_state() if critic is not None else None
    if state is not None:
        lm_state = convert.hf_to_megatron(read_hf_checkpoint(str(ckpt / "llama"), arch), arch,
                                          value_head=False)
        head = convert.init_tensor("score.weight", (1, arch.hidden_size), 4)
        res["infer/critic_from_lm"] = (
            torch.equal(state.pop(convert.VALUE_HEAD), head)
            and sorted(state) == sorted(k for k in lm_state if k != "output_layer.weight")
            and all(torch.equal(v, lm_state[k]) for k, v in state.items()))


def check_generate_controls(rank: int, ckpt: Path, res: dict[str, Any]) -> None:
    """EOS, min_new_tokens, truncation, and seeded sampling that is the same at tp1 and tp2."""
    from graph.catalog import GenerateArgs, LogprobsArgs
    from graph.spec import ModelSpec
    from runtime.data.batch import SeqBatch
    from runtime.engine.model_engine import build_engine
    from runtime.interfaces import CallContext, run_interface

    spec = ModelSpec(role="actor", arch=tiny_arch("qwen2"), checkpoint=str(ckpt / "qwen2"))
    prompts = SeqBatch.from_lists([list(p) for p in PROMPTS], [len(p) for p in PROMPTS])
    greedy = GenerateArgs(max_new_tokens=6, greedy=True)
    sample = GenerateArgs(max_new_tokens=6, temperature=0.9, top_k=20, top_p=0.9, num_samples=2)
    outs: dict[str, Any] = {}
    for name, tp in (("tp1", 1), ("tp2", 2)):
        engine = build_engine(spec, _layout(1, tp, 1, 0), rank)
        if engine is None:
            continue
        free = run_interface("generate", engine, prompts, greedy, CallContext())
        eos = free.response(0)[2]  # the third greedy token of prompt 0 becomes EOS
        stop = run_interface("generate", engine, prompts, greedy, CallContext(eos_ids=(eos,)))
        late = run_interface("generate", engine, prompts,
                             GenerateArgs(max_new_tokens=6, greedy=True, min_new_tokens=4),
                             CallContext(eos_ids=(eos,)))
        drawn = run_interface("generate", engine, prompts, sample, CallContext(seed=5))
        outs[name] = drawn
        if rank == 0:
            first = free.response(0).index(eos)  # greedy tiny models repeat tokens
            res[f"gen/eos_stops/{name}"] = stop.response(0) == free.response(0)[: first + 1]
            res[f"gen/truncated/{name}"] = [float(x) for x in free.seq_fields["truncated"]]
            res[f"gen/min_new/{name}"] = (len(late.response(0)) >= 4
                                          and eos not in late.response(0)[:4])
        # the recorded log-probs are the model's own (EOS not masked), as a scoring call recomputes them
        rescored = run_interface("logprobs", engine, late, LogprobsArgs(), CallContext())
        if rank == 0:
            mask = late.response_mask()
            res[f"gen/min_new_lp_err/{name}"] = float(
                (late.token_fields["logprobs"][mask] - rescored.token_fields["logprobs"][mask]).abs().max())
            lp = drawn.token_fields["logprobs"]
            res[f"gen/sample_lp_ok/{name}"] = bool((lp[drawn.response_mask()] < 0).all())
            res[f"gen/sample_ids/{name}"] = list(drawn.ids)
    if rank == 0:
        a, b = outs["tp1"], outs["tp2"]
        res["gen/sampling_layout_invariant"] = all(a.tokens(i) == b.tokens(i) for i in range(a.size))


def _train_batch() -> Any:
    from runtime.data.batch import SeqBatch

    g = torch.Generator().manual_seed(11)
    lens = [9, 6, 11, 7, 10, 5, 8, 12]
    seqs = [torch.randint(0, 101, (n,), generator=g).tolist() for n in lens]
    batch = SeqBatch.from_lists(seqs, [3, 2, 4, 3, 2, 2, 3, 4])
    mask = batch.response_mask()
    old = torch.where(mask, -4.6 + 0.1 * torch.randn(batch.input_ids.shape, generator=g), 0.0)
    ref = torch.where(mask, old + 0.05 * torch.randn(batch.input_ids.shape, generator=g), 0.0)
    vals = torch.where(mask, 0.1 * torch.randn(batch.input_ids.shape, generator=g), 0.0)
    rewards = torch.tensor([1.0, 0.0, 0.5, -1.0, 0.3, 0.9, -0.2, 0.0])
    baseline = torch.tensor([0.5, 0.5, 0.0, 0.0, 0.2, 0.2, 0.1, 0.1])
    return batch.with_fields(token_fields={"logprobs": old, "ref_logprobs": ref, "values": vals},
                             seq_fields={"rewards": rewards, "baseline_rewards": baseline})


TRAIN_CASES = (  # (label, interface, family, value_head, args[, layouts])
    ("sft", "sft", "llama", False, {"lr": 1e-3}),
    ("ppo_actor", "ppo_actor", "qwen2", False,
     {"lr": 1e-3, "kl_in_reward": False, "entropy_coef": 0.01}),
    ("ppo_actor_minibatch", "ppo_actor", "llama", False,
     {"lr": 1e-3, "mini_batches": 2, "ppo_epochs": 2, "weight_decay": 0.1, "lr_schedule": "cosine",
      "warmup_steps": 1}, SHORT),
    ("grpo_actor", "grpo_actor", "gpt2", False, {"lr": 1e-3, "group_size": 2}),
    ("dpo", "dpo", "llama", False, {"lr": 1e-3}),
    ("rw_pairwise", "rw_pairwise", "qwen2", True, {"lr": 1e-3}, SHORT),
    ("ppo_critic", "ppo_critic", "llama", True, {"lr": 1e-3}),
    ("remax_actor", "remax_actor", "qwen2", False, {"lr": 1e-3}, SHORT),
    ("ppo_actor_ptx", "ppo_actor", "llama", False,  # ptx micro-batches beside PPO's; controller state
     {"lr": 1e-3, "ptx_coef": 0.5, "mini_batches": 2, "adaptive_kl_target": 0.01,
      "adaptive_kl_horizon": 10, "normalize_reward": True}, SHORT),
    ("am_pairwise", "am_pairwise", "llama", True, {"lr": 1e-3, "bound": 0.05}, SHORT),
    ("ppo_actor_rehearsal", "ppo_actor", "llama", False,  # selection on the actor's own embeddings
     {"lr": 1e-3, "rehearsal_coef": 0.5, "rehearsal_clusters": 2, "rehearsal_per_cluster": 2,
      "rehearsal_every": 2}, SHORT),
)


def _ptx_batch() -> Any:
    """Eight prompt/answer sequences of another length mix than the PPO batch."""
    from runtime.data.batch import SeqBatch

    g = torch.Generator().manual_seed(13)
    lens = [5, 9, 4, 7, 6, 10, 3, 8]
    seqs = [torch.randint(0, 101, (n,), generator=g).tolist() for n in lens]
    return SeqBatch.from_lists(seqs, [1, 3, 2, 1, 2, 4, 1, 3], ids=list(range(100, 108)))


def check_training(rank: int, tmp: Path, res: dict[str, Any]) -> None:
    from graph.catalog import make_args
    from graph.spec import ModelSpec
    from runtime.engine.model_engine import build_engine
    from runtime.interfaces import CallContext, run_interface

    batch = _train_batch()
    for label, interface, family, value_head, args, *only in TRAIN_CASES:
        spec = ModelSpec(role="critic" if value_head else "actor", arch=tiny_arch(family),
                         trainable=True, value_head=value_head)
        typed = make_args(interface, args)
        for name, dp, tp, pp, start in TRAIN_LAYOUTS:
            if only and name not in only[0]:
                continue
            engine = build_engine(spec, _layout(dp, tp, pp, start, micro_batches=2), rank, seed=5)
            if engine is None:
                continue
            ctx = CallContext(side_inputs={"ptx": _ptx_batch()} if args.get("ptx_coef") else {})
            losses = [run_interface(interface, engine, batch, typed, ctx)["loss"] for _ in range(TRAIN_STEPS)]
            res[f"train/{label}/{name}"] = losses
            if label == "sft" and name == "dp2pp2":
                _check_roundtrip(engine, rank, tmp, res)


def _check_roundtrip(engine: Any, rank: int, tmp: Path, res: dict[str, Any]) -> None:
    """A trained dp2 x pp2 model saved as HF, loaded by transformers and by a tp2 engine."""
    import transformers

    from graph.spec import ModelSpec
    from runtime.engine.convert import megatron_to_hf
    from runtime.engine.model_engine import build_engine

    path = tmp / "saved_sft"
    engine.save_hf(str(path))
    before = engine.global_state()
    hf_before = megatron_to_hf(before, engine.arch, value_head=False) if before is not None else None
    spec = ModelSpec(role="actor", arch=engine.arch, checkpoint=str(path))
    again = build_engine(spec, _layout(1, 2, 1, 0), rank)
    after = again.global_state() if again is not None else None
    if rank == 0:
        res["roundtrip/engine_bitexact"] = all(torch.equal(before[k], after[k]) for k in before)
        res["roundtrip/same_names"] = sorted(before) == sorted(after)
        loaded = transformers.AutoModelForCausalLM.from_pretrained(str(path)).state_dict()
        res["roundtrip/hf_bitexact"] = all(torch.equal(loaded[k], v) for k, v in hf_before.items())


def check_random_init(rank: int, res: dict[str, Any]) -> None:
    """Same seed, same global weights at tp1, tp2 and tp2 x pp2."""
    from graph.spec import ModelSpec
    from runtime.engine import convert
    from runtime.engine.model_engine import build_engine

    spec = ModelSpec(role="critic", arch=tiny_arch("qwen2"), value_head=True)
    mg = convert.hf_to_megatron(convert.random_hf_state(spec.arch, seed=9, value_head=True),
                                spec.arch, value_head=True)
    states = []
    for dp, tp, pp in ((1, 1, 1), (1, 2, 1), (1, 2, 2)):
        engine = build_engine(spec, _layout(dp, tp, pp, 0), rank, seed=9)
        states.append(engine.global_state() if engine is not None else None)
        if engine is not None:  # every local shard is the global tensor at its ranges
            ok = True
            for name, sh in engine.named_local_shards().items():
                full = convert.pad_vocab(name, mg[name], spec.arch, tp)
                if sh.spec.dim is not None:
                    idx = torch.tensor([i for a, b in sh.ranges for i in range(a, b)])
                    full = full.index_select(sh.spec.dim, idx)
                ok = ok and torch.equal(full, sh.tensor) and list(sh.global_shape) == list(mg[name].shape)
            res[f"init/shard_ranges/tp{tp}pp{pp}/rank{rank}"] = ok
    if rank == 0:
        ref = states[0]
        res["init/same_names"] = all(sorted(s) == sorted(ref) for s in states)
        res["init/bitexact"] = all(torch.equal(s[k], ref[k]) for s in states for k in ref)


def worker(rank: int, world: int, port: int, tmp: str) -> None:
    import warnings

    import torch.distributed as dist

    from runtime.engine import platform

    warnings.filterwarnings("ignore")
    if os.environ.get("RT_DEBUG_TIMEOUT"):  # dump stacks of a hung worker
        import faulthandler

        faulthandler.dump_traceback_later(int(os.environ["RT_DEBUG_TIMEOUT"]), exit=False)
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(1)
    platform.apply_platform_patches()
    dist.init_process_group(platform.backend(), rank=rank, world_size=world)
    res: dict[str, Any] = {}
    root = Path(tmp)
    check_logits_and_generate(rank, root / "ckpt", res)
    check_inference(rank, root / "ckpt", res)
    check_generate_controls(rank, root / "ckpt", res)
    check_random_init(rank, res)
    check_training(rank, root, res)
    (root / f"rank{rank}.json").write_text(json.dumps(res))
    dist.barrier()
    dist.destroy_process_group()


def ppo_six_layouts() -> dict[str, Any]:
    """A manual PPO plan of six different layouts (meshes disjoint and overlapping; TP, PP and
    DP), so every replica differs from its home and each train step is followed by moves."""
    from graph.placement.layout import DeviceMesh, Layout

    return {
        "actor_gen": Layout(mesh=DeviceMesh.span(0, 2), dp=1, tp=2, pp=1),
        "reward_inf": Layout(mesh=DeviceMesh.span(3, 1), dp=1, tp=1, pp=1),
        "ref_inf": Layout(mesh=DeviceMesh.span(2, 2), dp=2, tp=1, pp=1),
        "critic_inf": Layout(mesh=DeviceMesh.span(0, 4), dp=2, tp=2, pp=1),
        "actor_train": Layout(mesh=DeviceMesh.span(0, 4), dp=2, tp=1, pp=2),
        "critic_train": Layout(mesh=DeviceMesh.span(2, 2), dp=1, tp=1, pp=2),
    }


def run_jobs(ctx: Any, jobs: list[Any]) -> list[Any]:
    """Every job's Worker in one launch (process start-up costs seconds): their histories."""
    from runtime.execution.worker import Worker

    return [Worker(ctx, job).run() for job in jobs]


def off_policy_reference(ctx: Any, job: Any) -> list[Any]:
    """One-step off-policy by hand, on an on-policy single-device job: the actor's weights are
    snapshot before each train step, and the next batch is generated from that snapshot (copied
    into the live engine for the generate call only, then the trained weights are put back).
    Every rank walks the loop (engine building and the metrics gather are world-collective)."""
    from contextlib import contextmanager

    from graph.spec import CallKind
    from runtime.data.records import batches
    from runtime.execution.metrics import IterationLog
    from runtime.execution.program import Step, StepKind
    from runtime.execution.worker import Worker, dataset_batch_size

    w = Worker(ctx, job)
    actor = w.engines.home("actor")

    def snapshot() -> dict[str, torch.Tensor] | None:
        return None if actor is None else {n: s.tensor.detach().clone()
                                           for n, s in actor.named_local_shards().items()}

    @contextmanager
    def weights(state: dict[str, torch.Tensor] | None) -> Any:
        live = snapshot()
        with torch.no_grad():
            if actor is not None and state is not None:
                for n, s in actor.named_local_shards().items():
                    s.tensor.copy_(state[n])
        yield
        with torch.no_grad():
            if actor is not None and live is not None:
                for n, s in actor.named_local_shards().items():
                    s.tensor.copy_(live[n])

    order = batches(len(w.records), dataset_batch_size(job), job.data.seed)
    behaviour = snapshot()  # w0
    for k in range(job.iterations):
        payloads, log = w._batch(k, next(order)), IterationLog()
        for call in w.graph.calls:
            step = Step(StepKind.RUN, call.name, tuple(job.layouts[call.name].mesh.devices), model=call.model)
            if ctx.rank not in step.ranks:
                continue
            if call.kind is CallKind.GENERATE:
                with weights(behaviour):  # batch k from w_{k-1} (w0 for batches 0 and 1)
                    w.dispatcher.run(step, payloads, k, log)
                continue
            if call.kind is CallKind.TRAIN and call.model == "actor":
                behaviour = snapshot()  # w_k, the behaviour policy of batch k+1
            w.dispatcher.run(step, payloads, k, log)
        w.reporter.report(k, log)
    w.reporter.close()
    return w.history


def run_jobs_and_pool_scores(ctx: Any, jobs: list[Any], scored: list[Any]) -> tuple[list[Any], list[Any]]:
    """`run_jobs`, then each job of `scored` (rehearsal_rank=advantage or advantage_policy) with,
    per rank: the actor's kept rehearsal set and its mean score (rank 0), and a direct scoring
    by the `advantage_model` interface on the reward model in reward_inf's layout (the ranks of
    that layout) of the whole pool and, where the actor's home is on the same rank, of the kept
    set itself (`kept_direct`: advantage_policy keeps the policy's responses)."""
    from runtime.data.batch import SeqBatch
    from runtime.execution.worker import Worker
    from runtime.interfaces import run_interface

    out = []
    for job in scored:
        w = Worker(ctx, job)
        history = w.run()
        info: dict[str, Any] = {"history": history}
        actor = w.engines.home("actor")
        if actor is not None and ctx.rank == 0:
            info["kept"] = actor.state.get("rehearsal/seqs", [])
            info["kept_reward"] = actor.state.get("rehearsal/kept_reward")
            info["kept_prompt_lens"] = actor.state.get("rehearsal/prompt_lens", [])
        reward = w.engines.get("reward", job.layouts["reward_inf"])
        if reward is not None:
            actor_call = job.graph.call("actor_train")
            pool = w.dispatcher.rehearsal_pool(str(actor_call.args.rehearsal_path))
            scores = run_interface("advantage_model", reward, pool).seq_fields["rewards"]
            info["pool"] = [pool.input_ids[i, : int(pool.seq_lens[i])].tolist() for i in range(pool.size)]
            info["direct"] = [float(v) for v in scores]
            info["pool_prompts"] = [pool.input_ids[i, : int(pool.prompt_lens[i])].tolist() for i in range(pool.size)]
            if actor is not None and actor.state.get("rehearsal/seqs"):
                kept = SeqBatch.from_lists(actor.state["rehearsal/seqs"], actor.state["rehearsal/prompt_lens"],
                                           pad_id=pool.pad_id)
                info["kept_direct"] = [float(v) for v in run_interface("advantage_model", reward, kept)
                                       .seq_fields["rewards"]]
        out.append(info)
    return run_jobs(ctx, jobs), out


def run_jobs_and_reference(ctx: Any, jobs: list[Any], reference: Any) -> tuple[list[Any], list[Any]]:
    """`run_jobs`, then `off_policy_reference` on `reference`, in the same launch."""
    return run_jobs(ctx, jobs), off_policy_reference(ctx, reference)


def run_jobs_with_weights(ctx: Any, jobs: list[Any], roles: tuple[str, ...]) -> list[Any]:
    """Every job's Worker in one launch: (history, {role: this rank's parameter shards after
    the run, as float64 copies by name}) per job."""
    from runtime.execution.worker import Worker

    out = []
    for job in jobs:
        w = Worker(ctx, job)
        history = w.run()
        weights = {}
        for role in roles:
            engine = w.engines.home(role)
            if engine is not None:
                weights[role] = {n: s.tensor.detach().double().clone() for n, s in engine.named_local_shards().items()}
        out.append((history, weights))
    return out
