"""Entry point of `realloc.bench.checkpoint` (what it measures, and its flags: --help)."""

from realloc.bench.checkpoint import main

if __name__ == "__main__":
    main()
