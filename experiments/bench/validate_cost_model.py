"""Entry point of `realloc.bench.validate_cost_model` (what it measures, and its flags: --help)."""

from realloc.bench.validate_cost_model import main

if __name__ == "__main__":
    main()
