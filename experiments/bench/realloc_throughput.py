"""Entry point of `realloc.bench.realloc_throughput` (what it measures, and its flags: --help)."""

from realloc.bench.realloc_throughput import main

if __name__ == "__main__":
    main()
