"""Step dispatch: every step kind has a handler, and an unknown one fails loudly."""

import pytest

from runtime.execution.dispatch import StepDispatcher
from runtime.execution.metrics import IterationLog
from runtime.execution.program import Step, StepKind


def test_every_step_kind_has_a_handler_method():
    assert set(StepDispatcher.HANDLERS) == set(StepKind)
    for name in StepDispatcher.HANDLERS.values():
        assert callable(getattr(StepDispatcher, name))


def test_a_kind_without_handler_is_a_bug_not_a_silent_step(monkeypatch):
    dispatcher = object.__new__(StepDispatcher)  # no engines needed: it fails before any work
    monkeypatch.setattr(StepDispatcher, "HANDLERS", {k: v for k, v in StepDispatcher.HANDLERS.items()
                                                      if k is not StepKind.FREE})
    with pytest.raises(AssertionError, match="bug: no handler for step kind"):
        dispatcher.run(Step(StepKind.FREE, "actor_gen", (0,), model="actor"), {}, 0, IterationLog())
