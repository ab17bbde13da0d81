#!/usr/bin/env bash
# The tokenizer's encoding speed against Hugging Face tokenizers (Rust, through its Python
# binding), one thread each, one encode call per document, on the same documents: texts of
# 1, 10 and 100 MB made by repeating the GPT-NeoX fixture's texts, prose, code and a
# multilingual mix as separate inputs. Prints MB/s of both and checks they give as many ids.
#   scripts/bench-tokenizer.sh [BUILD_DIR]     (SIZES="1 10" to choose the sizes in MB)
# tokenizers is installed with pip into a virtual environment under /tmp (measurement only).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
build="${1:-$root/build}"
sizes="${SIZES:-1 10 100}"
bench="$build/bench/mamba-bench"
data="$root/tests/data/tokenizer"
[ -x "$bench" ] || { echo "no $bench: build first (cmake --build $build)" >&2; exit 1; }
venv="${MAMBA_TOKENIZERS_VENV:-/tmp/mamba-tokenizers-venv}"
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import tokenizers" 2> /dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q tokenizers
fi
work="$(mktemp -d /tmp/mamba-tok-bench.XXXXXX)"
trap 'rm -rf "$work"' EXIT
export TOKENIZERS_PARALLELISM=false OMP_NUM_THREADS=1

# the inputs: the fixture's texts of each kind (those without U+0000), repeated in order
"$venv/bin/python" - "$data/cases.jsonl" "$work" $sizes << 'EOF'
import json, sys
cases, work, sizes = sys.argv[1], sys.argv[2], [int(s) for s in sys.argv[3:]]
kinds = {
    "prose": lambda c: c.startswith("prose/"),
    "code": lambda c: c.startswith("code/") or c.startswith("structured/"),
    "multilingual": lambda c: c.startswith("intl/") or c.startswith("unicode/sentences"),
}
rows = [json.loads(l) for l in open(cases, encoding="utf-8")]
for kind, pick in kinds.items():
    texts = [r["text"] for r in rows if pick(r["cat"]) and "\0" not in r["text"]]
    for mb in sizes:
        total, i = 0, 0
        with open("%s/%s-%dMB.jsonl" % (work, kind, mb), "w", encoding="utf-8") as f:
            while total < mb * 1000000:
                t = texts[i % len(texts)]
                f.write(json.dumps({"text": t}, ensure_ascii=False) + "\n")
                total += len(t.encode("utf-8"))
                i += 1
EOF

cat > "$work/hf.py" << 'EOF'
import json, sys, time
from tokenizers import Tokenizer
tok = Tokenizer.from_file(sys.argv[1])
docs = [json.loads(l)["text"] for l in open(sys.argv[2], encoding="utf-8")]
size = sum(len(d.encode("utf-8")) for d in docs)
repeat = 3 if size < 5000000 else 1
for d in docs[:2000]:
    tok.encode(d)
best = None
for _ in range(repeat):
    t = time.perf_counter()
    n = sum(len(tok.encode(d).ids) for d in docs)
    t = time.perf_counter() - t
    best = t if best is None or t < best else best
print("%.2f %d" % (size / 1e6 / best, n))
EOF

printf "%-26s %12s %12s %8s %12s\n" "input" "libmamba" "tokenizers" "ratio" "ids"
for mb in $sizes; do
  for kind in prose code multilingual; do
    text="$work/$kind-${mb}MB.jsonl"
    "$bench" --mode=tokenize --tokenizer="$data/tokenizer.json" --text="$text" --repeat=3 --json="$work/r.json" > /dev/null
    ours=$(python3 -c "import json; r = json.load(open('$work/r.json'))['results'][0]; print('%.2f %d' % (r['mb_per_s'], r['tokens']))")
    theirs=$("$venv/bin/python" "$work/hf.py" "$data/tokenizer.json" "$text")
    read -r ours_mbs ours_n <<< "$ours"
    read -r theirs_mbs theirs_n <<< "$theirs"
    same=$([ "$ours_n" = "$theirs_n" ] && echo "same" || echo "DIFFER: $ours_n vs $theirs_n")
    printf "%-26s %7s MB/s %7s MB/s %7sx %12s\n" "$kind ${mb} MB" "$ours_mbs" "$theirs_mbs" \
      "$(python3 -c "print('%.1f' % ($ours_mbs / $theirs_mbs))")" "$same"
  done
done
