"""graph.roles: keys bind to roles by position, the pool's scores by name."""

import pytest

from graph.errors import GraphError
from graph.roles import check_bindings, input_roles


def test_input_roles_bind_the_pool_scores_by_key_name() -> None:
    rl = ("seq", "old", "ref", "rew", "val")
    base = ("sequences", "logprobs", "ref_logprobs", "rewards", "values")
    assert input_roles("ppo_actor", rl) == base
    assert input_roles("ppo_actor", (*rl, "ptx")) == (*base, "ptx")
    assert input_roles("ppo_actor", (*rl, "rehearsal_scores")) == (*base, "pool_scores")
    assert input_roles("ppo_actor", (*rl, "ptx", "rehearsal_scores")) == (*base, "ptx", "pool_scores")
    assert input_roles("ppo_actor", (*rl, "rehearsal_scores", "ptx")) == (*base, "pool_scores", "ptx")
    assert input_roles("logprobs", ("seq",)) == ("sequences",)
    # a seventh key of another name has no role
    with pytest.raises(GraphError, match="pool_scores only as key rehearsal_scores"):
        check_bindings("ppo_actor", (*rl, "ptx", "scores"), (), where="call 'a'")


def test_input_roles_bind_the_pool_responses_by_key_name_too() -> None:
    rl = ("seq", "old", "ref", "rew", "val")
    base = ("sequences", "logprobs", "ref_logprobs", "rewards", "values")
    both = ("rehearsal_scores", "rehearsal_responses")
    assert input_roles("ppo_actor", (*rl, *both)) == (*base, "pool_scores", "pool_responses")
    assert input_roles("ppo_actor", (*rl, *both[::-1])) == (*base, "pool_responses", "pool_scores")
    assert input_roles("ppo_actor", (*rl, "rehearsal_responses", "ptx", "rehearsal_scores")) == (
        *base, "pool_responses", "ptx", "pool_scores")
    with pytest.raises(GraphError, match="pool_responses only as key rehearsal_responses"):
        check_bindings("ppo_actor", (*rl, "ptx", "rehearsal_scores", "responses"), (), where="call 'a'")
