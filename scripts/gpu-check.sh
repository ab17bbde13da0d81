#!/usr/bin/env bash
# The GPU machine's job, in one run: unpack the carried .deb files, build for the local GPU,
# run every suite with the GPU backends required, compute-sanitizer on the CUDA suite, and
# mamba-bench with --check. Logs and JSON go to $OUT (or ./gpu-out).
# Usage: scripts/gpu-check.sh [tests|bench|all] [extra mamba-bench arguments...]
set -uo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out="${OUT:-$root/gpu-out}"
what="${1:-all}"
shift || true
mkdir -p "$out"
eval "$("$root/scripts/device-deps.sh" "$root/.dev/debs")"
if [ ! -e /etc/OpenCL/vendors/nvidia.icd ] && ldconfig -p | grep -q libnvidia-opencl.so.1; then
  mkdir -p /etc/OpenCL/vendors && echo libnvidia-opencl.so.1 > /etc/OpenCL/vendors/nvidia.icd
fi
nvidia-smi -L
build="$root/build-gpu"
if ! { cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DMAMBA_WERROR=ON > "$out/cmake.log" 2>&1 &&
       cmake --build "$build" -j"$(nproc)" > "$out/build.log" 2>&1; }; then
  tail -40 "$out/cmake.log" "$out/build.log"
  exit 1
fi
echo "built"
"$build/tools/mamba" info
status=0
if [ "$what" = tests ] || [ "$what" = all ]; then
  (cd "$build" && MAMBA_TEST_REQUIRE=cuda,opencl ctest --output-on-failure -j4 > "$out/ctest.log" 2>&1) || status=1
  grep -E "tests passed|Failed|Skipped|\*\*\*" "$out/ctest.log"
  for be in cuda opencl; do
    (cd "$build" && ./tests/test_gpu_backends $be > "$out/gpu-suite-$be.log" 2>&1) || status=1
    grep -vE "^Running" "$out/gpu-suite-$be.log" | tail -12
  done
  if command -v compute-sanitizer > /dev/null; then
    (cd "$build" && CK_FORK=no compute-sanitizer --tool memcheck --error-exitcode 9 ./tests/test_gpu_backends cuda \
      > "$out/memcheck.log" 2>&1) || status=1
    tail -3 "$out/memcheck.log"
  fi
fi
if [ "$what" = bench ] || [ "$what" = all ]; then
  "$build/bench/mamba-bench" --backend=cpu,cuda,opencl --check --json="$out/bench.json" "$@" 2>&1 | tee "$out/bench.log" || status=1
fi
exit $status
