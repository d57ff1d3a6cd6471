"""Dataset files other than JSONL, read with the `datasets` library: JSON, CSV, parquet and
a directory written by `Dataset.save_to_disk` (a `DatasetDict` gives its `train` split).

Pure Python (no torch): the front door reads the dataset at load time to check it. Each read
uses a private, temporary cache folder, so worker processes reading the same file at once
never share a cache lock, and nothing is left in the user's HF cache.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from runtime.data.records import DataError

BUILDERS = {".json": "from_json", ".csv": "from_csv", ".parquet": "from_parquet", ".pq": "from_parquet"}
"""File suffix -> the `datasets.Dataset` constructor that reads it."""


class DatasetFileError(DataError):
    """A dataset file or directory the `datasets` library cannot read."""


def read_rows(path: Path) -> list[tuple[str, Any]]:
    """The rows of a dataset file or saved directory as (where, row dict), where = 'FILE: row N'
    (1-based)."""
    import datasets

    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    try:
        if path.is_dir():
            ds = datasets.load_from_disk(str(path), keep_in_memory=True)
            if isinstance(ds, datasets.DatasetDict):
                if "train" not in ds:
                    raise DatasetFileError(f"dataset directory {str(path)!r} has splits {sorted(ds)} but no 'train' "
                                           "split; save the split to train on alone, or name it train")
                ds = ds["train"]
        else:
            builder = BUILDERS.get(path.suffix.lower())
            if builder is None:
                raise DatasetFileError(f"dataset {str(path)!r}: unknown file type {path.suffix!r}; give a .jsonl, "
                                       f".json, .csv or .parquet file or a `datasets` saved directory")
            with tempfile.TemporaryDirectory(prefix="realloc-datasets-") as cache:
                ds = getattr(datasets.Dataset, builder)(str(path), keep_in_memory=True, cache_dir=cache)
    except DatasetFileError:
        raise
    except Exception as exc:  # noqa: BLE001 - the library's many parse errors become one line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DatasetFileError(f"dataset {str(path)!r} cannot be read ({type(exc).__name__}: {first})") from None
    return [(f"{path}: row {i + 1}", row) for i, row in enumerate(ds.to_list())]
