"""Prompts as ids: the chat template (on, off, absent) and data.max_prompt_len (drop, truncate)."""

from __future__ import annotations

import pytest

from runtime.data.prompts import encode_prompt, fit_prompts
from runtime.data.records import DataError, Record
from runtime.data.tokenizer import CharTokenizer, HFTokenizer, char_hf_tokenizer

TEMPLATE = ("{% for m in messages %}{{ m['role'] }}:{{ m['content'] }};{% endfor %}"
            "{% if add_generation_prompt %}assistant:{% endif %}")


@pytest.fixture(scope="module")
def chat_tok(tmp_path_factory):
    path = tmp_path_factory.mktemp("tok")
    hf = char_hf_tokenizer()
    hf.chat_template = TEMPLATE
    hf.save_pretrained(str(path))
    return HFTokenizer(path)


def test_chat_template_applies_to_strings_and_messages(chat_tok):
    char = CharTokenizer()
    # the template rendered by hand, then the character ids
    assert encode_prompt(chat_tok, "2+3=", chat_template=True) == char.encode("user:2+3=;assistant:")
    msgs = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "2+3="}]
    assert encode_prompt(chat_tok, msgs, chat_template=True) == char.encode("system:be brief;user:2+3=;assistant:")
    # switched off: BOS + the text, as before
    assert encode_prompt(chat_tok, "2+3=", chat_template=False) == [char.bos_id] + char.encode("2+3=")


def test_messages_need_a_template():
    with pytest.raises(DataError, match="list of chat messages but the tokenizer has no chat template"):
        encode_prompt(CharTokenizer(), [{"role": "user", "content": "hi"}], chat_template=True)
    assert encode_prompt(CharTokenizer(), "1+1=", chat_template=True) == [1] + CharTokenizer().encode("1+1=")


def test_max_prompt_len_drops_or_truncates():
    tok = CharTokenizer()
    records = [Record(index=i, prompt=p) for i, p in enumerate(["1+1=", "12+13=", "3="])]  # 5, 7, 3 ids with BOS
    kept, dropped = fit_prompts(records, tok, chat_template=True, max_len=5)
    assert dropped == 1 and [r.index for r in kept] == [0, 2]
    assert kept[0].prompt_ids == tuple([tok.bos_id] + tok.encode("1+1="))
    kept, dropped = fit_prompts(records, tok, chat_template=True, max_len=5, overlong="truncate")
    assert dropped == 0
    assert kept[1].prompt_ids == tuple(tok.encode("2+13="))  # the last 5 ids: the question's end
    with pytest.raises(DataError, match="overlong_prompts: 'cut' is not one of drop, truncate"):
        fit_prompts(records, tok, chat_template=True, max_len=5, overlong="cut")
