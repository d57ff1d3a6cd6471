"""Price of intra-stage fusion: two train calls on the same pipeline stages, one schedule.

A 1F1B pipeline over `pp` stages and `m` micro-batches of stage time `t` (forward +
backward of one micro-batch on the slowest stage) takes (m + pp - 1) * t: m * t of work and
a fill/drain bubble of (pp - 1) * t, the bubble fraction (pp - 1) / (m + pp - 1).

Two train calls placed on the same stages (PPO's actor_train and critic_train on one mesh)
run back to back as two pipelines and pay two bubbles. Fused into one schedule (realloc's
`plan.fusion: intra`: the first call's micro-batches, then the second's, in one 1F1B
pipeline), the pair is one pipeline of m1 + m2 micro-batches with one fill and one drain,
the second call's forwards filling the first one's drain:

    unfused = (m1 + pp - 1) * t1 + (m2 + pp - 1) * t2
    fused  ~= m1 * t1 + m2 * t2 + (pp - 1) * max(t1, t2)

so the fused step saves (pp - 1) * min(t1, t2) per optimizer step the two calls take
together (a call's optimizer steps are its ppo_epochs * mini_batches; each step flushes
the pipeline, so only min(steps1, steps2) pairs of steps share one). A brute-force 1F1B
schedule (tests/cost_model/test_pipeline_fusion.py) gives exactly this saving for equal and
unequal stage times, in either order of the two calls. Alternating the two calls'
micro-batches (a, b, a, b, ...) instead stalls the steady state when their stage times
differ: with m >= 2 pp micro-batches each it is slower than not fusing at all, so realloc
concatenates them.
"""

from __future__ import annotations

from typing import Any


def pipeline_time(m: int, pp: int, t: float) -> float:
    """Seconds of one 1F1B pipeline of m micro-batches of stage time t over pp stages."""
    return (m + pp - 1) * t


def bubble_fraction(m: int, pp: int) -> float:
    """Share of a 1F1B pipeline's time its stages idle: (pp - 1) / (m + pp - 1)."""
    return (pp - 1) / (m + pp - 1)


def fused_saving_s(bubble1_s: float, steps1: int, bubble2_s: float, steps2: int) -> float:
    """Seconds intra-stage fusion saves on two train calls of the same pipeline stages, from
    each call's estimated bubble (all its steps) and optimizer steps: min(steps) step pairs
    each keep one fill/drain, the larger, and drop the smaller."""
    if steps1 <= 0 or steps2 <= 0:
        return 0.0
    return min(steps1, steps2) * min(bubble1_s / steps1, bubble2_s / steps2)


def pair_saving_s(call1: Any, estimate1: Any, call2: Any, estimate2: Any) -> float:
    """`fused_saving_s` of two train calls (graph.spec.Call) from their CallEstimates: the
    bubble is the estimate's `pipeline_bubble_s`, the steps ppo_epochs * mini_batches."""
    def steps(call: Any) -> int:
        args = call.args
        return int(getattr(args, "ppo_epochs", 1) or 1) * int(getattr(args, "mini_batches", 1) or 1)

    return fused_saving_s(float(estimate1.breakdown.get("pipeline_bubble_s", 0.0)), steps(call1),
                          float(estimate2.breakdown.get("pipeline_bubble_s", 0.0)), steps(call2))
