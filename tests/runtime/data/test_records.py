"""Datasets: JSONL reading with line/field errors, the arithmetic generator, batching."""

import json

import pytest

from runtime.data.records import DataError, batches, generate, load_records, read_jsonl, write_jsonl
from runtime.data.tokenizer import CharTokenizer, load_tokenizer


def test_arithmetic_is_correct_and_reproducible():
    recs = generate("arithmetic", "prompts_with_answers", 200, seed=3)
    assert recs == generate("arithmetic", "prompts_with_answers", 200, seed=3)
    assert recs != generate("arithmetic", "prompts_with_answers", 200, seed=4)
    for r in recs:
        assert r.prompt.endswith("=")
        assert eval(r.prompt[:-1]) == int(r.answer)  # noqa: S307 - digits and +/- only
        assert int(r.answer) >= 0


def test_arithmetic_1digit_has_one_digit_answers_and_covers_the_space():
    recs = generate("arithmetic_1digit", "prompts_with_answers", 2000, seed=3)
    for r in recs:
        assert eval(r.prompt[:-1]) == int(r.answer)  # noqa: S307 - digits and +/- only
        assert len(r.answer) == 1
    # 55 sums a+b <= 9 and 55 differences a-b >= 0 with one-digit operands
    assert len({r.prompt for r in recs}) == 110
    for r in generate("arithmetic_1digit", "preference", 200, seed=1):
        assert eval(r.prompt[:-1]) == int(r.chosen) != int(r.rejected)  # noqa: S307
        assert len(r.rejected) == 1 and int(r.rejected) >= 0


def test_arithmetic_preference_pairs_differ():
    for r in generate("arithmetic", "preference", 100, seed=1):
        assert eval(r.prompt[:-1]) == int(r.chosen)  # noqa: S307
        assert r.rejected != r.chosen and int(r.rejected) >= 0


@pytest.mark.parametrize("fmt", ["prompts_with_answers", "prompt_answer", "preference"])
def test_jsonl_round_trip(tmp_path, fmt):
    recs = generate("arithmetic", fmt, 20, seed=0)
    path = write_jsonl(recs, tmp_path / "d.jsonl", fmt)
    assert read_jsonl(path, fmt) == recs


def test_jsonl_errors_name_line_and_field(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text(json.dumps({"prompt": "1+1=", "answer": "2"}) + "\n\n" + json.dumps({"prompt": "2+2="}) + "\n")
    with pytest.raises(ValueError, match="d.jsonl:3: missing field 'answer'"):
        read_jsonl(p, "prompts_with_answers")
    p.write_text('{"prompt": 3}\n')
    with pytest.raises(ValueError, match="d.jsonl:1: field 'prompt' must be a string or a list of chat messages .*, got int"):
        read_jsonl(p, "prompts")
    p.write_text('{"prompt": \n')
    with pytest.raises(ValueError, match="d.jsonl:1: not valid JSON"):
        read_jsonl(p, "prompts")
    p.write_text("")
    with pytest.raises(ValueError, match="has no records"):
        read_jsonl(p, "prompts")
    with pytest.raises(DataError, match="does not exist"):
        read_jsonl(tmp_path / "none.jsonl", "prompts")
    with pytest.raises(ValueError, match="unknown dataset format 'prompt'"):
        read_jsonl(p, "prompt")
    with pytest.raises(ValueError, match="unknown data generator 'algebra'.*; known: arithmetic"):
        load_records(fmt="prompts", path=None, generator="algebra", num_records=4, seed=0)


def test_batches_cover_each_epoch_and_resume():
    it = batches(10, 3, seed=5)
    first_epoch = [next(it) for _ in range(3)]
    assert len({i for b in first_epoch for i in b}) == 9  # 3 full batches, no repeats
    resumed = batches(10, 3, seed=5, start=2)
    assert next(resumed) == first_epoch[2]
    with pytest.raises(ValueError, match="exceeds the 4 records"):
        next(batches(4, 8, seed=0))


def test_char_tokenizer():
    tok = CharTokenizer()
    ids = tok.encode("12+7=19")
    assert len(ids) == 7 and tok.decode(ids) == "12+7=19"
    assert tok.decode(ids[:3] + [tok.eos_id] + ids[3:]) == "12+"
    assert tok.encode("€")[0] == tok.unk_id
    assert tok.vocab_size == 52 and max(tok.encode("z")) < tok.vocab_size
    with pytest.raises(ValueError, match="the model's vocab_size is 16"):
        load_tokenizer("char", vocab_size=16)


def test_batch_at_is_the_stream_of_batches():
    from itertools import islice

    from runtime.data.records import batch_at

    stream = list(islice(batches(10, 3, seed=4), 7))
    assert [batch_at(10, 3, 4, step) for step in range(7)] == stream
    with pytest.raises(ValueError, match="batch of 11 records exceeds the 10 records"):
        batch_at(10, 11, 4, 0)
