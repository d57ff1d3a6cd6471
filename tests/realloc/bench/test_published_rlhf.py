"""The published-settings bench: the ReaL settings and the FLOP count that turns ReaL's figure into time.

docs/published-rlhf.md reads ReaL's throughput figure (PetaFLOP/s bars) and converts each bar
to seconds per iteration with `real_flops_per_iteration`. The independent check is ReaL's own
docs table of full-training times (4 x LLaMA-2 70B, 128 GPUs, 128 + 128 tokens, 1600
iterations), which comes from the same measured iteration times, not from the FLOP count.
"""

import pytest

from realloc.bench.published_rlhf import SETTINGS, real_flops_per_iteration

# Bar heights of the 4 x 70B, 128-GPU, generation-128 panel of ReaL's figure
# (docs/source/images/vws.svg in openpsi-project/ReaLHF, read from the SVG's vector paths),
# and the hours ReaL's docs table gives for the same systems (docs/source/intro.rst).
BARS_PFLOPS = {"ReaL": 6.454155, "DeepSpeedChat": 0.777567, "OpenRLHF": 0.719865}
TABLE_HOURS = {"ReaL": 17.0, "DeepSpeedChat": 141.5, "OpenRLHF": 152.8}


@pytest.mark.parametrize("system", sorted(BARS_PFLOPS))
def test_flop_count_turns_the_figure_into_the_published_training_hours(system):
    flops = real_flops_per_iteration("llama2-70b", "llama2-70b", batch=512, prompt_len=128, gen_len=128)
    seconds = flops / (BARS_PFLOPS[system] * 1e15)
    hours = seconds * 1600 / 3600
    assert hours == pytest.approx(TABLE_HOURS[system], abs=0.06)  # the table rounds to 0.1 h


def test_flop_count_by_hand_for_a_toy_model(monkeypatch):
    from graph.spec import ModelArch
    from realloc.bench import published_rlhf

    toy = ModelArch(family="llama", num_layers=1, hidden_size=2, ffn_hidden_size=3, num_heads=1,
                    num_kv_heads=1, vocab_size=5, max_position_embeddings=16)
    monkeypatch.setitem(published_rlhf.ARCH, "toy", toy)
    # forward of one sequence of s tokens: 2 * (4*s*2*2 + 2*(s*s*2) + 3*s*2*3) + 4*s*5*2 = 108 s + 8 s^2
    fwd = {1: 116, 3: 396}
    # decode step i attends to the prompt token, i generated ones and itself: 2 * (16 + 2*(2+i)*2 + 18) + 40
    decode = 124 + 132
    # prompt forward + decode; critic, reference and reward forwards; actor and critic training (x4)
    expected = fwd[1] + decode + 3 * fwd[3] + 4 * 2 * fwd[3]
    assert expected == 4728
    assert real_flops_per_iteration("toy", "toy", batch=1, prompt_len=1, gen_len=2) == expected


def test_real_settings_are_the_figure_points():
    real = [s for s in SETTINGS if s.system == "ReaLHF"]
    assert real
    for s in real:
        assert s.prompt_len == 128 and s.batch * (s.prompt_len + s.response_len) == 2**17, s.name
        expected_gpus = {("llama2-7b", "llama2-7b"): 8, ("llama2-70b", "llama2-7b"): 64,
                         ("llama2-70b", "llama2-70b"): 128}[(s.actor, s.critic)]
        assert s.gpus == expected_gpus, s.name
