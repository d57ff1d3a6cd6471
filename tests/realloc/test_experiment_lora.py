"""`models.ROLE.lora` in experiments (realloc/config.py, realloc/experiment.py): the LoRA PPO
experiment builds LoraSpecs, and bad settings fail with one line naming the key and the fix."""

from __future__ import annotations

import pytest

from graph.spec import LORA_TARGETS, LoraSpec
from realloc.experiment import ConfigError, load_experiment


def test_lora_experiment_builds_lora_specs() -> None:
    models = load_experiment("ppo_lora_tiny").graph.models
    expected = LoraSpec(rank=8, alpha=16.0, targets=LORA_TARGETS)
    assert models["actor"].lora == expected and models["critic"].lora == expected
    assert models["ref"].lora is None
    assert models["critic"].value_head
    # off by default, on by an override
    assert load_experiment("ppo_tiny").graph.models["actor"].lora is None
    on = load_experiment("ppo_tiny", ["models.actor.lora.rank=2", "models.actor.lora.targets=[linear_fc2]"])
    assert on.graph.models["actor"].lora == LoraSpec(rank=2, alpha=16.0, targets=("linear_fc2",))
    off = load_experiment("ppo_lora_tiny", ["models.critic.lora=null"])
    assert off.graph.models["critic"].lora is None


@pytest.mark.parametrize(("override", "message"), [
    ("models.actor.lora.rank=0", r"^models\.actor\.lora\.rank=0: must be an integer >= 1"),
    ("models.actor.lora.alpha=-2", r"^models\.actor\.lora\.alpha=-2\.0: must be a number > 0"),
    ("models.actor.lora.targets=[q_proj]", r"^models\.actor\.lora\.targets: unknown target 'q_proj'; known: "),
    ("models.ref.lora.rank=4", r"^models\.ref\.lora is set but models\.ref\.trainable is false; set trainable"),
    ("models.actor.lora.rnak=4", r"unknown config key 'models\.actor\.lora\.rnak'"),
])
def test_bad_lora_settings_name_the_key(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        load_experiment("ppo_lora_tiny", [override])
    assert "\n" not in str(info.value)
