"""Entry point of `realloc.bench.planner_search` (what it measures, and its flags: --help)."""

from realloc.bench.planner_search import main

if __name__ == "__main__":
    main()
