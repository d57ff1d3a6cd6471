"""Validation: every `train.eval_every` iterations, the actor answers `data.eval_path`'s prompts
greedily and the reward call's rule or functions score the answers.

It runs right after the iteration's first generate call that reads the dataset's prompts, on
that call's ranks and engine (so with the weights that generate call sampled with: the
previous iteration's update), in batches of as many sequences as that call samples (its
prompts x samples per prompt), so a batch costs about what the call itself costs. The first rank of the call's
mesh scores the answers; its metrics are logged as `eval/reward`, `eval/accuracy` (a rule's
exact-match rate) and `eval/reward_NAME` (each reward function), and `eval/response_len`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import torch

from graph.catalog import RuleRewardArgs
from graph.dataflow import DataflowGraph
from graph.spec import Call
from runtime.data.batch import SeqBatch
from runtime.data.binding import Field, dataset_payloads
from runtime.data.records import Record
from runtime.data.tokenizer import Tokenizer
from runtime.interfaces import CallContext, run_interface


def reward_call(graph: DataflowGraph) -> Call | None:
    """The rule/function reward call that scores the actor's samples (None: there is none)."""
    return next((c for c in graph.calls if c.interface == "rule_reward"), None)


def evaluate(*, graph: DataflowGraph, call: Call, engine: Any, records: Sequence[Record], fmt: str,
             tok: Tokenizer, ctx: CallContext, reward_functions: tuple[Any, ...], score: bool) -> dict[str, float]:
    """Greedy answers of `records` by `call`'s engine (every rank of its mesh) and, where `score`,
    their metrics (the rank that logs)."""
    args = dataclasses.replace(call.args, greedy=True, num_samples=1)
    scorer = reward_call(graph)
    assert scorer is not None, "bug: the front door checks train.eval_every needs a rule or function reward"
    model = graph.models[scorer.model]
    size = max(1, call.batch_size * call.args.num_samples)  # as many sequences as the call samples
    rewards: list[float] = []
    accuracy: list[float] = []
    lengths: list[float] = []
    per_fn: dict[str, list[float]] = {}
    for start in range(0, len(records), size):
        chunk = list(records[start:start + size])
        ids = list(range(start, start + len(chunk)))
        payloads = dataset_payloads(fmt, chunk, ids, tok)
        prompts = payloads["prompts"]
        assert isinstance(prompts, SeqBatch)
        out = run_interface("generate", engine, prompts, args, dataclasses.replace(ctx, rows={}))
        if not score:
            continue
        lengths.extend((out.seq_lens - out.prompt_lens).float().tolist())
        seq = out if "answers" not in payloads else out.with_fields(
            seq_fields={"answer": _aligned(payloads["answers"], out.ids)})
        rctx = dataclasses.replace(ctx, rule=model.rule, reward_functions=reward_functions,
                                   reward_time_limit_s=model.time_limit_s, rows=dict(zip(ids, chunk)))
        scored = run_interface("rule_reward", None, seq, RuleRewardArgs(), rctx)
        rewards.extend(scored.seq_fields["rewards"].float().tolist())
        if "accuracy" in scored.seq_fields:
            accuracy.extend(scored.seq_fields["accuracy"].float().tolist())
        for name, values in scored.seq_fields.items():
            if name.startswith("reward_"):
                per_fn.setdefault(name, []).extend(v for v in values.float().tolist() if not math.isnan(v))
    if not score:
        return {}
    metrics = {"reward": _mean(rewards), "response_len": _mean(lengths), "samples": float(len(rewards))}
    if accuracy:
        metrics["accuracy"] = _mean(accuracy)
    metrics.update({name: _mean(v) for name, v in per_fn.items()})
    return metrics


def _aligned(field: Any, ids: Sequence[int]) -> torch.Tensor:
    assert isinstance(field, Field)
    return field.aligned(ids)


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else math.nan
