"""HF checkpoints on disk: validate, read and write safetensors + config.json.

`validate_checkpoint` reads only `config.json` and the safetensors headers, so a missing
or mismatching checkpoint is reported before any process group or model is built.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from graph.errors import UserError
from graph.files import atomic_target, atomic_write
from graph.spec import ModelArch
from runtime.engine.convert import expected_hf_shapes

_WEIGHTS = "model.safetensors"
_INDEX = "model.safetensors.index.json"


def _weight_files(directory: Path) -> list[Path]:
    if (directory / _INDEX).is_file():
        index = json.loads((directory / _INDEX).read_text())
        return sorted({directory / f for f in index["weight_map"].values()})
    if (directory / _WEIGHTS).is_file():
        return [directory / _WEIGHTS]
    return sorted(directory.glob("*.safetensors"))


def _header_shapes(files: list[Path]) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}
    for f in files:
        with safe_open(str(f), framework="pt") as fh:
            for key in fh.keys():
                shapes[key] = tuple(fh.get_slice(key).get_shape())
    return shapes


def _strip_prefix(shapes: dict, arch: ModelArch) -> dict:
    """Accept GPT-2 checkpoints saved without the `transformer.` prefix (as HF's gpt2 is)."""
    if arch.family != "gpt2" or any(k.startswith("transformer.") for k in shapes):
        return shapes
    return {(k if k in ("lm_head.weight", "score.weight") else "transformer." + k): v
            for k, v in shapes.items()}


def hf_rope_theta(config: dict) -> float:
    """RoPE base of a HF config, top-level (transformers 4) or in rope_parameters (5)."""
    if "rope_theta" in config:
        return float(config["rope_theta"])
    return float((config.get("rope_parameters") or {}).get("rope_theta", 10000.0))


def validate_checkpoint(path: str, arch: ModelArch, *, value_head: bool) -> None:
    """Raise ValueError unless `path` is a HF checkpoint of exactly `arch`.

    A value-head model accepts a causal-LM checkpoint (its head is then initialised).
    """
    directory = Path(path)
    if not directory.is_dir():
        raise UserError(f"checkpoint {path!r} does not exist; give a HF checkpoint directory "
                         "(config.json + *.safetensors) or checkpoint: null for random init")
    config_file = directory / "config.json"
    if not config_file.is_file():
        raise UserError(f"checkpoint {path!r} has no config.json; save it with "
                         "save_pretrained or runtime.engine.hf_checkpoint.save_hf_checkpoint")
    found = ModelArch.from_config_file(config_file)
    if found.family != arch.family:
        raise UserError(f"checkpoint {path!r} is a {found.family} model but the spec says "
                         f"{arch.family}; fix the model's family or checkpoint")
    theta = hf_rope_theta(json.loads(config_file.read_text()))
    if arch.family != "gpt2" and abs(theta - arch.rope_theta) > 1e-6 * theta:
        raise UserError(f"checkpoint {path!r} has rope_theta {theta:g} but the spec says "
                         f"{arch.rope_theta:g}; set rope_theta: {theta:g} on the model")
    files = _weight_files(directory)
    if not files:
        raise UserError(f"checkpoint {path!r} holds no *.safetensors weights")
    shapes = _strip_prefix(_header_shapes(files), arch)
    expected = expected_hf_shapes(arch, value_head=value_head)
    if value_head and "score.weight" not in shapes:
        expected.pop("score.weight")
    for name, shape in expected.items():
        if name not in shapes:
            raise UserError(f"checkpoint {path!r} lacks tensor {name!r}; it does not match the "
                             f"{arch.family} architecture of the spec")
        if shapes[name] != shape:
            raise UserError(f"checkpoint {path!r}: tensor {name!r} has shape {list(shapes[name])}, "
                             f"the spec's architecture needs {list(shape)}; fix the spec's sizes")


def read_hf_checkpoint(path: str, arch: ModelArch) -> dict[str, torch.Tensor]:
    """Every tensor of a HF checkpoint (fp32), with GPT-2's `transformer.` prefix restored."""
    out: dict[str, torch.Tensor] = {}
    for f in _weight_files(Path(path)):
        with safe_open(str(f), framework="pt") as fh:
            for key in fh.keys():
                out[key] = fh.get_tensor(key)
    out = _strip_prefix(out, arch)
    return {k: v.float() for k, v in out.items()}


def save_hf_checkpoint(path: str, state: dict[str, torch.Tensor], arch: ModelArch, *,
                       value_head: bool, dtype: torch.dtype = torch.float32) -> None:
    """Write `state` (HF names) as `model.safetensors` + `config.json` transformers loads.

    A value-head model is written as `*ForSequenceClassification` with one label.
    """
    directory = Path(path)
    directory.mkdir(parents=True, exist_ok=True)
    config = arch.to_hf_config()
    config["torch_dtype"] = str(dtype).removeprefix("torch.")
    if value_head:
        config["architectures"] = [config["architectures"][0].replace(
            "ForCausalLM", "ForSequenceClassification").replace("LMHeadModel", "ForSequenceClassification")]
        config["num_labels"] = 1
        config["id2label"] = {"0": "LABEL_0"}
        config["label2id"] = {"LABEL_0": 0}
        config.setdefault("pad_token_id", 0)
    tensors = {k: v.detach().to(dtype).contiguous().clone() for k, v in state.items()}
    with atomic_target(directory / _WEIGHTS) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt"})
    atomic_write(directory / "config.json", json.dumps(config, indent=2, sort_keys=True))
