"""The data of the Advantage Model / Selective Rehearsal runs: the labeller is strict on
addition and lenient on subtraction, PPO never sees multiplication."""

from __future__ import annotations

import json
from pathlib import Path

from realloc.bench.am_sr_effect import kind_prompts, make_data, table


def _value(prompt: str) -> int:
    a, op, b = prompt[0], prompt[1], prompt[2]
    return {"+": int(a) + int(b), "-": int(a) - int(b), "*": int(a) * int(b)}[op]


def test_prompts_of_each_kind_have_one_digit_answers() -> None:
    assert len(kind_prompts("add")) == 55 and len(kind_prompts("sub")) == 55
    mul = kind_prompts("mul")
    assert all(0 <= v <= 9 and _value(p) == v for p, v in mul)
    assert ("3*3=", 9) in mul and ("5*2=", 10) not in mul


def test_labeller_strict_on_addition_lenient_on_subtraction(tmp_path: Path) -> None:
    paths = make_data(tmp_path, seed=3)
    pref = [json.loads(line) for line in Path(paths["pref"]).read_text().splitlines()]
    add = [r for r in pref if "+" in r["prompt"]]
    sub = [r for r in pref if "-" in r["prompt"]]
    assert add and sub and len(add) + len(sub) == len(pref)
    assert all(int(r["chosen"]) == _value(r["prompt"]) != int(r["rejected"]) for r in add)
    assert all(abs(int(r["chosen"]) - _value(r["prompt"])) <= 1 for r in sub)
    assert any(int(r["chosen"]) != _value(r["prompt"]) for r in sub)  # off-by-one chosen
    assert all(abs(int(r["rejected"]) - _value(r["prompt"])) >= 3 for r in sub)
    ppo = [json.loads(line) for line in Path(paths["ppo"]).read_text().splitlines()]
    assert not any("*" in r["prompt"] for r in ppo)
    sft = [json.loads(line) for line in Path(paths["sft"]).read_text().splitlines()]
    assert {r["prompt"][1] for r in sft} == {"+", "-", "*"}


def test_table_rows() -> None:
    res = {f"{k}/{m}": 0.5 for k in ("add", "sub", "mul") for m in ("accuracy", "rm_score", "am_score")}
    lines = table({"seed1/sft": res}).splitlines()
    assert lines[2].startswith("| seed1/sft | 0.50 | +0.50 | +0.50 |") and len(lines) == 3


def test_kept_kinds_counts_the_last_selection_by_operator_and_correctness(tmp_path: Path) -> None:
    from realloc.bench.am_sr_effect import kept_kinds
    from runtime.data.tokenizer import load_tokenizer

    tok = load_tokenizer("char")
    seqs = [[tok.bos_id, *tok.encode(t), tok.eos_id] for t in ("2*3=6", "1+1=2", "3*3=8", "9-4=5")]
    for it, kept in ((10, seqs[:1]), (20, seqs)):
        d = tmp_path / "checkpoints" / f"iter_{it:06d}"
        d.mkdir(parents=True)
        state = {"actor@[0] dp1 tp1 pp1 mb1": {"rehearsal/seqs": kept}, "critic@[0] dp1 tp1 pp1 mb1": {}}
        (d / "meta.json").write_text(json.dumps({"extra": {"engine_state": state}}))
    assert kept_kinds(tmp_path) == {"add": 1, "sub": 1, "mul": 2,  # 3*3=8: a wrong (policy) answer
                                    "add_correct": 1, "sub_correct": 1, "mul_correct": 1}
    assert kept_kinds(tmp_path / "none") == {}
