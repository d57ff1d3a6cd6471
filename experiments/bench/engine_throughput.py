"""Entry point of `realloc.bench.engine_throughput` (what it measures, and its flags: --help)."""

from realloc.bench.engine_throughput import main

if __name__ == "__main__":
    main()
