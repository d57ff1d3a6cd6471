"""Entry point of `realloc.bench.planner_paper` (what it measures, and its flags: --help)."""

from realloc.bench.planner_paper import main

if __name__ == "__main__":
    main()
