"""The data section of an experiment (`data:`): one settings type, read by the front door's
schema (Hydra merges YAML onto it) and by the workers (it travels in the Job).

These are OmegaConf structured-config schemas, so they are plain (not frozen) dataclasses:
OmegaConf cannot merge into a frozen one. Nothing mutates them after loading.
Pure Python: imported at load time without torch.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class PtxConfig:
    """The ptx dataset: SFT/pretraining text whose loss the PPO actor mixes in (graph.train.ptx_coef)."""

    format: str = "prompt_answer"
    """Record format: prompt_answer (loss on the answer; an empty prompt trains on the whole text)."""
    path: str | None = None
    """JSONL file of records; null uses the generator."""
    generator: str | None = "arithmetic"
    """Built-in generator, used when path is null."""
    num_records: int = 512
    """Records the generator makes."""
    seed: int = 2
    """Seed of the generator and of the ptx data order."""


@dataclass
class DataConfig:
    """Where the training data comes from and how long its sequences are."""

    format: str = "prompts_with_answers"
    """Record format: prompts, prompts_with_answers, prompt_answer or preference."""
    path: str | None = None
    """Dataset: a JSONL, JSON, CSV or parquet file or a `datasets` saved directory; null uses the generator."""
    prompt_key: str = "prompt"
    """Column holding the prompt: a string or a list of chat messages ({role, content})."""
    max_prompt_len: int | None = None
    """Longest prompt in tokens (after the chat template); longer ones are dropped or truncated (overlong_prompts)."""
    overlong_prompts: str = "drop"
    """What happens to prompts over max_prompt_len: drop (counted in the log) or truncate (keeps the last tokens)."""
    chat_template: bool = True
    """Put prompts through the tokenizer's chat template when it has one (false: plain BOS + text)."""
    eval_path: str | None = None
    """Validation dataset (same format and columns as path), scored every train.eval_every iterations."""
    generator: str | None = "arithmetic"
    """Built-in generator of a verifiable task, used when path is null."""
    num_records: int = 512
    """Records the generator makes."""
    prompt_len: int = 12
    """Expected prompt tokens."""
    response_len: int | None = None
    """Expected response tokens; null takes graph.generate.max_new_tokens."""
    tokenizer: str = "char"
    """Tokenizer: 'char' (the project's character tokenizer) or a HF tokenizer directory."""
    seed: int = 1
    """Seed of the generator and of the data order."""
    ptx: PtxConfig | None = None
    """Pretraining/SFT data mixed into the PPO actor loss (needs graph.train.ptx_coef > 0); each iteration reads as many ptx records as the actor trains on."""
