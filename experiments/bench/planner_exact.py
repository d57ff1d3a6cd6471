"""Entry point of `realloc.bench.planner_exact` (what it measures, and its flags: --help)."""

from realloc.bench.planner_exact import main

if __name__ == "__main__":
    main()
