"""`realloc export` and `realloc chat`: a trained model as a plain HF checkpoint, and talking to it.

A run saves every trained model at its end as `RUN_DIR/models/ROLE/` (weights and
config). Export copies one of them to a directory of its own together with the tokenizer
the run used -- the project's character tokenizer is written as a HF fast tokenizer -- and
a small `realloc_export.json` saying where it came from and how prompts were encoded in
training, so `transformers.AutoModelForCausalLM` / `AutoTokenizer` load the result and
`realloc chat` prompts it the way it was trained.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from graph.errors import UserError
from runtime.data.tokenizer import char_hf_tokenizer


class ExportError(UserError):
    """A run or model directory that cannot be exported or chatted with, and the fix."""


EXPORT_INFO = "realloc_export.json"
PROMPT_FORMATS = ("auto", "bos", "chat")


def _run_models(run_dir: Path) -> list[str]:
    models = run_dir / "models"
    return sorted(p.name for p in models.iterdir() if (p / "config.json").is_file()) if models.is_dir() else []


def _pick_role(run_dir: Path, role: str | None) -> str:
    roles = _run_models(run_dir)
    if not roles:
        raise ExportError(f"run directory {str(run_dir)!r} holds no saved models (models/ROLE/); a run saves "
                         "its trained models when it finishes: resume it with train.resume=true or run it again")
    if role is None:
        if "actor" in roles:
            return "actor"
        if len(roles) == 1:
            return roles[0]
        raise ExportError(f"run directory {str(run_dir)!r} holds several models ({', '.join(roles)}); "
                         "choose one with --model")
    if role not in roles:
        raise ExportError(f"run directory {str(run_dir)!r} has no saved model {role!r}; saved: {', '.join(roles)}")
    return role


def _run_config(run_dir: Path) -> dict[str, Any]:
    config = run_dir / "config.yaml"
    if not config.is_file():
        raise ExportError(f"{str(run_dir)!r} is not a run directory (no config.yaml); give the train.run_dir "
                         "of a finished `realloc run`")
    return yaml.safe_load(config.read_text()) or {}


def _save_tokenizer(name: str, out: Path) -> None:
    if name == "char":
        char_hf_tokenizer().save_pretrained(str(out))
        return
    from transformers import AutoTokenizer

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if not Path(name).is_dir():
        raise ExportError(f"the run's tokenizer {name!r} is gone; export needs the tokenizer directory "
                         "the run used (data.tokenizer)")
    AutoTokenizer.from_pretrained(name, local_files_only=True).save_pretrained(str(out))


def _write_special_tokens(model_dir: Path, min_new_tokens: int = 0) -> bool:
    """Write the tokenizer's EOS/BOS/PAD ids into config.json and a generation_config.json, so
    transformers' `generate` stops where realloc stops (at EOS) with no arguments, and forbids
    EOS before `min_new_tokens` as the run's generation did (a policy trained that way never
    learnt to avoid an empty answer); returns whether the tokenizer has a chat template."""
    from transformers import AutoTokenizer, GenerationConfig

    tok = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
    eos = tok.eos_token_id
    ids = {"eos_token_id": eos, "bos_token_id": tok.bos_token_id if tok.bos_token_id is not None else eos,
           "pad_token_id": tok.pad_token_id if tok.pad_token_id is not None else eos}
    config_file = model_dir / "config.json"
    config = json.loads(config_file.read_text())
    config.update(ids)
    config_file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    GenerationConfig(**ids, **({"min_new_tokens": min_new_tokens} if min_new_tokens else {})).save_pretrained(
        str(model_dir))
    return bool(getattr(tok, "chat_template", None))


@dataclass(frozen=True, kw_only=True)
class Exported:
    """What `export_model` wrote."""

    out: Path
    role: str
    files: tuple[str, ...]


def _checkpoint_roles(path: Path) -> list[str]:
    from runtime.rundir.checkpoints import CheckpointMeta

    return sorted(CheckpointMeta.from_json((path / "meta.json").read_text()).extra.get("models", {}))


def _pick_checkpoint_role(path: Path, role: str | None) -> str:
    roles = _checkpoint_roles(path)
    if role is None:
        if "actor" in roles or len(roles) == 1:
            return "actor" if "actor" in roles else roles[0]
        raise ExportError(f"checkpoint {path.name} holds several models ({', '.join(roles)}); choose one with --model")
    if role not in roles:
        raise ExportError(f"checkpoint {path.name} holds no model {role!r}; it holds: {', '.join(roles) or 'none'}")
    return role


def find_checkpoint(run_dir: Path, iteration: int) -> Path:
    """The verified checkpoint of `iteration` in a run directory; ExportError naming those there."""
    from runtime.rundir.checkpoints import checkpoint_name, list_checkpoints, verify

    path = run_dir / "checkpoints" / checkpoint_name(iteration)
    if not path.is_dir():
        usable = [str(c.iteration) for c in list_checkpoints(run_dir / "checkpoints", verify_hashes=False)
                  if c.status == "ok"]
        raise ExportError(f"--checkpoint {iteration}: {str(run_dir)!r} has no checkpoint of iteration {iteration}; "
                         f"it has: {', '.join(usable) or 'none'} (see `realloc checkpoints {run_dir}`)")
    try:
        verify(path)
    except ValueError as exc:
        raise ExportError(f"--checkpoint {iteration}: checkpoint {path.name} is unusable ({exc}); export "
                         "another one (see `realloc checkpoints RUN_DIR`)") from None
    return path


def _write_from_checkpoint(run_dir: Path, path: Path, role: str, staging: Path) -> None:
    """Model `role` of a training checkpoint as a HF checkpoint in `staging` (in this process)."""
    from realloc.experiment import load_experiment
    from runtime.engine import convert
    from runtime.engine.hf_checkpoint import save_hf_checkpoint
    from runtime.rundir.rank_state import read_global

    spec = load_experiment(str(run_dir / "config.yaml")).graph.models[role]
    assert spec.arch is not None
    mg = read_global(path, f"{role}/weights/")
    if spec.lora is not None:
        from runtime.engine.lora import merge_lora, save_adapters

        save_adapters(str(staging), mg, spec.lora)
        mg = merge_lora(mg, spec.lora)
    hf = convert.megatron_to_hf(mg, spec.arch, value_head=spec.value_head)
    save_hf_checkpoint(str(staging), hf, spec.arch, value_head=spec.value_head)


def export_model(run_dir: str | Path, out: str | Path, *, role: str | None = None,
                 force: bool = False, checkpoint: int | None = None) -> Exported:
    """Write model `role` of a finished run (or of its training checkpoint `checkpoint`, by
    iteration), with its tokenizer, as a HF directory `out`.

    The directory is assembled beside `out` and renamed into place, so an existing `out`
    is replaced (with `force`) only once the new one is complete.
    """
    run_dir, out = Path(run_dir), Path(out)
    if not run_dir.is_dir():
        raise ExportError(f"run directory {str(run_dir)!r} does not exist; give the train.run_dir of a run")
    config = _run_config(run_dir)
    ckpt = find_checkpoint(run_dir, checkpoint) if checkpoint is not None else None
    role = _pick_checkpoint_role(ckpt, role) if ckpt is not None else _pick_role(run_dir, role)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not force:
        raise ExportError(f"export target {str(out)!r} already exists and is not empty; choose another --out "
                         "or pass --force to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        if ckpt is not None:
            _write_from_checkpoint(run_dir, ckpt, role, staging)
        else:
            for item in (run_dir / "models" / role).iterdir():
                if item.is_file():
                    shutil.copy2(item, staging / item.name)
        data = config.get("data") or {}
        tokenizer = str(data.get("tokenizer", "char"))
        _save_tokenizer(tokenizer, staging)
        # the actor samples as its run's generate calls did (graph.generate.min_new_tokens)
        generate = ((config.get("graph") or {}).get("generate") or {}) if role == "actor" else {}
        min_new = int(generate.get("min_new_tokens") or 0)
        has_template = _write_special_tokens(staging, min_new)
        # prompts went through the chat template in training when the tokenizer has one and
        # data.chat_template was on (runtime.data.prompts)
        fmt = "chat" if has_template and data.get("chat_template", True) else "bos"
        info = {"run_dir": str(run_dir.resolve()), "experiment": config.get("name"), "model": role,
                "checkpoint": ckpt.name if ckpt is not None else None,
                "tokenizer": tokenizer, "prompt_format": fmt,
                "value_head": bool(((config.get("models") or {}).get(role) or {}).get("value_head", False))}
        (staging / EXPORT_INFO).write_text(json.dumps(info, indent=2) + "\n")
        old = None
        if out.exists():  # --force: the old export goes only once the new one is in place
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.", dir=out.parent))
            os.replace(out, old / out.name)
        os.replace(staging, out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return Exported(out=out, role=role, files=tuple(sorted(p.name for p in out.iterdir())))


# --------------------------------------------------------------------------- chat


@dataclass(frozen=True, kw_only=True)
class ChatSettings:
    """Sampling settings of `realloc chat`."""

    max_new_tokens: int = 64
    temperature: float = 0.7
    top_p: float = 1.0
    greedy: bool = False
    seed: int = 0
    prompt_format: str = "auto"

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ExportError(f"--max-new-tokens {self.max_new_tokens}: give at least 1")
        if not self.greedy and self.temperature <= 0:
            raise ExportError(f"--temperature {self.temperature}: give a positive value, or --greedy")
        if not 0 < self.top_p <= 1:
            raise ExportError(f"--top-p {self.top_p}: give a value in (0, 1]")
        if self.prompt_format not in PROMPT_FORMATS:
            raise ExportError(f"--format {self.prompt_format!r}: choose one of {', '.join(PROMPT_FORMATS)}")


def resolve_model_dir(path: str | Path) -> Path:
    """A HF model directory, or a run directory (its actor, or its only saved model)."""
    p = Path(path)
    if not p.is_dir():
        raise ExportError(f"model directory {str(p)!r} does not exist; give an exported model "
                         "(realloc export RUN_DIR --out DIR) or a run directory")
    if (p / "config.json").is_file():
        return p
    if (p / "config.yaml").is_file():
        return p / "models" / _pick_role(p, None)
    raise ExportError(f"{str(p)!r} is neither a HF model directory (config.json) nor a run directory (config.yaml)")


class Chat:
    """A loaded causal LM and its tokenizer, answering one prompt at a time."""

    def __init__(self, path: str | Path, settings: ChatSettings) -> None:
        import torch
        import transformers

        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        transformers.logging.set_verbosity_error()
        transformers.logging.disable_progress_bar()
        self.dir = resolve_model_dir(path)
        self.settings = settings
        config = json.loads((self.dir / "config.json").read_text())
        if any("ForSequenceClassification" in a for a in config.get("architectures", [])):
            raise ExportError(f"{str(self.dir)!r} is a value-head model (a critic or reward model) and cannot "
                             "chat; export the actor instead")
        info_file = self.dir / EXPORT_INFO
        info = json.loads(info_file.read_text()) if info_file.is_file() else {}
        run_config = self.dir.parent.parent / "config.yaml"
        if (self.dir / "tokenizer_config.json").is_file():
            self.tok = transformers.AutoTokenizer.from_pretrained(str(self.dir), local_files_only=True)
        elif run_config.is_file():  # a model inside a run directory: the run's tokenizer
            name = str((_run_config(self.dir.parent.parent).get("data") or {}).get("tokenizer", "char"))
            self.tok = char_hf_tokenizer() if name == "char" else transformers.AutoTokenizer.from_pretrained(
                name, local_files_only=True)
            info.setdefault("prompt_format", "bos")
        else:
            raise ExportError(f"{str(self.dir)!r} has no tokenizer files; export the model with `realloc export`")
        self.model = transformers.AutoModelForCausalLM.from_pretrained(str(self.dir)).eval()
        fmt = settings.prompt_format
        if fmt == "auto":  # how the model was trained, else the tokenizer's chat template
            fmt = info.get("prompt_format") or ("chat" if getattr(self.tok, "chat_template", None) else "bos")
        self.format = fmt
        self.generator = torch.Generator().manual_seed(settings.seed)

    def encode(self, prompt: str) -> list[int]:
        """Prompt ids in the chosen format: `bos` + text (as realloc trains) or the chat template."""
        if self.format == "chat":
            if not getattr(self.tok, "chat_template", None):
                raise ExportError("--format chat: this tokenizer has no chat template; use --format bos")
            enc = self.tok.apply_chat_template([{"role": "user", "content": prompt}],
                                               add_generation_prompt=True, tokenize=True)
            return list(enc["input_ids"]) if hasattr(enc, "keys") else list(enc)
        bos = self.tok.bos_token_id if self.tok.bos_token_id is not None else self.tok.eos_token_id
        return [bos] + list(self.tok.encode(prompt, add_special_tokens=False))

    def reply(self, prompt: str) -> str:
        """The model's answer to `prompt` (stops at EOS or max_new_tokens)."""
        import torch

        s = self.settings
        ids = torch.tensor([self.encode(prompt)])
        torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=self.generator)))
        kwargs: dict[str, Any] = {"do_sample": False} if s.greedy else {
            "do_sample": True, "temperature": s.temperature, "top_p": s.top_p, "top_k": 0}
        with torch.no_grad():
            out = self.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=s.max_new_tokens,
                                      eos_token_id=self.tok.eos_token_id, pad_token_id=self.tok.pad_token_id
                                      if self.tok.pad_token_id is not None else self.tok.eos_token_id, **kwargs)
        return self.tok.decode(out[0, ids.shape[1]:].tolist(), skip_special_tokens=True).strip()


def chat_loop(chat: Chat, lines: Iterable[str], write: Callable[[str], None]) -> int:
    """Answer each line until EOF or `/exit`; returns the number of answers."""
    answered = 0
    for line in lines:
        text = line.strip()
        if text in ("/exit", "/quit"):
            break
        if not text:
            continue
        write(chat.reply(text))
        answered += 1
    return answered


def interactive_lines(prompt: str = "you> ") -> Iterable[str]:
    """Lines typed at a terminal (or read from a pipe) until EOF."""
    while True:
        try:
            yield input(prompt) if sys.stdin.isatty() else next(sys.stdin)
        except (EOFError, StopIteration):
            return
