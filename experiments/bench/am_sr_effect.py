"""Entry point of `realloc.bench.am_sr_effect` (what it does, and its flags: --help)."""

from realloc.bench.am_sr_effect import main

if __name__ == "__main__":
    main()
