#!/usr/bin/env bash
# Fill shared/wheels with what experiments/bench/gpu-requirements.txt lists, for the lent GPU
# machine (Python 3.12, x86_64, no registry access); run here, where a registry is reachable.
# The `shared/` folder travels with the working tree to the device machine.
set -euo pipefail
cd "$(dirname "$0")/../.."
mkdir -p shared/wheels
python3 -m pip download -q -d shared/wheels --python-version 3.12 --platform manylinux2014_x86_64 \
  --platform manylinux_2_17_x86_64 --platform any --only-binary=:all: --no-deps \
  -r experiments/bench/gpu-requirements.txt
ls shared/wheels
