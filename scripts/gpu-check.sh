#!/usr/bin/env bash
# Checks a Burn GPU backend of the model layer on a machine with an NVIDIA GPU, from binaries
# built on another machine (GPU machines here have no Rust toolchain and no network).
#
#   scripts/gpu-check.sh build [wgpu|cuda]   on the build machine: release binaries into .gpu/
#   scripts/gpu-check.sh run   [OUT]          on the GPU machine: writes logs and JSON to OUT
#
# `run` executes, on the GPU:
#   - shared/model/tests/gpu.rs: the GPU backend against Flex (same init, same loss curve,
#     LoRA trained on the GPU served from the CPU base, bit-reproducibility);
#   - shared/model/tests/model.rs: the whole model suite, which prefers the GPU in this build;
#   - train-bench: Burn on the GPU beside PyTorch on the same GPU, for the benchmark's model
#     and for a larger one (8 layers, width 512, context 256, batch 32);
#   - infer-bench: batched decoding with 1, 8 and 64 adapters beside merge-per-request, on the
#     GPU, for the demo model and a larger one (4 layers, width 256, context 128).
# For wgpu it unpacks the Vulkan loader from .gl/*.deb (Debian's libvulkan1, fetched with
# `apt-get download`), since the GPU image ships the NVIDIA driver's ICD but no loader.
#
# The `cuda` backend of Burn 0.22.1 builds only where cubecl-cuda's build script can download
# its LLVM bundle from GitHub (tracel-llvm), which this project's build machines cannot.
set -euo pipefail
cd "$(dirname "$0")/.."

build() {
  local backend=${1:-wgpu}
  export CARGO_TARGET_DIR=target/gpu
  mkdir -p .gpu
  # The two test binaries of provenant-model, named by their targets.
  cargo test --release --locked -p provenant-model --features "$backend" --no-run --message-format=json \
    | python3 -c '
import json, shutil, sys
for line in sys.stdin:
    message = json.loads(line)
    if message.get("reason") == "compiler-artifact" and message.get("executable") and message["target"]["kind"] == ["test"]:
        shutil.copy(message["executable"], ".gpu/model-" + message["target"]["name"])
'
  cargo build --release --locked -p provenant-load-tests --features "$backend" --bin train-bench --bin infer-bench
  cp target/gpu/release/train-bench target/gpu/release/infer-bench .gpu/
  strip .gpu/model-* .gpu/train-bench .gpu/infer-bench
  # ~55 MB each stripped (wgpu, naga and Burn's kernels), ~9 MB compressed: what travels to the
  # GPU machine is limited.
  xz -T0 -6 -f .gpu/model-* .gpu/train-bench .gpu/infer-bench
  echo "$backend" > .gpu/backend
  ls -la .gpu
}

run() {
  local out=${1:-target/gpu-check}
  mkdir -p "$out"
  local backend
  backend=$(cat .gpu/backend)
  for packed in .gpu/*.xz; do xz -d -f "$packed"; done
  chmod +x .gpu/model-* .gpu/train-bench .gpu/infer-bench
  if [ "$backend" = wgpu ]; then
    for deb in .gl/*.deb; do dpkg -x "$deb" /; done
    ldconfig
    local icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
    if [ -f "$icd" ]; then export VK_DRIVER_FILES=$icd; fi
  fi
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$out/nvidia-smi.txt"
  local status=0
  .gpu/model-gpu --test-threads 1 2>&1 | tee "$out/model-gpu.log" || status=1
  .gpu/model-model --test-threads 1 2>&1 | tee "$out/model-model.log" || status=1
  .gpu/train-bench --backend "$backend" --torch-python "$(command -v python3)" --rounds 2 --steps 30 --warmup 5 \
    --output "$out/train-gpu-small.json" 2>&1 | tee "$out/train-gpu-small.log" || status=1
  .gpu/train-bench --backend "$backend" --torch-python "$(command -v python3)" --rounds 2 --steps 20 --warmup 5 \
    --layers 8 --heads 8 --width 512 --context 256 --batch 32 \
    --output "$out/train-gpu-large.json" 2>&1 | tee "$out/train-gpu-large.log" || status=1
  .gpu/infer-bench --backend "$backend" --output "$out/infer-gpu-small.json" 2>&1 | tee "$out/infer-gpu-small.log" || status=1
  .gpu/infer-bench --backend "$backend" --layers 4 --heads 8 --width 256 --context 128 \
    --output "$out/infer-gpu-large.json" 2>&1 | tee "$out/infer-gpu-large.log" || status=1
  return $status
}

case "${1:-}" in
  build) build "${2:-wgpu}" ;;
  run) run "${2:-}" ;;
  *) echo "usage: $0 build [wgpu|cuda] | run [OUT]" >&2; exit 2 ;;
esac
