#!/usr/bin/env bash
# Install the dependencies, build, and run the main job: mamba-bench on the synthetic 130m
# model on the best backend found. Extra arguments go to mamba-bench.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
"$root/scripts/install-deps.sh"
"$root/scripts/build.sh" "$root/build" -DMAMBA_BUILD_TESTS=OFF
"$root/build/bench/mamba-bench" "$@"
