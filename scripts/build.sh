#!/usr/bin/env bash
# Configure and build libmamba with every backend this machine can build, warnings as errors.
# Usage: scripts/build.sh [BUILD_DIR] [extra cmake arguments...]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
build="${1:-$root/build}"
shift || true
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DMAMBA_WERROR=ON "$@" >/dev/null
cmake --build "$build" -j"$(nproc)"
