"""Dynamic sampling (DAPO, Yu et al. 2025): the refill loop of the executor.

The sampling calls (`graph.sampling.DynamicSampling.calls`: the reward call and the
generation feeding it) run in rounds. After each round the rank holding the rewards
broadcasts them to the world (one collective every rank enters after its share of the
round's steps, so the step order stays deadlock-free), every rank marks the groups whose
rewards are all equal (`pg_math.varied_groups`) and keeps the others, and the next round
generates for fresh prompts, until `group_target` groups are kept or `max_rounds` rounds
have run. A batch still short then is topped up with dropped groups (their advantage is 0
under group normalisation), so the calls after it see the batch size the plan priced.

Round 0 runs the iteration's own prompts with the sampling calls' whole program (weights
reallocated once); later rounds repeat only their sends and runs; the replicas they used
are freed after the last round. Prompt ids of later rounds come from a range of their own,
so sample ids stay unique and the sampling draws differ.

Logged per iteration under `dynamic_sampling/`: rounds, groups_kept (varied groups
trained on), groups_dropped, groups_topped_up; the sampling calls report their total time
and the mean of their statistics over the rounds (`IterationLog.record_call`), so the
reward call's `reward` is the mean over every round's responses.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist

from graph.sampling import DynamicSampling
from runtime.data.batch import SeqBatch
from runtime.data.binding import Field, Payload
from runtime.execution.metrics import IterationLog
from runtime.execution.program import Step, StepKind
from runtime.interfaces.pg_math import varied_groups

RoundPayloads = Callable[[int], dict[str, Payload]]
"""round r >= 1 -> the dataset payloads of that round's fresh prompts."""
RunStep = Callable[[Step, dict[str, Payload]], None]


def split_program(program: Sequence[Step], calls: Sequence[str]) -> tuple[tuple[Step, ...], tuple[Step, ...]]:
    """(the sampling calls' steps, the rest), each in program order; ValueError when a
    sampling step follows another step, which would reorder the plan's global order."""
    names = set(calls)
    sampling = tuple(s for s in program if s.call in names)
    rest = tuple(s for s in program if s.call not in names)
    if program[:len(sampling)] != sampling:
        raise ValueError(f"dynamic sampling reruns calls {sorted(names)}; they must come first in the "
                         "graph's order (list them before the other calls)")
    return sampling, rest


@dataclass(frozen=True)
class Selection:
    """The groups (by prompt id) taken from each round, and the counts logged."""

    per_round: tuple[tuple[int, ...], ...]
    rounds: int
    kept: int
    dropped: int
    topped_up: int


def group_ids(rewards: Field, group_size: int) -> list[int]:
    """Prompt id of each consecutive group of `group_size` samples (ids p * n + k)."""
    ids = rewards.ids
    if len(ids) % group_size:
        raise ValueError(f"{len(ids)} rewards do not form groups of {group_size}")
    out = []
    for g in range(len(ids) // group_size):
        members = {sid // group_size for sid in ids[g * group_size:(g + 1) * group_size]}
        if len(members) != 1:
            raise ValueError(f"bug: group {g} mixes prompts {sorted(members)}")
        out.append(members.pop())
    return out


def choose_groups(rounds: Sequence[tuple[list[int], torch.Tensor]], target: int) -> Selection:
    """Which groups to train on: varied groups round by round until `target`, then, if short,
    dropped groups (latest round first). `rounds` holds each round's (group ids, varied mask)."""
    chosen: list[list[int]] = []
    kept = 0
    for gids, varied in rounds:
        take = [g for g, v in zip(gids, varied.tolist()) if v][:max(target - kept, 0)]
        chosen.append(take)
        kept += len(take)
    dropped = sum(int((~varied).sum()) for _, varied in rounds)
    topped = 0
    for r in reversed(range(len(rounds))):
        if kept + topped >= target:
            break
        gids, varied = rounds[r]
        extra = [g for g, v in zip(gids, varied.tolist()) if not v][:target - kept - topped]
        chosen[r] = chosen[r] + extra
        topped += len(extra)
    return Selection(tuple(tuple(c) for c in chosen), len(rounds), kept, dropped, topped)


def select_payload(payload: Payload, prompt_ids: set[int], group_size: int, num_prompts: int) -> Payload:
    """The rows of `payload` belonging to prompts `prompt_ids`: per prompt when it has one
    row per prompt (prompts, answers), else per sample (id p * n + k)."""
    per_prompt = len(payload.ids) == num_prompts
    index = [i for i, sid in enumerate(payload.ids)
             if (sid if per_prompt else sid // group_size) in prompt_ids]
    if isinstance(payload, SeqBatch):
        return payload.select(index)
    return Field(payload.per_token, payload.values[index], tuple(payload.ids[i] for i in index))


def concat_payloads(parts: Sequence[Payload]) -> Payload:
    """One payload from the same key's parts of several rounds."""
    parts = [p for p in parts if len(p.ids)] or list(parts[:1])
    if isinstance(parts[0], SeqBatch):
        return SeqBatch.concat(list(parts))  # type: ignore[arg-type]
    fields: list[Field] = list(parts)  # type: ignore[arg-type]
    values = [f.values for f in fields]
    if fields[0].per_token:
        t = max(v.shape[1] for v in values)
        values = [torch.nn.functional.pad(v, (0, t - v.shape[1])) for v in values]
    return Field(fields[0].per_token, torch.cat(values), tuple(i for f in fields for i in f.ids))


class Resampler:
    """Runs the sampling calls in rounds and returns the iteration's filtered payloads."""

    def __init__(self, spec: DynamicSampling, *, rewards_rank: int, num_prompts: int,
                 keys: frozenset[str]) -> None:
        self.spec = spec
        self.rewards_rank = rewards_rank
        """The rank that broadcasts each round's rewards (the reward call's first rank)."""
        self.num_prompts = num_prompts
        self.keys = keys
        """The keys filtered and joined across rounds (the dataset's and the sampling calls'
        outputs, ptx excepted); any other key passes through."""

    def broadcast(self, rewards: Payload | None) -> Payload:
        """The rewards of a round on every rank (a world collective from `rewards_rank`)."""
        box: list[object] = [rewards]
        dist.broadcast_object_list(box, src=self.rewards_rank)
        return box[0]  # type: ignore[return-value]

    def run(self, steps: Sequence[Step], payloads: dict[str, Payload], log: IterationLog,
            run_step: RunStep, round_payloads: RoundPayloads,
            share: Callable[[Payload | None], Payload] | None = None) -> dict[str, Payload]:
        """The iteration's payloads after the rounds: `steps` are this rank's sampling steps,
        `payloads` round 0's; `share` (default `broadcast`) gives every rank a round's rewards."""
        share = share or self.broadcast
        spec, n = self.spec, self.spec.group_size
        first = [s for s in steps if s.kind is not StepKind.FREE]
        again = [s for s in steps if s.kind in (StepKind.SEND, StepKind.RUN)]
        frees = [s for s in steps if s.kind is StepKind.FREE]
        seen: list[dict[str, Payload]] = []
        rounds: list[tuple[list[int], torch.Tensor]] = []
        kept = 0
        for r in range(spec.max_rounds):
            current = payloads if r == 0 else {**{k: v for k, v in payloads.items() if k not in self.keys},
                                               **round_payloads(r)}
            for step in first if r == 0 else again:
                run_step(step, current)
            rewards = share(current.get(spec.rewards_key))
            assert isinstance(rewards, Field), "bug: the rewards key holds no field"
            varied = varied_groups(rewards.values, n)
            rounds.append((group_ids(rewards, n), varied))
            seen.append(current)
            kept += int(varied.sum())
            if kept >= self.num_prompts:
                break
        for step in frees:
            run_step(step, payloads)
        chosen = choose_groups(rounds, self.num_prompts)
        out = dict(payloads)
        for key in self.keys:
            parts = [select_payload(rnd[key], set(ids), n, self.num_prompts)
                     for rnd, ids in zip(seen, chosen.per_round) if key in rnd]
            if parts:
                out[key] = concat_payloads(parts)
        log.stats["dynamic_sampling"] = {"rounds": float(chosen.rounds), "groups_kept": float(chosen.kept),
                                         "groups_dropped": float(chosen.dropped),
                                         "groups_topped_up": float(chosen.topped_up)}
        return out

