"""Dataset record formats: the fields each record needs and the data keys each provides.

One table for both layers: the graph reads `keys` (which data keys a dataset feeds), the
runtime reads `fields` (which string fields every record must have).
"""

from __future__ import annotations

from dataclasses import dataclass

from graph.errors import GraphError
from graph.registry import Registry


@dataclass(frozen=True, kw_only=True)
class DatasetFormat:
    """One record format."""

    name: str
    """Its name (`data.format`)."""
    keys: tuple[str, ...]
    """Data keys it provides to the graph."""
    fields: tuple[str, ...]
    """String fields every record must have."""
    doc: str
    """One line: what the records are for."""


DATASET_FORMATS: Registry[DatasetFormat] = Registry("dataset format", key="data.format", error=GraphError)
"""Record format name -> DatasetFormat."""

for _fmt in (
    DatasetFormat(name="prompts", keys=("prompts",), fields=("prompt",), doc="prompts to generate from"),
    DatasetFormat(name="prompts_with_answers", keys=("prompts", "answers"), fields=("prompt", "answer"),
                  doc="a verifiable task: prompts with their reference answers"),
    DatasetFormat(name="prompt_answer", keys=("prompt_answer",), fields=("prompt", "answer"),
                  doc="supervised fine-tuning: a prompt and the answer to learn"),
    DatasetFormat(name="preference", keys=("pairs",), fields=("prompt", "chosen", "rejected"),
                  doc="preference pairs for reward modelling and DPO"),
):
    DATASET_FORMATS.add(_fmt.name, _fmt)


PTX_KEY = "ptx"
"""Data key of the ptx dataset (data.ptx): sequences whose SFT loss the PPO actor mixes in."""
REHEARSAL_POOL_KEY = "rehearsal_pool"
"""Data key of the Selective Rehearsal pool (graph.train.rehearsal_path, rehearsal_rank=advantage):
every record of the pool, the same batch every iteration, built by every rank itself."""
PTX_FORMATS = ("prompt_answer",)
"""Record formats a ptx dataset may have (loss on the answer; an empty prompt gives a
pretraining loss on the whole text)."""


def dataset_format(fmt: str) -> DatasetFormat:
    """The format called `fmt`; GraphError naming the closest known one otherwise."""
    return DATASET_FORMATS.get(fmt)


def dataset_keys(fmt: str, *, ptx_format: str | None = None) -> tuple[str, ...]:
    """Keys a dataset of format `fmt` provides, plus `ptx` when a ptx dataset of format
    `ptx_format` is given; an unknown format lists the known ones."""
    if ptx_format is not None and ptx_format not in PTX_FORMATS:
        raise GraphError(f"data.ptx.format: {ptx_format!r} is not one of {', '.join(PTX_FORMATS)}")
    return dataset_format(fmt).keys + ((PTX_KEY,) if ptx_format is not None else ())
