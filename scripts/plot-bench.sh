#!/usr/bin/env bash
# Draw mamba-bench JSON with gnuplot, to PREFIX.svg and PREFIX.png:
#   decode records: tokens/s against batch (x log2), one line per file and (backend, model,
#                   weights dtype, prompt length), as the Mamba paper's Figure 8;
#   scan, scan-bwd, prefill and train records: bars, in PREFIX-bars.svg and .png.
# Besides mamba-bench's own JSON, a file may be a peer list, [{"label": ..., "batch": ...,
# "tokens_per_s": ...}, ...]: one line per label (figures measured with other software).
# Usage: scripts/plot-bench.sh [-o PREFIX] [-t TITLE] FILE.json [MORE.json ...]
#   -o PREFIX  where the images go (default: the first file's path without .json)
#   -t TITLE   the decode plot's title
# Exit status: 0 drawn, 1 no gnuplot or a file unreadable, 2 usage.
set -euo pipefail
prefix="" title="decoding throughput (Mamba paper, Figure 8 form)"
usage() { sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
while getopts "o:t:h" opt; do
  case "$opt" in
    o) prefix="$OPTARG" ;;
    t) title="$OPTARG" ;;
    *) usage ;;
  esac
done
shift $((OPTIND - 1))
[ $# -ge 1 ] || usage
if ! command -v gnuplot > /dev/null; then
  echo "plot-bench.sh: gnuplot not found (scripts/install-deps.sh installs gnuplot-nox)" >&2
  exit 1
fi
[ -n "$prefix" ] || prefix="${1%.json}"
script="$(mktemp)"
trap 'rm -f "$script"' EXIT
# python3 turns the JSON into gnuplot datablocks and plot commands; gnuplot draws them twice
# (svg, png). Its output: the plot commands, or a message on stderr and status 1.
python3 - "$prefix" "$title" "$@" > "$script" <<'EOF'
import json, os, sys

prefix, title, files = sys.argv[1], sys.argv[2], sys.argv[3:]

def q(s):
    """a gnuplot string: double quotes, backslashes and quotes escaped; '_' and '^' kept
    literal under the enhanced text mode"""
    s = str(s).replace("\\", "\\\\").replace('"', '\\"')
    return '"' + s.replace("_", "\\\\_").replace("^", "\\\\^") + '"'

lines = {}   # label -> {batch: tokens/s}
bars = {}    # panel (y axis) -> [(label, value)]
for path in files:
    try:
        with open(path) as f:
            doc = json.load(f)
    except (OSError, ValueError) as e:
        sys.exit(f"plot-bench.sh: {path}: {e}")
    tag = os.path.basename(path)
    if tag.endswith(".json"):
        tag = tag[:-5]
    if isinstance(doc, list):  # a peer list
        for i, r in enumerate(doc):
            try:
                lines.setdefault(str(r["label"]), {})[int(r["batch"])] = float(r["tokens_per_s"])
            except (KeyError, TypeError, ValueError):
                sys.exit(f"plot-bench.sh: {path}: entry {i}: expected label, batch, tokens_per_s")
        continue
    if not isinstance(doc, dict) or not isinstance(doc.get("results"), list):
        sys.exit(f"plot-bench.sh: {path}: neither mamba-bench JSON (an object with results) nor a peer list")
    for r in doc["results"]:
        mode, be = r.get("mode"), r.get("backend", "")
        if mode == "decode" and r.get("tokens_per_s") is not None:
            label = f"{r.get('model')} {r.get('weights_dtype', r.get('dtype', '')).lower()} {be}, prompt {r.get('seqlen')} ({tag})"
            lines.setdefault(label, {})[int(r["batch"])] = float(r["tokens_per_s"])
        elif mode in ("scan", "scan-bwd") and r.get("shape"):
            shape = "x".join(str(v) for v in r["shape"])
            bars.setdefault("scan, scan-bwd: median ms", []).append((f"{mode} {shape} {be} ({tag})", r["median_ms"]))
        elif mode in ("prefill", "train") and r.get("tokens_per_s") is not None:
            what = f"{mode} {r.get('model')} b{r.get('batch')} L{r.get('seqlen')} {be} ({tag})"
            bars.setdefault(f"{mode}: tokens/s", []).append((what, r["tokens_per_s"]))
if not lines and not bars:
    sys.exit("plot-bench.sh: no decode, scan, prefill or train records in " + " ".join(files))

written = ([prefix + ".svg", prefix + ".png"] if lines else []) + \
          ([prefix + "-bars.svg", prefix + "-bars.png"] if bars else [])
out = ["# outputs: " + "\t".join(written)]
# the terminals: svg, then png (cairo where gnuplot has it)
terms = [("svg", 'set terminal svg size 900,560 dynamic enhanced font "sans,12" background "white"'),
         ("png", 'if (strstrt(GPVAL_TERMINALS, "pngcairo") > 0) { set terminal pngcairo size 1200,750 enhanced font "sans,13" } '
                 'else { set terminal png size 1200,750 }')]
if lines:
    for i, (label, pts) in enumerate(lines.items()):
        out.append(f"$line{i} << EOD")
        out += [f"{b} {v}" for b, v in sorted(pts.items())]
        out.append("EOD")
    batches = sorted({b for pts in lines.values() for b in pts})
    xtics = ", ".join(f'"{b}" {b}' for b in batches)
    plot = ", ".join(f"$line{i} using 1:2 with linespoints lw 2 pt 7 title {q(label)}"
                     for i, label in enumerate(lines))
    for ext, term in terms:
        out += [term, f"set output {q(prefix + '.' + ext)}", "reset", "set logscale x 2", f"set xtics ({xtics})", f"set xrange [{batches[0] / 1.4}:{batches[-1] * 1.4}]",
                "set xlabel \"batch size\"", "set ylabel \"tokens/s\"", "set yrange [0:*]", "set grid",
                "set key left top box opaque", f"set title {q(title)}", f"plot {plot}", "set output"]
if bars:
    n = len(bars)
    for i, items in enumerate(bars.values()):
        out.append(f"$bars{i} << EOD")
        out += [f"{q(label)} {v}" for label, v in items]
        out.append("EOD")
    for ext, term in terms:
        h = 260 * n + 120
        out += [term.replace("900,560", f"900,{h}").replace("1200,750", f"1200,{h * 4 // 3}"),
                f"set output {q(prefix + '-bars.' + ext)}", "reset", "set style data histograms", "set style fill solid 0.8 border -1", "set boxwidth 0.7",
                "set xtics rotate by -25 left nomirror font \",9\"", "set grid ytics", "set yrange [0:*]",
                "unset xlabel", "set key off", "set bmargin 9", f"set multiplot layout {n},1"]
        for i, panel in enumerate(bars):
            out += [f"set title {q(panel)}", "set ylabel \"\"", f"plot $bars{i} using 2:xtic(1) lc rgb \"#3b6ea8\""]
        out += ["unset multiplot", "set output"]
print("\n".join(out))
EOF
gnuplot "$script"
# the files written, one a line
head -n1 "$script" | sed 's/^# outputs: //' | tr '\t' '\n'
