#!/usr/bin/env bash
# Build the libFuzzer harnesses (clang, ASan + UBSan, coverage on the library) and run each
# for SECONDS (default 60) from its seed corpus. A finding stops with a non-zero status and
# leaves the input in fuzz/findings/; add it to fuzz/regressions/<target>/ once fixed.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
seconds="${1:-60}"
build="$root/build-fuzz"
CC=clang cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMAMBA_FUZZ=ON -DMAMBA_SANITIZE=ON \
  -DMAMBA_CUDA=OFF -DMAMBA_OPENCL=OFF -DMAMBA_BUILD_TESTS=OFF > /dev/null
cmake --build "$build" -j"$(nproc)" --target fuzz_safetensors fuzz_config fuzz_model fuzz_torch fuzz_tokenizer_load fuzz_tokenize fuzz_serve_request > /dev/null
mkdir -p "$root/fuzz/findings"
for t in safetensors config model torch tokenizer_load tokenize serve_request; do
  work=$(mktemp -d)
  cp -r "$root/fuzz/corpus/$t/." "$work/"
  echo "== fuzz_$t for ${seconds}s"
  log="$work.log"
  status=0
  (cd "$root/fuzz/findings" && OMP_NUM_THREADS=1 "$build/fuzz/fuzz_$t" -max_total_time="$seconds" -rss_limit_mb=4096 \
     -max_len=262144 -print_final_stats=1 "$work" > "$log" 2>&1) || status=$?
  grep -E "^(#[0-9]+ +DONE|stat::number_of_executed_units|stat::peak|==[0-9]+==ERROR|SUMMARY)|runtime error" "$log" | tail -8
  rm -rf "$work" "$log"
  if [ "$status" -ne 0 ]; then
    echo "fuzz_$t found a failure (status $status): the input is in fuzz/findings/" >&2
    exit 1
  fi
done
