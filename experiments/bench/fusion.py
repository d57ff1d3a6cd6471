"""Entry point of `realloc.bench.fusion` (what it measures, and its flags: --help)."""

from realloc.bench.fusion import main

if __name__ == "__main__":
    main()
