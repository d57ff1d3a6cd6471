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


def test_mix_is_splitmix64():
    # splitmix64 seeded with 0 returns mix(0), then mix(golden gamma): its published first outputs
    from runtime.interfaces.generate import _mix, _mix_tensor, _signed

    assert _mix(0) == 0xE220A8397B1DCDAF
    assert _mix(0x9E3779B97F4A7C15) == 0x6E789E6AA1B965F4
    got = _mix_tensor(torch.tensor([0, _signed(0x9E3779B97F4A7C15)]))
    assert got.tolist() == [_signed(0xE220A8397B1DCDAF), _signed(0x6E789E6AA1B965F4)]


def test_vectorised_draws_equal_the_scalar_ones_bit_for_bit():
    import random

    from runtime.interfaces.generate import sample_keys, sample_uniforms, uniforms_at

    rng = random.Random(0)
    for _ in range(50):
        seed, step, pos = rng.randrange(2**64), rng.randrange(2**40), rng.randrange(10**6)
        ids = [0, 1, 2**63 - 1] + [rng.randrange(2**62) for _ in range(13)]
        want = torch.tensor([sample_uniform(seed, step, i, pos) for i in ids], dtype=torch.float64)
        assert torch.equal(sample_uniforms(seed, step, ids, pos), want)
        # a sample's draw does not depend on which other samples share the call
        assert torch.equal(uniforms_at(sample_keys(seed, step, ids[5:9]), pos), want[5:9])
