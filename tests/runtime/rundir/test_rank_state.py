"""A rank's checkpoint state without processes: the file format loads with weights_only and
the RNG states come back exactly. (Weights, optimizer and EMA across a real kill and resume
are checked end to end in tests/realloc/test_resume.py.)"""

from __future__ import annotations

import torch

from runtime.rundir import rank_state as train_state


def test_a_rank_file_round_trips_tensors_and_json_engine_state(tmp_path):
    state = {
        "models": {"actor": {"layout": "[0-1] dp2 tp1 pp1 mb1",
                             "weights": {"embedding.word_embeddings.weight": torch.randn(5, 3)},
                             "optimizer": {"step": 3, "main_params": [torch.randn(7)],
                                           "state": [{"step": torch.tensor(3.0), "exp_avg": torch.randn(7),
                                                      "exp_avg_sq": torch.rand(7)}]},
                             "ema": None}},
        "engine_state": {"actor@[0-1] dp2 tp1 pp1 mb1": {"kl_coef": 0.05, "history": [0.1, None], "on": True}},
        "rng": train_state.rng_state(),
    }
    path = tmp_path / "rank0.pt"
    path.write_bytes(train_state.to_bytes(state))
    back = train_state.read_rank_file(path)  # weights_only=True: no pickled code
    assert back["engine_state"] == state["engine_state"]
    saved, loaded = state["models"]["actor"], back["models"]["actor"]
    assert loaded["layout"] == saved["layout"] and loaded["ema"] is None
    assert torch.equal(loaded["weights"]["embedding.word_embeddings.weight"],
                       saved["weights"]["embedding.word_embeddings.weight"])
    for key in ("step", "exp_avg", "exp_avg_sq"):
        assert torch.equal(loaded["optimizer"]["state"][0][key], saved["optimizer"]["state"][0][key])
    assert loaded["optimizer"]["step"] == 3


def test_rng_state_restores_the_same_draws():
    saved = train_state.rng_state()
    first = torch.rand(4)
    torch.rand(100)  # move on
    train_state.set_rng_state(saved)
    assert torch.equal(torch.rand(4), first)
