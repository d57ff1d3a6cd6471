"""Entry point of `realloc.bench.smollm2_words` (what it does, and its flags: --help)."""

from realloc.bench.smollm2_words import main

if __name__ == "__main__":
    raise SystemExit(main())
