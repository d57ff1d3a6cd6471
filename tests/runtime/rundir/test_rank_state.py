"""A rank's RNG states come back exactly. (Tensors across layouts and world sizes:
tests/runtime/rundir/test_reshard.py; a real kill and resume: tests/realloc/test_resume.py.)"""

from __future__ import annotations

import torch

from runtime.rundir import rank_state


def test_rng_state_restores_the_same_draws():
    saved = rank_state.rng_state()
    assert all(torch.is_tensor(v) for v in saved.values())  # DCP stores them as plain tensors
    first = torch.rand(4)
    torch.rand(100)  # move on
    rank_state.set_rng_state(saved)
    assert torch.equal(torch.rand(4), first)
