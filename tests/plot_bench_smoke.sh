#!/usr/bin/env bash
# scripts/plot-bench.sh on a small mamba-bench JSON and a peer list: each image written and
# non-empty, the SVGs holding both decode lines and the bars. Skipped (77) without gnuplot.
set -euo pipefail
root="$1" work="$2"
command -v gnuplot > /dev/null || { echo "gnuplot not installed: skipped"; exit 77; }
command -v python3 > /dev/null || { echo "python3 not installed: skipped"; exit 77; }
mkdir -p "$work"
rm -f "$work"/smoke*
data="$root/tests/data/bench"
out="$("$root/scripts/plot-bench.sh" -o "$work/smoke" "$data/small.json" "$data/peer-small.json")"
for f in smoke.svg smoke.png smoke-bars.svg smoke-bars.png; do
  [ -s "$work/$f" ] || { echo "$f: missing or empty"; exit 1; }
  grep -qx "$work/$f" <<< "$out" || { echo "$f: not in the script's list of outputs: $out"; exit 1; }
done
grep -q "peer_a" "$work/smoke.svg" || { echo "smoke.svg: no line of the peer list"; exit 1; }
grep -q "1.4b bf16 cuda, prompt 2048 (small)" "$work/smoke.svg" || { echo "smoke.svg: no line of small.json"; exit 1; }
grep -q "scan 1x1536x2048x16 cuda" "$work/smoke-bars.svg" || { echo "smoke-bars.svg: no scan bar"; exit 1; }
# a file that is neither form is refused with its name
echo '{"x": 1}' > "$work/smoke-bad.json"
if "$root/scripts/plot-bench.sh" -o "$work/smoke-bad" "$work/smoke-bad.json" 2> "$work/smoke-err"; then
  echo "a JSON without results was accepted"; exit 1
fi
grep -q "smoke-bad.json" "$work/smoke-err" || { echo "the error does not name the file: $(cat "$work/smoke-err")"; exit 1; }
echo "plot-bench.sh: 4 images"
