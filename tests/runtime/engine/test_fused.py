"""runtime.engine.fused: the baton that pairs two train interfaces' optimizer steps.

Fake trainers (no torch.distributed): the fused and the lone steps are recorded, so the
order every rank would issue them in is checked by hand."""

from __future__ import annotations

import pytest

from runtime.engine import fused


@pytest.fixture
def events(monkeypatch):
    log: list[str] = []

    def fake_fused(first, second):
        log.append(f"fused {first[1]}+{second[1]}")
        return {"who": first[1]}, {"who": second[1]}

    def fake_alone(req):
        log.append(f"alone {req[1]}")
        return {"who": req[1]}

    monkeypatch.setattr(fused, "fused_step", fake_fused)
    monkeypatch.setattr(fused, "_alone", fake_alone)
    return log


def interface(name: str, steps: int, log: list[str]):
    def run() -> list[str]:
        got = []
        for k in range(steps):
            log.append(f"{name} prepares {k}")
            pair = fused.current()
            assert pair is not None
            got.append(pair.train_step(None, f"{name}{k}", None, None)["who"])
        return got
    return run


def test_steps_pair_in_order_and_the_rest_run_alone(events):
    a, b, n = fused.run_pair(interface("a", 3, events), interface("b", 2, events))
    assert (a, b, n) == (["a0", "a1", "a2"], ["b0", "b1"], 2)
    assert events == [
        "a prepares 0",                 # a parks its step, hands the baton to b
        "b prepares 0", "fused a0+b0",  # b's step completes the pair: one fused step (a's first)
        "b prepares 1",                 # b goes on until its next step, parks it
        "a prepares 1", "fused a1+b1",
        "a prepares 2",                 # b has no third step: a parks, b ends, a runs alone
        "alone a2",
    ]
    assert fused.current() is None


def test_second_call_with_more_steps(events):
    a, b, n = fused.run_pair(interface("a", 1, events), interface("b", 3, events))
    assert (a, b, n) == (["a0"], ["b0", "b1", "b2"], 1)
    assert events[-4:] == ["b prepares 1", "alone b1", "b prepares 2", "alone b2"]


def test_an_error_in_one_call_is_raised(events):
    def broken():
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        fused.run_pair(interface("a", 2, events), broken)
    assert fused.current() is None
