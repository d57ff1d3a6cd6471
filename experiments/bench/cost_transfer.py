"""Entry point of `realloc.bench.cost_transfer` (what it measures, and its flags: --help)."""

from realloc.bench.cost_transfer import main

if __name__ == "__main__":
    main()
