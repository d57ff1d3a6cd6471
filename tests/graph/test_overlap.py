"""graph.overlap: which calls run ahead (one-step off-policy), which edges can stream, and the
one-line errors of the settings."""

import pytest

from graph.errors import UserError
from graph.overlap import (
    ahead_calls,
    check_fusion,
    check_off_policy_steps,
    intra_candidates,
    intra_pairs,
    stream_candidates,
    streamed_edges,
)
from realloc.experiment import load_experiment

PPO = load_experiment("ppo_tiny").graph


def test_ahead_calls():
    assert ahead_calls(PPO, 0) == ()
    assert ahead_calls(PPO, 1) == ("actor_gen",)
    remax = load_experiment("remax_tiny").graph
    assert ahead_calls(remax, 1) == ("actor_gen", "actor_greedy")
    with pytest.raises(UserError, match="needs a generate call on a trained model"):
        ahead_calls(load_experiment("sft_tiny").graph, 1)


@pytest.mark.parametrize("value", [2, -1, True, "1"])
def test_off_policy_steps_values(value):
    with pytest.raises(UserError, match=r"train.off_policy_steps=.* use 0 \(on-policy\) or 1"):
        check_off_policy_steps(value)


def test_fusion_values():
    assert check_fusion("auto", 1) == "auto"
    with pytest.raises(UserError, match="not one of off, inter, intra, all, auto"):
        check_fusion("yes")
    assert check_fusion("intra") == "intra" and check_fusion("all") == "all"
    with pytest.raises(UserError, match="set one of them off"):
        check_fusion("inter", 1)
    with pytest.raises(UserError, match="plan.fusion=all streams"):
        load_experiment("ppo_tiny", ["plan.fusion=all", "train.off_policy_steps=1"])
    with pytest.raises(UserError, match="plan.fusion=intra with train.off_policy_steps=1"):
        check_fusion("intra", 1)


def test_intra_candidates_share_devices_and_pipeline_degree():
    same = {c.name: (0, 1, 2, 3) for c in PPO.calls}
    pp2 = {c.name: (2, 1, 2) for c in PPO.calls}
    assert intra_candidates(PPO, same, pp2) == (("actor_train", "critic_train"),)
    assert intra_pairs(PPO, same, pp2, "intra") == intra_pairs(PPO, same, pp2, "all") == intra_candidates(PPO, same, pp2)
    assert intra_pairs(PPO, same, pp2, "inter") == () == intra_pairs(PPO, same, pp2, "auto")
    # pp=1 has no bubble to fill; different devices or pipeline degrees cannot share one schedule
    assert intra_candidates(PPO, same, {**pp2, "actor_train": (4, 1, 1), "critic_train": (4, 1, 1)}) == ()
    assert intra_candidates(PPO, same, {**pp2, "critic_train": (1, 1, 4)}) == ()
    assert intra_candidates(PPO, same, {**pp2, "critic_train": (1, 2, 2)}) == ()
    assert intra_candidates(PPO, {**same, "critic_train": (0, 1)}, pp2) == ()
    # one train call (DPO) has nothing to pair with
    dpo = load_experiment("dpo_tiny").graph
    assert intra_candidates(dpo, {c.name: (0, 1) for c in dpo.calls}, {c.name: (1, 1, 2) for c in dpo.calls}) == ()


def test_stream_candidates_need_disjoint_meshes_and_inference_consumers():
    meshes = {"actor_gen": (0, 1), "reward_inf": (3,), "ref_inf": (1, 2), "critic_inf": (2, 3),
              "actor_train": (2, 3), "critic_train": (2,)}
    # ref_inf shares device 1 with generation; train calls never stream
    assert stream_candidates(PPO, meshes) == (("actor_gen", "reward_inf"), ("actor_gen", "critic_inf"))
    assert streamed_edges(PPO, meshes, "inter") == stream_candidates(PPO, meshes)
    assert streamed_edges(PPO, meshes, "off") == () == streamed_edges(PPO, meshes, "auto")
