"""Entry point of `realloc.bench.published_rlhf` (what it does, and its flags: --help)."""

from realloc.bench.published_rlhf import main

if __name__ == "__main__":
    main()
