"""`realloc profile`: measure this machine with the real Megatron layers and write the
profile the cost model loads (`grid`: what is measured; `machine`: how each worker measures
it; `launcher`: starting the workers, fitting and writing the profile).

May import: `cost_model` (its calibration fits the measurements), `graph`,
`runtime.engine`, `runtime.interfaces`, `runtime.data`, `runtime.execution.launch`, torch.
"""
