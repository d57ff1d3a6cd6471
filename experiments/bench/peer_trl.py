"""Entry point of `realloc.bench.peer_trl` (what it measures, and its flags: --help)."""

from realloc.bench.peer_trl import main

if __name__ == "__main__":
    main()
