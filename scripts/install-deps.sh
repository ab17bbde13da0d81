#!/usr/bin/env bash
# Install what libmamba needs to build and test on Debian 12 (or Ubuntu 22.04+).
# nvcc is not installed here: the CUDA backend is built when the CUDA toolkit is present.
set -euo pipefail
packages=(
  build-essential cmake pkg-config
  libopenblas-openmp-dev libcjson-dev libonig-dev libutf8proc-dev check
  ocl-icd-opencl-dev opencl-headers pocl-opencl-icd libclblast-dev clinfo
  libmicrohttpd-dev curl python3-venv gnuplot-nox
  valgrind cppcheck clang clang-tidy libclang-rt-14-dev libomp-14-dev
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
echo "installing: ${missing[*]}" >&2
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
