#!/usr/bin/env python3
"""The layers of docs/DESIGN.md, checked: API -> core -> backends/api <- backends.

1. No backend (backends/cpu, cuda, opencl) includes a core header: a backend's quoted
   includes name its own files, the neutral layer (api/...) or mamba.h.
2. No core file includes a backend's header: the core's quoted includes name core files, the
   neutral layer (api/...) or mamba.h.
3. No cycle between the core's files: from the objects of a build (BUILD_DIR, default build),
   file A depends on file B when A uses a symbol B defines; the graph must have no cycle.

Usage: scripts/check-layers.py [BUILD_DIR]. Exit 1 on any violation, each one printed."""
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)


def quoted_includes(path):
    with open(path, encoding="utf-8") as f:
        return INCLUDE.findall(f.read())


def sources(top, exts):
    for d, _, files in os.walk(os.path.join(ROOT, top)):
        for name in sorted(files):
            if name.endswith(exts):
                yield os.path.join(d, name)


def check_includes():
    bad = []
    for be in ("cpu", "cuda", "opencl"):
        own = set(os.listdir(os.path.join(ROOT, "backends", be)))
        for path in sources(os.path.join("backends", be), (".c", ".h", ".cu", ".cl")):
            for inc in quoted_includes(path):
                if not (inc in own or inc.startswith("api/") or inc == "mamba.h"):
                    bad.append(f"{os.path.relpath(path, ROOT)}: a backend includes \"{inc}\"")
    for path in sources("backends/api", (".c", ".h")):
        for inc in quoted_includes(path):
            if not (inc.startswith("api/") or inc == "mamba.h"):
                bad.append(f"{os.path.relpath(path, ROOT)}: the neutral layer includes \"{inc}\"")
    core_files = {os.path.relpath(p, os.path.join(ROOT, "core")) for p in sources("core", (".c", ".h"))}
    for path in sources("core", (".c", ".h")):
        here = os.path.dirname(os.path.relpath(path, os.path.join(ROOT, "core")))
        for inc in quoted_includes(path):
            known = inc in core_files or os.path.normpath(os.path.join(here, inc)) in core_files
            if not (known or inc.startswith("api/") or inc == "mamba.h"):
                bad.append(f"{os.path.relpath(path, ROOT)}: the core includes \"{inc}\"")
    return bad


def symbols(obj):
    out = subprocess.run(["nm", "--defined-only", "-g", obj], capture_output=True, text=True, check=True).stdout
    defined = {line.split()[-1] for line in out.splitlines() if len(line.split()) >= 3}
    out = subprocess.run(["nm", "-u", obj], capture_output=True, text=True, check=True).stdout
    used = {line.split()[-1] for line in out.splitlines() if line.split()}
    return defined, used


def check_cycles(build):
    objdir = os.path.join(build, "CMakeFiles", "mamba.dir", "core")
    if not os.path.isdir(objdir):
        return [f"{objdir}: no objects of the core (build the library first)"]
    objs = {}
    for d, _, files in os.walk(objdir):
        for name in files:
            if name.endswith(".o"):
                rel = os.path.relpath(os.path.join(d, name), objdir)[: -len(".o")]
                objs[rel] = symbols(os.path.join(d, name))
    owner = {s: f for f, (defs, _) in objs.items() for s in defs}
    deps = {f: sorted({owner[s] for s in used if s in owner and owner[s] != f}) for f, (_, used) in objs.items()}
    # Tarjan's strongly connected components: any of more than one file is a cycle
    index, low, stack, on, comps, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in deps[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            comps.append(comp)

    sys.setrecursionlimit(10000)
    for v in sorted(deps):
        if v not in index:
            visit(v)
    bad = []
    for comp in comps:
        if len(comp) > 1:
            members = set(comp)
            edges = [f"{a} -> {b}" for a in sorted(comp) for b in deps[a] if b in members]
            bad.append("a cycle between core files: " + "; ".join(edges))
    return bad


def main():
    build = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "build")
    bad = check_includes() + check_cycles(build)
    for b in bad:
        print(b)
    if bad:
        return 1
    print("layers: backends include only the neutral layer, the core no backend header, no cycle in core/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
