"""Entry point of `realloc.bench.gpu_check` (what it does, and its flags: --help)."""

from realloc.bench.gpu_check import main

if __name__ == "__main__":
    main()
