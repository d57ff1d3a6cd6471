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


def test_the_direct_reader_reads_whole_chunks_in_place_and_leaves_the_rest_to_dcp(tmp_path, monkeypatch):
    """One process, plain tensors: whole contiguous targets are read in place (counted),
    a target of another dtype or a non-contiguous one goes the stock way; all exact."""
    import warnings

    import torch.distributed.checkpoint as dcp

    g = torch.Generator().manual_seed(0)
    saved = {"a": torch.randn(64, 33, generator=g), "b": torch.randn(7, generator=g).to(torch.bfloat16),
             "c": torch.randint(0, 9, (5, 4), generator=g), "d": torch.randn(6, 6, generator=g)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dcp.save(saved, storage_writer=dcp.FileSystemWriter(str(tmp_path)), no_dist=True)
        reader = rank_state._dcp_reader()
        used = []
        real = reader._direct
        monkeypatch.setattr(reader, "_direct", lambda self, *a: used.append(real(self, *a)) or used[-1])
        target = {"a": torch.zeros(64, 33), "b": torch.zeros(7, dtype=torch.bfloat16), "c": torch.zeros(5, 4,
                  dtype=torch.int64), "d": torch.zeros(6, 6).t()}  # d: not contiguous
        target64 = {"a": torch.zeros(64, 33, dtype=torch.float64)}  # another dtype
        dcp.load(target, storage_reader=reader(str(tmp_path)), no_dist=True)
        dcp.load(target64, storage_reader=reader(str(tmp_path)), no_dist=True)
    for name in saved:
        assert torch.equal(target[name], saved[name]), name
    assert torch.equal(target64["a"], saved["a"].double())
    assert sorted(used) == [False, False, True, True, True]
