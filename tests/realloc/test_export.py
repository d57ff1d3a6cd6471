"""Tests of realloc/export.py: export a run's model as a HF directory, and chat with it.

The run directory is built by hand (config.yaml + models/ROLE as the executor writes them),
so no workers start; the reference is transformers' own greedy decoding and the project's
character tokenizer.
"""

from __future__ import annotations

import json
import random

import pytest
import torch
import transformers
import yaml

from graph.spec import ModelArch
from realloc.cli import main
from realloc.export import Chat, ChatSettings, chat_loop, export_model
from runtime.data.tokenizer import CHARS, CharTokenizer, char_hf_tokenizer
from runtime.engine.convert import random_hf_state
from runtime.engine.hf_checkpoint import save_hf_checkpoint

ARCH = ModelArch(family="llama", num_layers=2, hidden_size=32, ffn_hidden_size=64, num_heads=4,
                 num_kv_heads=2, vocab_size=64, max_position_embeddings=64)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("run")
    (root / "config.yaml").write_text(yaml.safe_dump({
        "name": "ppo_tiny", "data": {"tokenizer": "char"},
        "models": {"actor": {"trainable": True}, "critic": {"trainable": True, "value_head": True}}}))
    save_hf_checkpoint(str(root / "models" / "actor"), random_hf_state(ARCH, seed=3, value_head=False),
                       ARCH, value_head=False)
    save_hf_checkpoint(str(root / "models" / "critic"), random_hf_state(ARCH, seed=4, value_head=True),
                       ARCH, value_head=True)
    return root


def test_char_tokenizer_as_hf_gives_the_same_ids():
    ours, hf = CharTokenizer(), char_hf_tokenizer()
    rng = random.Random(0)
    for _ in range(50):
        text = "".join(rng.choice(CHARS + "ABC~") for _ in range(rng.randint(1, 20)))
        ids = ours.encode(text)
        assert hf.encode(text, add_special_tokens=False) == ids
        assert hf.decode(ids, skip_special_tokens=True) == ours.decode(ids)
    assert (hf.pad_token_id, hf.bos_token_id, hf.eos_token_id) == (ours.pad_id, ours.bos_id, ours.eos_id)


def test_export_writes_a_directory_transformers_loads(run_dir, tmp_path):
    done = export_model(run_dir, tmp_path / "out")
    assert done.role == "actor"
    assert {"config.json", "model.safetensors", "tokenizer.json", "realloc_export.json"} <= set(done.files)
    model = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    source = transformers.AutoModelForCausalLM.from_pretrained(run_dir / "models" / "actor")
    for (name, a), (_, b) in zip(model.state_dict().items(), source.state_dict().items()):
        assert torch.equal(a, b), name
    tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "out")
    assert tok.encode("12+3=", add_special_tokens=False) == CharTokenizer().encode("12+3=")
    info = json.loads((tmp_path / "out" / "realloc_export.json").read_text())
    assert info["model"] == "actor" and info["prompt_format"] == "bos"


def test_export_refuses_to_overwrite_and_names_bad_roles(run_dir, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(ValueError, match="already exists and is not empty.*--force"):
        export_model(run_dir, out)
    assert (out / "keep.txt").read_text() == "mine"  # nothing written is lost
    with pytest.raises(ValueError, match="no saved model 'ref'; saved: actor, critic"):
        export_model(run_dir, tmp_path / "x", role="ref")
    with pytest.raises(ValueError, match="not a run directory"):
        export_model(tmp_path, tmp_path / "y")
    export_model(run_dir, out, role="critic", force=True)
    assert not (out / "keep.txt").exists()
    assert "ForSequenceClassification" in json.loads((out / "config.json").read_text())["architectures"][0]


def test_greedy_chat_matches_transformers_decoding(run_dir, tmp_path):
    export_model(run_dir, tmp_path / "out")
    chat = Chat(tmp_path / "out", ChatSettings(greedy=True, max_new_tokens=6))
    assert chat.format == "bos"
    tok = CharTokenizer()
    ids = [tok.bos_id] + tok.encode("2+3=")
    model = transformers.AutoModelForCausalLM.from_pretrained(run_dir / "models" / "actor").eval()
    seq = list(ids)
    with torch.no_grad():  # hand-rolled greedy loop as the reference
        for _ in range(6):
            nxt = int(model(torch.tensor([seq])).logits[0, -1].argmax())
            if nxt == tok.eos_id:
                break
            seq.append(nxt)
    assert chat.reply("2+3=") == tok.decode(seq[len(ids):]).strip()
    # the run directory itself works too, with the run's tokenizer
    assert Chat(run_dir, ChatSettings(greedy=True, max_new_tokens=6)).reply("2+3=") == chat.reply("2+3=")
    answers: list[str] = []
    assert chat_loop(chat, ["2+3=", "", "1+1=", "/exit", "9+9="], answers.append) == 2


def test_chat_errors(run_dir, tmp_path):
    with pytest.raises(ValueError, match="value-head model"):
        Chat(run_dir / "models" / "critic", ChatSettings())
    with pytest.raises(ValueError, match="does not exist"):
        Chat(tmp_path / "nope", ChatSettings())
    with pytest.raises(ValueError, match="--temperature"):
        ChatSettings(temperature=0.0)


def test_cli_export_and_chat(run_dir, tmp_path, capsys):
    assert main(["export", str(run_dir), "--out", str(tmp_path / "m")]) == 0
    assert "exported actor" in capsys.readouterr().out
    assert main(["chat", str(tmp_path / "m"), "--prompt", "1+2=", "--greedy", "--max-new-tokens", "4"]) == 0
    expected = Chat(tmp_path / "m", ChatSettings(greedy=True, max_new_tokens=4)).reply("1+2=")
    assert capsys.readouterr().out.strip() == expected
    assert main(["export", str(run_dir), "--out", str(tmp_path / "m")]) == 2
    assert "already exists" in capsys.readouterr().err


def test_exported_model_stops_at_eos_in_plain_transformers_generate(tmp_path):
    """A model built to always predict EOS: the embedding's dimension 0 is 1 for every token, the
    layers add nothing, and the LM head reads EOS off that dimension. transformers' generate,
    given no eos_token_id, stops after one token only if the export wrote the special tokens."""
    state = random_hf_state(ARCH, seed=5, value_head=False)
    state["model.embed_tokens.weight"][:, 0] = 1.0
    for key in state:
        if key.endswith(("o_proj.weight", "down_proj.weight")):
            state[key].zero_()
    state["lm_head.weight"].zero_()
    eos = CharTokenizer().eos_id
    state["lm_head.weight"][eos, 0] = 10.0
    root = tmp_path / "run"
    (root / "models").mkdir(parents=True)
    (root / "config.yaml").write_text(yaml.safe_dump({"name": "t", "data": {"tokenizer": "char"}}))
    save_hf_checkpoint(str(root / "models" / "actor"), state, ARCH, value_head=False)
    raw = transformers.AutoModelForCausalLM.from_pretrained(root / "models" / "actor")
    prompt = torch.tensor([[CharTokenizer().bos_id] + CharTokenizer().encode("3+4=")])
    before = raw.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=8, do_sample=False)
    assert before.shape[1] - prompt.shape[1] == 8  # the saved model alone does not know its EOS

    export_model(root, tmp_path / "out")
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert (config["eos_token_id"], config["bos_token_id"], config["pad_token_id"]) == (eos, 1, 0)
    generation = json.loads((tmp_path / "out" / "generation_config.json").read_text())
    assert generation["eos_token_id"] == eos
    model = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    out = model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=8, do_sample=False)
    assert out[0, prompt.shape[1]:].tolist() == [eos]  # stops at EOS

    # a run that sampled with graph.generate.min_new_tokens=1: its export forbids the empty answer too
    (root / "config.yaml").write_text(yaml.safe_dump({"name": "t", "data": {"tokenizer": "char"},
                                                      "graph": {"generate": {"min_new_tokens": 1}}}))
    export_model(root, tmp_path / "out1")
    assert json.loads((tmp_path / "out1" / "generation_config.json").read_text())["min_new_tokens"] == 1
    model = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "out1")
    out = model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=8, do_sample=False)
    answer = out[0, prompt.shape[1]:].tolist()
    assert len(answer) == 2 and answer[0] != eos and answer[1] == eos  # one token, then EOS
