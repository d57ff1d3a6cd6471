"""Sampling draws depend only on (seed, iteration, sample, position), never on the batch or rank."""

import torch

from graph.catalog import GenerateArgs
from runtime.interfaces.generate import sample_next, sample_uniform


def test_uniform_is_a_pure_function_of_its_keys():
    a = sample_uniform(1, 2, 3, 4)
    assert a == sample_uniform(1, 2, 3, 4)
    assert 0.0 <= a < 1.0
    others = {sample_uniform(1, 2, 3, 5), sample_uniform(1, 2, 4, 4), sample_uniform(1, 3, 3, 4), sample_uniform(2, 2, 3, 4)}
    assert a not in others and len(others) == 4


def test_uniforms_are_spread_evenly():
    draws = torch.tensor([sample_uniform(0, 0, sid, 0) for sid in range(20000)])
    # mean 1/2 and variance 1/12 of U(0, 1), within a few standard errors
    assert abs(float(draws.mean()) - 0.5) < 0.01
    assert abs(float(draws.var()) - 1 / 12) < 0.005
    assert float(draws.min()) >= 0.0 and float(draws.max()) < 1.0


def test_inverse_cdf_picks_by_hand():
    # probabilities (0.2, 0.3, 0.5): u < 0.2 -> 0, 0.2 <= u < 0.5 -> 1, else 2
    logits = torch.log(torch.tensor([[0.2, 0.3, 0.5]] * 4))
    picked = sample_next(logits, GenerateArgs(), torch.tensor([0.1, 0.25, 0.49, 0.9]))
    assert picked.tolist() == [0, 1, 1, 2]
    # top_k=1 keeps only the most likely token whatever the draw
    assert sample_next(logits, GenerateArgs(top_k=1), torch.tensor([0.0, 0.3, 0.6, 0.99])).tolist() == [2] * 4
    assert sample_next(logits, GenerateArgs(greedy=True), torch.zeros(4)).tolist() == [2] * 4
