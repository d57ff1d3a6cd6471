"""Dynamic sampling's refill loop without processes: fake calls whose rewards are set per
prompt, so which groups must be dropped, kept and topped up is known in advance."""

from __future__ import annotations

import pytest
import torch

from graph.sampling import DynamicSampling
from runtime.data.batch import SeqBatch
from runtime.data.binding import Field, Payload
from runtime.execution.metrics import IterationLog
from runtime.execution.program import Step, StepKind
from runtime.execution.sampling import Resampler, choose_groups, split_program

N = 4  # group size
B = 3  # prompts per round


def _spec(max_rounds: int) -> DynamicSampling:
    return DynamicSampling(train_call="actor_train", rewards_key="rewards", rewards_call="reward_inf",
                           group_size=N, max_rounds=max_rounds, expected_rounds=1.5,
                           calls=("actor_gen", "reward_inf"))


STEPS = (Step(StepKind.REALLOC, "actor_gen", (0,), model="actor"), Step(StepKind.RUN, "actor_gen", (0,)),
         Step(StepKind.FREE, "actor_gen", (0,), model="actor"), Step(StepKind.RUN, "reward_inf", (0,)))


def _prompts(ids: list[int]) -> dict[str, Payload]:
    seqs = [[1, 2 + i % 5] for i in ids]
    return {"prompts": SeqBatch.from_lists(seqs, [2] * len(ids), ids=ids),
            "answers": Field(False, torch.tensor([float(i) for i in ids]), tuple(ids))}


class FakeCalls:
    """actor_gen: N responses per prompt; reward_inf: rewards from `varied(prompt id)`."""

    def __init__(self, varied) -> None:
        self.varied = varied
        self.log: list[str] = []

    def __call__(self, step: Step, payloads: dict[str, Payload]) -> None:
        self.log.append(f"{step.kind.value} {step.call}")
        if step.kind is not StepKind.RUN:
            return
        if step.call == "actor_gen":
            p = payloads["prompts"]
            ids = [pid * N + k for pid in p.ids for k in range(N)]
            seqs = [p.tokens(i) + [7 + k, 3] for i in range(p.size) for k in range(N)]
            payloads["seq"] = SeqBatch.from_lists(seqs, [2] * len(seqs), ids=ids)
            payloads["old_logp"] = Field(True, torch.ones(len(ids), 4) * torch.tensor(ids)[:, None], tuple(ids))
        else:
            seq = payloads["seq"]
            values = [float(k % 2) if self.varied(sid // N) else 1.0 for sid, k in
                      zip(seq.ids, [i % N for i in range(seq.size)])]
            payloads["rewards"] = Field(False, torch.tensor(values), seq.ids)


def _resample(varied, max_rounds: int):
    calls = FakeCalls(varied)
    resampler = Resampler(_spec(max_rounds), rewards_rank=0, num_prompts=B,
                          keys=frozenset({"prompts", "answers", "seq", "old_logp", "rewards"}))
    log = IterationLog()

    def fresh(r: int) -> dict[str, Payload]:
        return _prompts([100 * r + j for j in range(B)])

    out = resampler.run(STEPS, _prompts([0, 1, 2]), log, calls, fresh, share=lambda x: x)
    return out, log, calls


def test_groups_with_equal_rewards_are_dropped_and_the_batch_refilled():
    # prompts 0 and 2 of round 0 have equal rewards; of round 1 (100-102) only 101 varies;
    # round 2 (200-202) all vary, and only the first is needed
    varied = {0: False, 1: True, 2: False, 100: False, 101: True, 102: False, 200: True, 201: True, 202: True}
    out, log, calls = _resample(varied.get, max_rounds=5)
    assert out["prompts"].ids == (1, 101, 200)
    assert out["seq"].size == B * N
    assert sorted({sid // N for sid in out["seq"].ids}) == [1, 101, 200]
    assert out["rewards"].ids == out["seq"].ids and out["old_logp"].ids == out["seq"].ids
    assert out["answers"].values.tolist() == [1.0, 101.0, 200.0]
    # every kept group's rewards vary
    assert all(len(set(out["rewards"].values[g * N:(g + 1) * N].tolist())) > 1 for g in range(B))
    assert log.stats["dynamic_sampling"] == {"rounds": 3.0, "groups_kept": 3.0, "groups_dropped": 4.0,
                                             "groups_topped_up": 0.0}
    # the replica is reallocated once, freed once after the last round
    assert calls.log == ["realloc actor_gen", "run actor_gen", "run reward_inf",
                         "run actor_gen", "run reward_inf", "run actor_gen", "run reward_inf", "free actor_gen"]


def test_a_batch_still_short_after_the_last_round_is_topped_up_with_dropped_groups():
    out, log, _ = _resample(lambda pid: pid == 1, max_rounds=2)
    # one varied group (1), then dropped groups of the LAST round first: 100, 101
    assert out["prompts"].ids == (1, 100, 101)
    assert out["seq"].size == B * N
    assert log.stats["dynamic_sampling"] == {"rounds": 2.0, "groups_kept": 1.0, "groups_dropped": 5.0,
                                             "groups_topped_up": 2.0}


def test_a_full_first_round_generates_once():
    out, log, calls = _resample(lambda pid: True, max_rounds=4)
    assert out["prompts"].ids == (0, 1, 2)
    assert calls.log.count("run actor_gen") == 1
    assert log.stats["dynamic_sampling"]["rounds"] == 1.0


def test_choose_groups_by_hand():
    rounds = [([0, 1, 2, 3], torch.tensor([True, False, True, False])),
              ([10, 11, 12, 13], torch.tensor([False, True, True, True]))]
    sel = choose_groups(rounds, 4)
    assert sel.per_round == ((0, 2), (11, 12)) and (sel.kept, sel.dropped, sel.topped_up) == (4, 3, 0)
    sel = choose_groups(rounds, 7)
    assert sel.per_round == ((0, 2, 1), (11, 12, 13, 10)) and (sel.kept, sel.topped_up) == (5, 2)


def test_sampling_calls_must_come_first():
    steps = (Step(StepKind.RUN, "ref_inf", (0,)), *STEPS)
    with pytest.raises(ValueError, match="must come first"):
        split_program(steps, ("actor_gen", "reward_inf"))
    sampling, rest = split_program((*STEPS, Step(StepKind.RUN, "actor_train", (0,))), ("actor_gen", "reward_inf"))
    assert sampling == STEPS and [s.call for s in rest] == ["actor_train"]


def test_a_call_run_in_rounds_logs_its_total_time_and_mean_statistics():
    from graph.catalog import make_args
    from graph.spec import Call, CallKind

    call = Call(name="reward_inf", model="reward", kind=CallKind.INFERENCE, interface="rule_reward",
                args=make_args("rule_reward", {}), inputs=("seq", "answers"), outputs=("rewards",))
    log = IterationLog()
    for elapsed, values in ((0.5, [1.0, 0.0, 0.0, 0.0]), (0.25, [1.0, 1.0, 1.0, 0.0])):
        seq = SeqBatch.from_lists([[1, 2]] * 4, [1] * 4, ids=[0, 1, 2, 3])
        result = seq.with_fields(seq_fields={"accuracy": torch.tensor(values)})
        log.record_call(call, result, elapsed, {"rewards": Field(False, torch.tensor(values), seq.ids)})
    assert log.call_time_s["reward_inf"] == 0.75 and log.runs["reward_inf"] == 2
    assert log.rewards["reward_inf"] == pytest.approx(0.5)  # (0.25 + 0.75) / 2
    assert log.stats["reward_inf"] == {"accuracy": pytest.approx(0.5)}
