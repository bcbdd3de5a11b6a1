#!/usr/bin/env bash
# The bf16 training step on one CUDA GPU: the five ctrl models and transformers' VisualBertModel and LxmertModel,
# with samples per second, peak memory and model FLOPs utilisation, in under 10 minutes on an H200.
#
#   bash benchmarks/gpu.sh                        # H200: dense bf16 peak 989 TFLOP/s
#   PEAK_TFLOPS=312 BATCH=64 bash benchmarks/gpu.sh   # an A100, a smaller batch
#
# Needs a python whose torch is a CUDA build (nothing is downloaded for torch). Installs this project without
# touching torch, and its other dependencies from PyPI only when they are missing. The table goes to stdout and to
# ${OUT:-benchmarks}/gpu_train_step.txt.
#
# What runs: benchmarks/train_step.py --device cuda --bf16 --fused-adamw --sdpa-backend flash efficient, both
# sides with the same levers. torch's flash kernel takes no attention mask, and every attention call here has one
# (padding; for vl_zoo's dual-stream models also the stream pattern of the joint call), so masked calls run on the
# memory-efficient kernel, the other fused kernel, which takes additive masks. transformers' VisualBERT and LXMERT
# have eager attention only. MFU divides the FLOPs that torch's FlopCounterMode counts in one eager step (forward
# and backward, not the optimiser) by the median step time and by PEAK_TFLOPS.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python}
PEAK_TFLOPS=${PEAK_TFLOPS:-989}
BATCH=${BATCH:-128}
STEPS=${STEPS:-10}
RESULTS=${OUT:-benchmarks}/gpu_train_step.txt

"$PYTHON" - <<'EOF'
import sys

import torch

if not torch.cuda.is_available():
    sys.exit(f"benchmarks/gpu.sh needs a CUDA device; torch {torch.__version__} sees none")
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.get_device_name()}")
EOF

"$PYTHON" -m pip install --quiet --no-deps -e .
if ! "$PYTHON" -c "import transformers, accelerate, datasets, safetensors, huggingface_hub, tqdm" 2>/dev/null; then
    "$PYTHON" -m pip install --quiet "transformers>=5.20,<6" "huggingface_hub>=1.0,<3" "safetensors>=0.4" \
        "datasets>=3.0,<6" "accelerate>=1.0,<2" "tqdm>=4.60"
fi
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,power.limit --format=csv || true

timeout 540 "$PYTHON" benchmarks/train_step.py \
    --device cuda --bf16 --fused-adamw --sdpa-backend flash efficient \
    --modes train --batch-size "$BATCH" --steps "$STEPS" --warmup 3 --rounds 2 \
    --peak-tflops "$PEAK_TFLOPS" | tee "$RESULTS"
