"""Running a plan: every rank walks the same global step order (SPMD).

Owns: starting one worker process per device (`launch`), the job a worker receives
(`job`), compiling a plan into per-rank steps (`program`), executing a parameter
reallocation's TransferPlan (`reallocation`), the engines a rank holds (`engines`), step
dispatch (`dispatch`), per-iteration metrics (`metrics`), checkpoint save/restore and
model export from a worker (`checkpointing`), and the worker that ties them together
(`worker`).

May import: every other `runtime` room, `graph`, torch. Never the planner's search or
the `realloc` front door: a plan arrives as plain layouts.
"""
