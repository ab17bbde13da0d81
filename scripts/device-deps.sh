#!/usr/bin/env bash
# For a machine without Debian's package registry (the GPU machine): unpack carried .deb files
# (from `apt-get download`, see docs/GPU.md) into a prefix and print the environment that
# points pkg-config, the compiler and the loader at it. Usage: eval "$(scripts/device-deps.sh DEBDIR)"
set -euo pipefail
debs="${1:?usage: device-deps.sh DEBDIR [PREFIX]}"
prefix="${2:-/tmp/mamba-deps}"
mkdir -p "$prefix"
for f in "$debs"/*.deb; do dpkg -x "$f" "$prefix"; done
lib="$prefix/usr/lib/x86_64-linux-gnu"
# libmicrohttpd.pc names gnutls as a private requirement, which only its static linking needs:
# where gnutls's development package did not travel, a stub lets pkg-config answer
if [ -e "$lib/pkgconfig/libmicrohttpd.pc" ] && [ ! -e "$lib/pkgconfig/gnutls.pc" ] &&
   ! pkg-config --exists gnutls 2>/dev/null; then
  printf 'Name: gnutls\nDescription: stub (runtime library only)\nVersion: 3.7\nLibs:\nCflags:\n' > "$lib/pkgconfig/gnutls.pc"
fi
echo "export PKG_CONFIG_SYSROOT_DIR=$prefix"
echo "export PKG_CONFIG_PATH=$lib/openblas-openmp/pkgconfig:$lib/pkgconfig:$prefix/usr/share/pkgconfig"
echo "export LD_LIBRARY_PATH=$lib:$lib/openblas-openmp:${LD_LIBRARY_PATH:-}"
echo "export LIBRARY_PATH=$lib:$lib/openblas-openmp:${LIBRARY_PATH:-}"
echo "export CPATH=$prefix/usr/include:${CPATH:-}"
