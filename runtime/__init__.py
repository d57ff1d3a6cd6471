"""Runtime: Megatron-core engines with HF checkpoints and the interface implementations.

Public API (see each module for details):

* `runtime.platform.apply_platform_patches()` once per process (idempotent; a no-op on CUDA),
  then `torch.distributed.init_process_group(platform.backend(), ...)`.
* `runtime.engine.build_engine(spec, layout, rank, *, seed=0, bf16=None) -> ModelEngine | None`
  -- WORLD-collective: every rank calls it for every (spec, layout) in the same order;
  ranks outside `layout.mesh` get None. Bad input raises ValueError before any group exists
  (`runtime.engine.validate_engine(spec, layout)` runs that check alone).
* `runtime.interfaces.run_interface(name, engine, batch, args=None, ctx=CallContext())` on
  EVERY rank of the engine's layout with the same full `SeqBatch`; every rank returns the
  complete result (generate / inference: a SeqBatch with new fields; train: a dict of floats).
* Weights by global name: `engine.named_local_shards()` (live tensors + ShardSpec + ranges),
  `engine.load_global_state(dict)`, `engine.global_state()`, `engine.save_hf(path)`,
  `engine.weights_changed()` after writing shards in place.
* `runtime.batch.SeqBatch`: right-padded sequences with prompt/response lengths, per-token
  and per-sequence fields and sample ids.
"""
