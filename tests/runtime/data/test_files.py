"""Dataset files: JSONL, JSON, CSV, parquet and `datasets` directories give the same records;
the prompt column is configurable, holds strings or chat messages, and the other columns travel
with each record; bad files and rows are named."""

from __future__ import annotations

import json

import pytest

from runtime.data.records import DataError, read_dataset

ROWS = [{"question": "2+3=", "answer": "5", "level": 1},
        {"question": "7-4=", "answer": "3", "level": 2},
        {"question": "1+1=", "answer": "2", "level": 1}]


def _write_all(tmp_path):
    import datasets
    import pandas as pd

    paths = {}
    jsonl = tmp_path / "d.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    paths["jsonl"] = jsonl
    (tmp_path / "d.json").write_text(json.dumps(ROWS))
    paths["json"] = tmp_path / "d.json"
    pd.DataFrame(ROWS).to_csv(tmp_path / "d.csv", index=False)
    paths["csv"] = tmp_path / "d.csv"
    pd.DataFrame(ROWS).to_parquet(tmp_path / "d.parquet")
    paths["parquet"] = tmp_path / "d.parquet"
    datasets.Dataset.from_list(ROWS).save_to_disk(str(tmp_path / "saved"))
    paths["saved"] = tmp_path / "saved"
    datasets.DatasetDict({"train": datasets.Dataset.from_list(ROWS)}).save_to_disk(str(tmp_path / "dict"))
    paths["dict"] = tmp_path / "dict"
    return paths


def test_every_file_type_gives_the_same_records_with_their_columns(tmp_path):
    paths = _write_all(tmp_path)
    for kind, path in paths.items():
        records = read_dataset(path, "prompts_with_answers", prompt_key="question")
        assert [r.prompt for r in records] == [r["question"] for r in ROWS], kind
        assert [r.answer for r in records] == ["5", "3", "2"], kind  # CSV's numbers become strings
        assert [r.columns["level"] for r in records] == [1, 2, 1], kind
        assert "question" not in records[0].columns and "answer" in records[0].columns


def test_chat_message_prompts(tmp_path):
    import pandas as pd

    rows = [{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+3?"}],
             "answer": "5"}]
    pd.DataFrame(rows).to_parquet(tmp_path / "c.parquet")
    (r,) = read_dataset(tmp_path / "c.parquet", "prompts", prompt_key="messages")
    assert r.prompt == rows[0]["messages"] and r.columns == {"answer": "5"}


def test_bad_files_and_rows_name_file_row_and_field(tmp_path):
    import pandas as pd

    pd.DataFrame([{"prompt": "a"}, {"prompt": None}]).to_parquet(tmp_path / "p.parquet")
    with pytest.raises(DataError, match=r"p.parquet: row 2: missing field 'prompt'"):
        read_dataset(tmp_path / "p.parquet", "prompts")
    with pytest.raises(DataError, match=r"row 1: missing field 'question' .*set data.prompt_key"):
        read_dataset(tmp_path / "p.parquet", "prompts", prompt_key="question")
    pd.DataFrame([{"prompt": "a"}, {"prompt": "b"}]).assign(prompt=[1, 2]).to_csv(tmp_path / "n.csv", index=False)
    with pytest.raises(DataError, match=r"n.csv: row 1: field 'prompt' must be a string or a list of chat"):
        read_dataset(tmp_path / "n.csv", "prompts")
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(DataError, match=r"unknown file type '.txt'"):
        read_dataset(tmp_path / "x.txt", "prompts")
    (tmp_path / "bad.parquet").write_text("not parquet")
    with pytest.raises(DataError, match=r"bad.parquet' cannot be read"):
        read_dataset(tmp_path / "bad.parquet", "prompts")
    with pytest.raises(DataError, match=r"does not exist"):
        read_dataset(tmp_path / "none.parquet", "prompts")
