"""Entry point of `realloc.bench.search_units` (what it does, and its flags: --help)."""

from realloc.bench.search_units import main

if __name__ == "__main__":
    main()
