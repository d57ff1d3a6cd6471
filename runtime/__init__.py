"""Runtime: executes a Plan on Megatron-core, one process per device (gloo on CPU, NCCL on GPUs).

Rooms, one concern each (each package's docstring says what it owns and may import):

| package | owns |
|---|---|
| `runtime.engine` | one model in one layout on this rank: platform patches, process groups, the Megatron model, HF <-> Megatron conversion, LoRA, micro-batch schedules and the optimizer, EMA |
| `runtime.interfaces` | what a call does (generate, inference, train) and the RL math they use |
| `runtime.rewards` | reward functions that are not models (rules) |
| `runtime.data` | samples: dataset records, tokenizers, the batch type, and how graph keys bind to batches |
| `runtime.execution` | running a plan: worker launch, the per-rank step program, reallocation, the worker and its parts |
| `runtime.rundir` | what a run leaves on disk: the run directory, metrics, checkpoints |
| `runtime.profiling` | `realloc profile`: measuring this machine for the cost model |

Imports flow downwards: `data` and `rewards` import no other room; `engine` imports `data`
(the batch type); `interfaces` imports `engine`, `data` and `rewards`; `rundir` imports
`engine`; `execution` imports everything below it; nothing in
`runtime` imports the planner's search or the `realloc` front door (plans arrive as plain
data). The runtime may import `graph` (the plain data model, `graph.placement` included),
`cost_model` (profiling fits it), torch, megatron-core and transformers.

Entry points most callers need:

* `runtime.engine.platform.apply_platform_patches()` once per process (idempotent; a no-op
  on CUDA), then `torch.distributed.init_process_group(platform.backend(), ...)`.
* `runtime.engine.model_engine.build_engine(spec, layout, rank, *, seed=0, bf16=None)` --
  WORLD-collective: every rank calls it for every (spec, layout) in the same order; ranks
  outside `layout.mesh` get None.
* `runtime.interfaces.run_interface(name, engine, batch, args=None, ctx=CallContext())` on
  EVERY rank of the engine's layout with the same full `SeqBatch`; every rank returns the
  complete result (generate / inference: a SeqBatch with new fields; train: a dict of floats).
* `runtime.execution.launch.launch(fn, args, spec)` starts the workers;
  `runtime.execution.worker.worker_main(ctx, job)` is what each of them runs for `realloc run`.
"""
