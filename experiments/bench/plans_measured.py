"""Entry point of `realloc.bench.plans_measured` (what it measures, and its flags: --help)."""

from realloc.bench.plans_measured import main

if __name__ == "__main__":
    main()
