"""Intra-stage fusion pricing (cost_model.pipeline_fusion) against hand-worked numbers and a
brute-force 1F1B schedule."""

from __future__ import annotations

import pytest

from cost_model.pipeline_fusion import bubble_fraction, fused_saving_s, pipeline_time


def one_f_one_b(pp: int, fwd: list[float], bwd: list[float]) -> float:
    """Makespan of a 1F1B schedule of micro-batches with per-micro-batch stage times, by
    brute force: each stage runs its 1F1B op order (warm-up forwards, then one forward one
    backward, then cool-down backwards); a forward waits for the previous stage's forward of
    the same micro-batch, a backward for the next stage's backward and its own forward."""
    m = len(fwd)
    orders = []
    for s in range(pp):
        warm = min(pp - s - 1, m)
        ops = [("F", k) for k in range(warm)]
        for i in range(m - warm):
            ops += [("F", warm + i), ("B", i)]
        ops += [("B", k) for k in range(m - warm, m)]
        orders.append(ops)
    end: dict[tuple[str, int, int], float] = {}
    free = [0.0] * pp
    pos = [0] * pp
    while any(pos[s] < len(orders[s]) for s in range(pp)):
        moved = False
        for s in range(pp):
            if pos[s] == len(orders[s]):
                continue
            kind, k = orders[s][pos[s]]
            deps = [("F", k, s - 1)] if kind == "F" and s > 0 else []
            if kind == "B":
                deps = [("F", k, s)] + ([("B", k, s + 1)] if s < pp - 1 else [])
            if all(d in end for d in deps):
                start = max([free[s]] + [end[d] for d in deps])
                free[s] = end[(kind, k, s)] = start + (fwd[k] if kind == "F" else bwd[k])
                pos[s] += 1
                moved = True
        assert moved, "deadlock in the brute-force schedule"
    return max(free)


def test_hand_worked_formula() -> None:
    # pp=4, m=4, t=1: 4 + 3 = 7 s, bubble 3/7
    assert pipeline_time(4, 4, 1.0) == 7.0
    assert bubble_fraction(4, 4) == pytest.approx(3 / 7)
    # two calls, 4 micro-batches each, t=1 s, pp=4: 7 + 7 = 14 unfused, 4 + 4 + 3 = 11 fused
    assert fused_saving_s(3.0, 1, 3.0, 1) == 3.0
    # 2 optimizer steps each (bubble 2 x 3 s), the other call's stage time half as long
    assert fused_saving_s(6.0, 2, 3.0, 2) == 3.0
    # 1 step vs 3 steps: one pair of steps shares a pipeline
    assert fused_saving_s(3.0, 1, 9.0, 3) == 3.0
    assert fused_saving_s(0.0, 1, 3.0, 1) == 0.0


@pytest.mark.parametrize("pp,m1,m2", [(2, 2, 2), (4, 4, 4), (4, 8, 4), (3, 5, 2)])
def test_uniform_stage_times_match_brute_force(pp: int, m1: int, m2: int) -> None:
    tf, tb = 1.0, 2.0
    t = tf + tb
    assert one_f_one_b(pp, [tf] * m1, [tb] * m1) == pytest.approx(pipeline_time(m1, pp, t))
    unfused = pipeline_time(m1, pp, t) + pipeline_time(m2, pp, t)
    fused = one_f_one_b(pp, [tf] * (m1 + m2), [tb] * (m1 + m2))
    saving = fused_saving_s((pp - 1) * t, 1, (pp - 1) * t, 1)
    assert fused == pytest.approx(unfused - saving)


@pytest.mark.parametrize("pp,m", [(2, 2), (4, 4), (4, 8), (3, 5)])
def test_unequal_stage_times_concatenated_schedule(pp: int, m: int) -> None:
    # the actor's micro-batches 1+2 s, the critic's 0.5+1 s (a smaller model)
    fa, ba, fc, bc = 1.0, 2.0, 0.5, 1.0
    unfused = one_f_one_b(pp, [fa] * m, [ba] * m) + one_f_one_b(pp, [fc] * m, [bc] * m)
    priced = fused_saving_s((pp - 1) * (fa + ba), 1, (pp - 1) * (fc + bc), 1)
    # the fused schedule realloc runs: one call's micro-batches, then the other's, one 1F1B pipeline
    for first, second in (((fa, ba), (fc, bc)), ((fc, bc), (fa, ba))):
        fused = one_f_one_b(pp, [first[0]] * m + [second[0]] * m, [first[1]] * m + [second[1]] * m)
        assert priced > 0
        assert unfused - fused == pytest.approx(priced)
    # alternating unequal micro-batches (actor, critic, actor, ...) stalls the steady state:
    # with enough of them it is slower than no fusion at all, hence the concatenated order
    alternating = one_f_one_b(pp, [fa, fc] * m, [ba, bc] * m)
    if m >= 2 * pp:
        assert alternating > unfused
    assert alternating >= unfused - priced - 1e-9
