#!/usr/bin/env bash
# Static analysis with the checked-in configurations: clang-tidy (.clang-tidy) and cppcheck
# (.cppcheck) over the library, the backends that build here, the tools, the bench, the fuzz
# harnesses and the tests. Any finding fails.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
build="$root/build-lint"
# a compile database with every C file that builds here (the fault hooks and tests included)
cmake -S "$root" -B "$build" -DCMAKE_EXPORT_COMPILE_COMMANDS=ON -DMAMBA_CUDA=OFF -DMAMBA_FAULT_INJECTION=ON > /dev/null
cd "$root"
files=$(ls core/*.c core/arch/*.c core/train/*.c backends/api/*.c backends/cpu/*.c tools/*.c tools/serve/*.c bench/*.c fuzz/*.c tests/*.c)
if [ -d "$build/backends/opencl" ]; then files="$files $(ls backends/opencl/*.c)"; fi
echo "clang-tidy on $(echo "$files" | wc -w) files"
# shellcheck disable=SC2086
printf '%s\n' $files | xargs -P"$(nproc)" -n4 clang-tidy -p "$build" --quiet 2> /dev/null
echo "cppcheck (options in .cppcheck)"
# shellcheck disable=SC2046
cppcheck $(grep -v '^#' .cppcheck | tr '\n' ' ') --quiet core backends/cpu backends/opencl tools bench fuzz tests
