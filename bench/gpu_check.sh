#!/usr/bin/env bash
# On a machine with an NVIDIA GPU: install the GPU variant of the emotion service's runtime into
# its own venv (deploy/docker/requirements/emotion-gpu.txt: onnxruntime-gpu 1.31.1, CUDA 13 and
# cuDNN 9 from NVIDIA's pip wheels; needs driver R580+), confirm the CUDA provider really runs
# (session.get_providers() and per-node placement from ONNX Runtime's profile) and print latency
# p50/p95 at batch 1, 8, 32 and throughput (bench/gpu_check.py). About 3 GB of wheels, 2-4 minutes.
#
#   bench/gpu_check.sh                 # the fp16 model if services/emotion/model has one, else int8
#   bench/gpu_check.sh --model services/emotion/model/emotion.int8.onnx   # the CPU model on the GPU
#   GPU_CHECK_VENV=/tmp/v bench/gpu_check.sh --allow-cpu                 # try it without a GPU
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${GPU_CHECK_VENV:-.bench-venv/gpu}"
PY="${PY:-python3.11}"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || echo "nvidia-smi: not found"
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip
fi
# The same pins as the image, without the gRPC runtime the check does not need.
grep -vE '^\s*(-r|#)' deploy/docker/requirements/emotion-gpu.txt | "$VENV/bin/pip" install -q -r /dev/stdin
# The image registers the nvidia-* wheel libraries with ldconfig; here the loader path does it.
libs=$(find "$VENV"/lib/python3.11/site-packages/nvidia -maxdepth 2 -type d -name lib 2>/dev/null | paste -sd: || true)
export LD_LIBRARY_PATH="${libs}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
"$VENV/bin/python" -c "import onnxruntime as o; print('onnxruntime', o.__version__, o.get_available_providers())"
exec "$VENV/bin/python" bench/gpu_check.py "$@"
