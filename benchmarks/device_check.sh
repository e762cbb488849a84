#!/usr/bin/env bash
# The one-call accelerator check (benchmarks/device_check.py) on the machine's own Python.
#
# On the GPU machine (no network; see ../shared/device/README.md) the checkout carries an
# ignored .device/ folder with the two wheels that machine lacks and the four Fashion-MNIST
# IDX files: they are installed and used here. The report goes to $OUT/bench_gpu.md when
# OUT is set (the device tool brings that folder back), else to results/bench_gpu.md.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ -d .device ]; then
  "$PYTHON" -m pip install -q --no-deps .device/*.whl
  export FASHION_MNIST_DIR=$PWD/.device
fi
export PYTHONUNBUFFERED=1
"$PYTHON" -m benchmarks.device_check --out="${OUT:-results}/bench_gpu.md" "$@"
