"""Where parameters live: the plain types the cost model prices and the runtime executes.

Owns: clusters, device meshes and layouts (`layout`), parameter manifests by global
name with their TP/PP cuts (`params`), and the TransferPlan that moves a model from one
layout to another (`transfer`: which rank sends which slice of which parameter to which
rank). Derivations only; prices live in `cost_model`, execution in `runtime.execution`.

May import: `graph.spec` and the standard library (no torch, no numpy).
"""
