"""`realloc profile`: measure this machine with the real Megatron layers and write the
profile the cost model loads (`machine`).

May import: `cost_model` (its calibration fits the measurements), `graph`,
`runtime.engine`, `runtime.interfaces`, `runtime.data`, `runtime.execution.launch`, torch.
"""
