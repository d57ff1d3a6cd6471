"""Entry point of `realloc.bench.gpu_components` (what it does, and its flags: --help)."""

from realloc.bench.gpu_components import main

if __name__ == "__main__":
    main()
