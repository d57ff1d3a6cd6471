"""Make the shipped word-problem dataset: short arithmetic stories whose answer is a whole
number, with the required answer format ("The answer is N.") stated in a system message.

    python experiments/tasks/make_word_problems.py   # rewrites word_problems{,_valid}.jsonl

Each row: `prompt` (a list of chat messages: the format instruction, then the problem),
`answer` (the number, as text) and `operation` (add, subtract, multiply). Deterministic
(seeded), so the shipped files are exactly what this script writes.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

SYSTEM = "Solve the problem in one short sentence, then end your reply with 'The answer is N.' where N is the number."
NAMES = ("Ana", "Ben", "Chloe", "Dev", "Emma", "Farid", "Grace", "Hugo", "Ines", "Jon")
THINGS = ("apples", "books", "coins", "stickers", "marbles", "pencils", "cards", "shells")


def problem(rng: random.Random) -> tuple[str, int, str]:
    """(text, answer, operation) of one problem."""
    name, thing = rng.choice(NAMES), rng.choice(THINGS)
    kind = rng.choice(("add", "subtract", "multiply"))
    if kind == "add":
        a, b = rng.randint(2, 20), rng.randint(2, 20)
        return f"{name} has {a} {thing} and gets {b} more. How many {thing} does {name} have now?", a + b, kind
    if kind == "subtract":
        a = rng.randint(5, 30)
        b = rng.randint(1, a - 1)
        return f"{name} has {a} {thing} and gives away {b}. How many {thing} are left?", a - b, kind
    a, b = rng.randint(2, 9), rng.randint(2, 6)
    return f"{name} has {a} bags with {b} {thing} in each bag. How many {thing} are there in all?", a * b, kind


def rows(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        text, answer, kind = problem(rng)
        out.append({"prompt": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": text}],
                    "answer": str(answer), "operation": kind})
    return out


def main() -> None:
    here = Path(__file__).resolve().parent
    for name, n, seed in (("word_problems.jsonl", 512, 1), ("word_problems_valid.jsonl", 32, 2)):
        with (here / name).open("w", encoding="utf-8") as fh:
            for row in rows(n, seed):
                fh.write(json.dumps(row) + "\n")
        print(f"wrote {here / name} ({n} rows)")


if __name__ == "__main__":
    main()
