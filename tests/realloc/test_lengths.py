"""plan.response_lengths: the generate call is priced at the expected longest response of its batch."""

import dataclasses
import json

import pytest

from graph.errors import UserError
from graph.lengths import LengthDist
from graph.placement.layout import DeviceMesh, Layout
from realloc.experiment import load_experiment
from realloc.planning import cost_model_for

OVERRIDES = ["graph.generate.max_new_tokens=64", "graph.batch_size=32"]


def _gen_time(exp, call, dp=1):
    cost = cost_model_for(exp)
    layout = Layout(mesh=DeviceMesh.span(0, dp), dp=dp, tp=1, pp=1)
    return cost.call_estimate(call, exp.graph.models[call.model], layout).time_s


def test_fixed_distribution_prices_like_response_len():
    exp = load_experiment("ppo_tiny", OVERRIDES)
    gen = exp.graph.call("actor_gen")
    assert gen.response_lengths is None  # the default source is fixed
    same = dataclasses.replace(gen, response_lengths=LengthDist.fixed(gen.response_len))
    assert _gen_time(exp, same) == pytest.approx(_gen_time(exp, gen))


def test_longtail_is_priced_at_the_expected_longest_response():
    exp = load_experiment("ppo_tiny", [*OVERRIDES, "plan.response_lengths=longtail"])
    gen = exp.graph.call("actor_gen")
    assert gen.response_lengths is not None and gen.response_lengths.source == "longtail"
    # the same call priced at a fixed length equal to the expected longest of its batch (32 on dp=1,
    # 16 on dp=2): the decode steps match, so the times agree (ctx differs by < 1 token on average)
    for dp, per_rank in ((1, 32), (2, 16)):
        longest = gen.response_lengths.expected_max(per_rank)
        mean_only = dataclasses.replace(gen, response_lengths=None, response_len=round(gen.response_lengths.mean()))
        at_longest = dataclasses.replace(gen, response_lengths=None, response_len=round(longest))
        t = _gen_time(exp, gen, dp)
        assert t == pytest.approx(_gen_time(exp, at_longest, dp), rel=0.05)
        assert t > 1.5 * _gen_time(exp, mean_only, dp)


def test_lengths_from_a_previous_run_and_from_the_data(tmp_path):
    metrics = tmp_path / "metrics.jsonl"
    lines = [{"iteration": 1, "actor_gen/response_len_hist": [[2, 30], [64, 2]]},
             {"iteration": 2, "actor_gen/response_len_hist": [[2, 28], [10, 4]]}]
    metrics.write_text("".join(json.dumps(r) + "\n" for r in lines) + '{"torn')
    exp = load_experiment("ppo_tiny", [*OVERRIDES, f"plan.response_lengths={metrics}"])
    dist = exp.graph.call("actor_gen").response_lengths
    assert dist.probs[1] == pytest.approx(58 / 64) and dist.probs[9] == pytest.approx(4 / 64)
    assert dist.probs[63] == pytest.approx(2 / 64)
    # arithmetic_1digit answers are one digit: one token, then EOS
    data = load_experiment("ppo_tiny", [*OVERRIDES, "plan.response_lengths=data"]).graph.call("actor_gen")
    assert data.response_lengths.probs[1] == pytest.approx(1.0)
    with pytest.raises(UserError, match="plan.response_lengths='nope.jsonl'"):
        load_experiment("ppo_tiny", [*OVERRIDES, "plan.response_lengths=nope.jsonl"])
