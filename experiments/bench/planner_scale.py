"""Entry point of `realloc.bench.planner_scale` (what it does, and its flags: --help)."""

from realloc.bench.planner_scale import main

if __name__ == "__main__":
    main()
