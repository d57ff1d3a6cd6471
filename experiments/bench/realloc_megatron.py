"""Entry point of `realloc.bench.realloc_megatron` (what it measures, and its flags: --help)."""

from realloc.bench.realloc_megatron import main

if __name__ == "__main__":
    main()
