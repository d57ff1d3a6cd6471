"""The optimizer's learning-rate schedule, worked by hand."""

import pytest

from runtime.engine.schedule import lr_at


def test_lr_schedule() -> None:
    kw = {"lr": 1.0, "warmup_steps": 2, "total_steps": 12}
    assert lr_at(0, schedule="constant", **kw) == 0.5
    assert lr_at(5, schedule="constant", **kw) == 1.0
    assert lr_at(7, schedule="linear", **kw) == pytest.approx(0.5)
    assert lr_at(7, schedule="cosine", **kw) == pytest.approx(0.5)
    assert lr_at(12, schedule="cosine", **kw) == pytest.approx(0.0)
