"""Compiling a plan into an iteration's steps: worked by hand on PPO with a manual plan."""

import pytest

from graph.placement.layout import DeviceMesh, Layout
from realloc.experiment import load_experiment
from runtime.execution.program import (
    Step,
    StepKind,
    busy_ranks,
    compile_iteration,
    rank_program,
    replica_last_uses,
)


def lay(start, size, dp=1, tp=1, pp=1):
    return Layout(mesh=DeviceMesh.span(start, size), dp=dp, tp=tp, pp=pp)


GRAPH = load_experiment("ppo_tiny").graph
# the actor generates on {0,1} but trains on {0..3}; the critic scores on {2,3} and trains on {2,3};
# the rule reward runs on {3}; the ref on {0,1}
LAYOUTS = {"actor_gen": lay(0, 2, dp=2), "reward_inf": lay(3, 1), "ref_inf": lay(0, 2, tp=2),
           "critic_inf": lay(2, 2, dp=2), "actor_train": lay(0, 4, dp=4), "critic_train": lay(2, 2, dp=2)}


def test_steady_iteration_by_hand():
    steps = [str(s) for s in compile_iteration(GRAPH, LAYOUTS, world_size=4, first=False)]
    assert steps == [
        "realloc actor for actor_gen on [0, 1, 2, 3]",      # stale after last iteration's train
        "run actor_gen on [0, 1]",
        "free actor for actor_gen on [0, 1]",                # the replica's last use
        "send seq 0->3 for reward_inf",
        "run reward_inf on [3]",
        "run ref_inf on [0, 1]",
        "send seq 0->2 for critic_inf",                      # 3 already has seq
        "run critic_inf on [2, 3]",
        # actor_train reads (seq, old_logp, ref_logp, rewards, values); seq is already everywhere
        "send old_logp 0->2 for actor_train", "send old_logp 1->3 for actor_train",
        "send ref_logp 0->2 for actor_train", "send ref_logp 1->3 for actor_train",
        "send rewards 3->0 for actor_train", "send rewards 3->1 for actor_train", "send rewards 3->2 for actor_train",
        "send values 2->0 for actor_train", "send values 3->1 for actor_train",
        "run actor_train on [0, 1, 2, 3]",
        "run critic_train on [2, 3]",                        # {2, 3} hold every input by now
    ]


def test_first_iteration_needs_no_reallocation():
    steps = compile_iteration(GRAPH, LAYOUTS, world_size=4, first=True)
    assert [s.kind for s in steps].count(StepKind.REALLOC) == 0
    assert [s.kind for s in steps].count(StepKind.RUN) == len(GRAPH.calls)
    without_free = compile_iteration(GRAPH, LAYOUTS, world_size=4, first=True, free_replicas=False)
    assert StepKind.FREE not in {s.kind for s in without_free}


def test_every_send_comes_from_a_holder_and_ranks_share_one_order():
    steps = compile_iteration(GRAPH, LAYOUTS, world_size=4, first=False)
    holders = {k: set(range(4)) for k in GRAPH.dataset_keys}
    for s in steps:
        if s.kind is StepKind.SEND:
            assert s.src in holders[s.key] and s.dst not in holders[s.key]
            holders[s.key].add(s.dst)
        elif s.kind is StepKind.RUN:
            call = GRAPH.call(s.call)
            assert all(set(s.ranks) <= holders[k] for k in call.inputs)
            for k in call.outputs:
                holders[k] = set(s.ranks)
    for a in range(4):
        for b in range(a + 1, 4):
            shared_a = [s for s in rank_program(steps, a) if b in s.ranks]
            shared_b = [s for s in rank_program(steps, b) if a in s.ranks]
            assert shared_a == shared_b


def test_replica_last_uses():
    one = lay(0, 1)
    layouts = {c.name: one for c in GRAPH.calls}
    assert replica_last_uses(GRAPH, layouts) == set()  # everything at home: nothing to free
    # the actor generates elsewhere than it trains; the ref (frozen) is never freed
    assert replica_last_uses(GRAPH, {**layouts, "actor_gen": lay(0, 2, dp=2), "ref_inf": lay(0, 2, dp=2)}) == {"actor_gen"}


def test_a_step_kind_must_be_a_step_kind():
    with pytest.raises(TypeError, match="bug: step kind 'runn' is not a StepKind"):
        Step("runn", "actor_gen", (0,))
    with pytest.raises(ValueError):
        StepKind("runn")


# one-step off-policy: the actor generates on {0, 1}; everything else runs on {2, 3}
DISJOINT = {"actor_gen": lay(0, 2, dp=2), "reward_inf": lay(3, 1), "ref_inf": lay(2, 2, tp=2),
            "critic_inf": lay(2, 2, dp=2), "actor_train": lay(2, 2, dp=2), "critic_train": lay(2, 2, dp=2)}


def test_off_policy_steady_iteration_by_hand():
    steps = [str(s) for s in compile_iteration(GRAPH, DISJOINT, world_size=4, first=False,
                                               ahead=("actor_gen",))]
    assert steps == [
        # batch k's samples (generated last iteration) go out before generation moves on
        "send seq 0->3 for reward_inf", "send seq 0->2 for ref_inf",
        "send old_logp 0->2 for actor_train", "send old_logp 1->3 for actor_train",
        # batch k+1 with the weights of before this iteration's train step
        "realloc actor for actor_gen on [0, 1, 2, 3] (next batch)",
        "run actor_gen on [0, 1] (next batch)",
        "free actor for actor_gen on [0, 1] (next batch)",
        # meanwhile {2, 3} score and train batch k
        "run reward_inf on [3]",
        "run ref_inf on [2, 3]",
        "run critic_inf on [2, 3]",
        "send rewards 3->2 for actor_train",
        "run actor_train on [2, 3]",
        "run critic_train on [2, 3]",
    ]
    # ranks 2 and 3 never wait for generation: after the refresh their steps involve no rank 0/1
    for rank in (2, 3):
        prog = rank_program(compile_iteration(GRAPH, DISJOINT, world_size=4, first=False,
                                              ahead=("actor_gen",)), rank)
        after = prog[[s.kind for s in prog].index(StepKind.REALLOC) + 1:]
        assert all(set(s.ranks) <= {2, 3} for s in after)


def test_off_policy_first_and_last_iterations():
    first = compile_iteration(GRAPH, DISJOINT, world_size=4, first=True, ahead=("actor_gen",))
    gens = [(s.ahead, str(s)) for s in first if s.call == "actor_gen" and s.kind is StepKind.RUN]
    assert gens == [(0, "run actor_gen on [0, 1]"), (1, "run actor_gen on [0, 1] (next batch)")]
    assert StepKind.REALLOC not in {s.kind for s in first}  # nothing trained yet
    last = compile_iteration(GRAPH, DISJOINT, world_size=4, first=False, ahead=("actor_gen",), last=True)
    assert not any(s.ahead for s in last) and "actor_gen" not in {s.call for s in last if s.kind is StepKind.RUN}
    # a resumed run generates its own batch first, from refreshed weights
    resumed = compile_iteration(GRAPH, DISJOINT, world_size=4, first=False, prologue=True, ahead=("actor_gen",))
    assert [str(s) for s in resumed[:2]] == ["realloc actor for actor_gen on [0, 1, 2, 3]", "run actor_gen on [0, 1]"]


@pytest.mark.parametrize("first,prologue,last", [(True, True, False), (False, False, False), (False, True, True)])
def test_off_policy_sends_come_from_holders_of_the_right_batch(first, prologue, last):
    steps = compile_iteration(GRAPH, LAYOUTS, world_size=4, first=first, prologue=prologue, last=last,
                              ahead=("actor_gen",))
    batches = [{k: set(range(4)) for k in GRAPH.dataset_keys} for _ in range(2)]
    if not prologue:  # batch k was generated last iteration on actor_gen's mesh
        batches[0].update({k: set(LAYOUTS["actor_gen"].mesh.devices) for k in GRAPH.call("actor_gen").outputs})
    for s in steps:
        holders = batches[s.ahead]
        if s.kind is StepKind.SEND:
            assert s.src in holders[s.key] and s.dst not in holders[s.key]
            holders[s.key].add(s.dst)
        elif s.kind is StepKind.RUN:
            call = GRAPH.call(s.call)
            assert all(set(s.ranks) <= holders[k] for k in call.inputs), s
            for k in call.outputs:
                holders[k] = set(s.ranks)
    runs = [s.call for s in steps if s.kind is StepKind.RUN and not s.ahead]
    expected = [c.name for c in GRAPH.calls if prologue or c.name != "actor_gen"]
    assert sorted(runs) == sorted(expected)
    assert [s.call for s in steps if s.kind is StepKind.RUN and s.ahead] == ([] if last else ["actor_gen"])


def test_streamed_iteration_by_hand():
    layouts = {**DISJOINT, "actor_train": lay(0, 4, dp=4), "critic_inf": lay(2, 2, tp=2)}
    streamed = (("actor_gen", "reward_inf"), ("actor_gen", "ref_inf"), ("actor_gen", "critic_inf"))
    steps = [str(s) for s in compile_iteration(GRAPH, layouts, world_size=4, first=False, streamed=streamed)]
    assert steps == [
        "realloc critic for critic_inf on [2, 3]",     # the streamed calls' stale replicas first
        "realloc actor for actor_gen on [0, 1, 2, 3]",
        "stream actor_gen into reward_inf, ref_inf, critic_inf on [0, 1, 2, 3]",
        "free actor for actor_gen on [0, 1]",
        "free critic for critic_inf on [2, 3]",
        # seq and old_logp are everywhere now; the scores are on [2, 3]
        "send ref_logp 2->0 for actor_train", "send ref_logp 3->1 for actor_train",
        "send rewards 3->0 for actor_train", "send rewards 3->1 for actor_train", "send rewards 3->2 for actor_train",
        "send values 2->0 for actor_train", "send values 3->1 for actor_train",
        "run actor_train on [0, 1, 2, 3]",
        "run critic_train on [2, 3]",
    ]


def test_fused_train_pair_is_one_step_by_hand():
    """actor_train and critic_train both on [0-3] (dp 2 x pp 2) with plan.fusion intra: one FUSE
    step at actor_train's place, after the sends both calls need; the critic's replica on [2, 3]
    is refreshed next iteration as before."""
    train = Layout(mesh=DeviceMesh.span(0, 4), dp=2, tp=1, pp=2)
    layouts = {**LAYOUTS, "actor_train": train, "critic_train": train}
    pair = (("actor_train", "critic_train"),)
    steps = [str(s) for s in compile_iteration(GRAPH, layouts, world_size=4, first=False, fused=pair)]
    unfused = [str(s) for s in compile_iteration(GRAPH, layouts, world_size=4, first=False)]
    i = unfused.index("run actor_train on [0, 1, 2, 3]")
    assert unfused[i + 1:] == ["run critic_train on [0, 1, 2, 3]"]
    # critic_train's inputs (seq, values, rewards, ...) are all sent before actor_train in both
    assert steps == [*unfused[:i], "fuse actor_train + critic_train on [0, 1, 2, 3]"]
    assert all(s.kind is not StepKind.RUN or s.call != "critic_train"
               for s in compile_iteration(GRAPH, layouts, world_size=4, first=False, fused=pair))


def test_hoisted_sends_by_hand():
    """The steady iteration above with every send posted once its sender holds the key."""
    from runtime.execution.program import hoist_sends

    steps = hoist_sends(GRAPH, compile_iteration(GRAPH, LAYOUTS, world_size=4, first=False))
    posts = [(str(s), s.ranks) for s in steps if s.kind is StepKind.SEND]
    text = [f"{str(s)} @{list(s.ranks)}" if s.kind is StepKind.SEND else str(s) for s in steps]
    assert text == [
        "realloc actor for actor_gen on [0, 1, 2, 3]",
        "run actor_gen on [0, 1]",
        # actor_gen's outputs leave at once: seq to the reward and critic ranks, old_logp to actor_train's
        "send seq 0->3 for reward_inf @[0]", "send seq 0->2 for critic_inf @[0]",
        "send old_logp 0->2 for actor_train @[0]", "send old_logp 1->3 for actor_train @[1]",
        "free actor for actor_gen on [0, 1]",
        "send seq 0->3 for reward_inf @[3]",
        "run reward_inf on [3]",
        "send rewards 3->0 for actor_train @[3]", "send rewards 3->1 for actor_train @[3]",
        "send rewards 3->2 for actor_train @[3]",
        "run ref_inf on [0, 1]",
        "send ref_logp 0->2 for actor_train @[0]", "send ref_logp 1->3 for actor_train @[1]",
        "send seq 0->2 for critic_inf @[2]",
        "run critic_inf on [2, 3]",
        "send values 2->0 for actor_train @[2]", "send values 3->1 for actor_train @[3]",
        "send old_logp 0->2 for actor_train @[2]", "send old_logp 1->3 for actor_train @[3]",
        "send ref_logp 0->2 for actor_train @[2]", "send ref_logp 1->3 for actor_train @[3]",
        "send rewards 3->0 for actor_train @[0]", "send rewards 3->1 for actor_train @[1]",
        "send rewards 3->2 for actor_train @[2]",
        "send values 2->0 for actor_train @[0]", "send values 3->1 for actor_train @[1]",
        "run actor_train on [0, 1, 2, 3]",
        "run critic_train on [2, 3]",
    ]
    assert len(posts) == 2 * 11


@pytest.mark.parametrize("seed", range(6))
def test_hoisted_sends_keep_each_pairs_order_and_follow_their_data(seed):
    """Brute force over random placements: per (src, dst) the posts come in the order of the
    receives; a post comes after the step that gave its sender the key; every step of the
    unhoisted program is still there, once per rank."""
    import random

    from runtime.execution.program import hoist_sends

    rng = random.Random(seed)
    layouts = {}
    for call in GRAPH.calls:
        size = rng.choice([1, 2, 4])
        start = rng.randrange(0, 4 - size + 1)
        layouts[call.name] = lay(start, size, dp=size)
    plain = compile_iteration(GRAPH, layouts, world_size=4, first=False)
    hoisted = hoist_sends(GRAPH, plain)
    for rank in range(4):  # the non-send steps of each rank keep their order
        assert [s for s in rank_program(hoisted, rank) if s.kind is not StepKind.SEND] == \
               [s for s in rank_program(plain, rank) if s.kind is not StepKind.SEND]
    sends = [s for s in plain if s.kind is StepKind.SEND]
    for src, dst in {(s.src, s.dst) for s in sends}:
        pair = [s.key for s in sends if (s.src, s.dst) == (src, dst)]
        assert [s.key for s in hoisted if s.kind is StepKind.SEND and s.ranks == (src,) and s.dst == dst] == pair
        assert [s.key for s in hoisted if s.kind is StepKind.SEND and s.ranks == (dst,) and s.src == src] == pair
    for i, s in enumerate(hoisted):
        if s.kind is StepKind.SEND and s.ranks == (s.src,) and s.key not in GRAPH.dataset_keys:
            before = hoisted[:i]
            made = any(b.kind is StepKind.RUN and s.src in b.ranks and s.key in GRAPH.call(b.call).outputs
                       for b in before)
            brought = any(b.kind is StepKind.SEND and b.ranks == (s.src,) and b.dst == s.src and b.key == s.key
                          for b in before)
            assert made or brought, f"{s} posted before its sender holds {s.key}"
            recv = next(j for j, r in enumerate(hoisted) if r.kind is StepKind.SEND and r.ranks == (s.dst,)
                        and (r.src, r.key, r.call) == (s.src, s.key, s.call))
            assert recv > i


def test_ranks_no_step_involves_are_idle():
    # every call on {0, 1} of 4 workers: ranks 2 and 3 idle (they build no batches: Worker.idle)
    two = {"actor_gen": lay(0, 1), "reward_inf": lay(0, 1), "ref_inf": lay(1, 1), "critic_inf": lay(1, 1),
           "actor_train": lay(0, 1), "critic_train": lay(1, 1)}
    programs = [compile_iteration(GRAPH, two, world_size=4, first=f) for f in (True, False)]
    assert busy_ranks(programs, 4) == (0, 1)
    assert all(rank_program(p, r) == () for p in programs for r in (2, 3))
    # a rank that only receives or reallocates is busy: the manual plan uses all four
    assert busy_ranks([compile_iteration(GRAPH, LAYOUTS, world_size=4, first=False)], 4) == (0, 1, 2, 3)
