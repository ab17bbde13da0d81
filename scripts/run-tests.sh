#!/usr/bin/env bash
# Install the dependencies, build, and run every test suite (ctest). Absent GPU backends are
# reported as skipped; MAMBA_TEST_REQUIRE=cuda,opencl makes their absence a failure.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
"$root/scripts/install-deps.sh"
"$root/scripts/build.sh" "$root/build"
cd "$root/build"
ctest --output-on-failure -j"$(nproc)"
