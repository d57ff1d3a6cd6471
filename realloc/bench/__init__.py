"""The benchmarks: `realloc bench` (the suite and its report) and one module per benchmark.

`suite` runs the sections and writes the report; each section's measurement lives in its
own module (`plans_measured`, `planner_paper`, `planner_exact`, `realloc_throughput`,
`peer_trl`, `validate_cost_model`), next to the benchmarks outside the suite
(`planner_search`, `realloc_megatron`, `cost_transfer`, `engine_throughput`, `am_sr_effect`:
the Advantage Model / Selective Rehearsal runs behind the README's numbers). Every
module with a `main()` has a thin entry point in `experiments/bench/` of a source
checkout, and runs as `python -m realloc.bench.NAME` from an installed wheel.
`synthetic` holds the closed-form costs and random small instances the planner
benchmarks (and tests) use.
"""
