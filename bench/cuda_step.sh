#!/usr/bin/env bash
# GPU benchmark of the fused step vs PyTorch on the same GPU. Needs no Node.
#
#   bench/cuda_step.sh [--prebuilt DIR] [--peer PATH] [-- extra cuda_step args]
#
# 1. Builds bench/cuda_step and test/cpp/cuda_test with CMake + nvcc into
#    ${BUILD_DIR:-out/cuda-bench} (or uses DIR/cuda_step and DIR/cuda_test from
#    --prebuilt when this machine has no nvcc/cmake; those binaries link cudart
#    13 statically and need an NVIDIA driver >= 580).
# 2. Runs the C++ cross-check test (CUDA vs CPU kernels), then the benchmark:
#    N=1,048,576, D=768, B=1024, bfloat16 rows, scale 20.
# 3. Runs the PyTorch peer (matmul + Gumbel argmax + logsumexp, and the
#    matmul alone) with the same shapes and prints the ratios.
# Results: one JSON object per line in ${OUT:-out}/cuda_step.jsonl, a summary
# on stdout.
set -euo pipefail
cd "$(dirname "$0")/.."
prebuilt=""
peer="${PEER:-}"
extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --prebuilt) prebuilt="$2"; shift 2 ;;
    --peer) peer="$2"; shift 2 ;;
    --) shift; extra=("$@"); break ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
out="${OUT:-out}"
mkdir -p "$out"
jsonl="$out/cuda_step.jsonl"
: > "$jsonl"
N=1048576 D=768 B=1024

if [ -n "$prebuilt" ]; then
  bin="$prebuilt"
else
  bin="${BUILD_DIR:-out/cuda-bench}"
  cmake -S . -B "$bin" -DCMAKE_BUILD_TYPE=Release -DNEGCACHE_TESTS=ON -DNEGCACHE_CUDA_BENCH=ON \
    -DCMAKE_CUDA_ARCHITECTURES="${CUDA_ARCHS:-90}" >"$out/cuda_step.build.log" 2>&1
  cmake --build "$bin" -j"$(nproc)" --target cuda_step cuda_test >>"$out/cuda_step.build.log" 2>&1 ||
    { tail -40 "$out/cuda_step.build.log"; exit 1; }
fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | tee "$out/gpu.txt" || true

echo "== C++ cross-check: CUDA vs CPU kernels ==" 
"$bin/cuda_test" | tee "$out/cuda_test.txt"

echo "== fused step (negative-cache CUDA) =="
"$bin/cuda_step" --n "$N" --d "$D" --b "$B" --json "${extra[@]}" | tee -a "$jsonl"

if [ -z "$peer" ]; then
  for p in ../shared/peers/torch_step.py /work/shared/peers/torch_step.py; do
    [ -f "$p" ] && peer="$p" && break
  done
fi
if [ -n "$peer" ] && python3 -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
  echo "== PyTorch peer =="
  python3 "$peer" --device cuda --dtype bfloat16 --n "$N" --d "$D" --b "$B" | tee -a "$jsonl"
else
  echo "PyTorch peer skipped (no torch with CUDA, or torch_step.py not found)" >&2
fi

python3 - "$jsonl" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip().startswith('{')]
ms = {}
for r in rows:
    if r.get('impl') == 'negcache-cuda':
        ms[(r['variant'], r['splits'])] = r['median_ms']
    elif r.get('impl') in ('torch-step', 'torch-gemm'):
        ms[r['impl']] = r['median_ms']
step, gemm = ms.get('torch-step'), ms.get('torch-gemm')
print('\n%-28s %10s %14s %14s' % ('negative-cache CUDA', 'ms', 'torch-step/x', 'x/torch-gemm'))
for key, t in sorted(((k, v) for k, v in ms.items() if isinstance(k, tuple)), key=lambda kv: (kv[0][1], kv[0][0])):
    variant, splits = key
    a = '%.2fx' % (step / t) if step else '-'
    b = '%.2fx' % (t / gemm) if gemm else '-'
    print('%-28s %10.3f %14s %14s' % ('%s splits=%d' % (variant, splits), t, a, b))
if step: print('torch-step %.3f ms, torch-gemm %.3f ms' % (step, gemm or float('nan')))
print('goal: fused-gumbel-k1 >= 2x faster than torch-step and <= 1.3x torch-gemm')
EOF
