#!/usr/bin/env bash
# scripts/libpython.sh PYTHON: must libpython travel with the executable?
#
# The port links libpython by its soname (libpython3.11.so.1.0) and carries no path of the
# build machine. When the dynamic linker finds that very file by itself (it is in ld.so's
# cache: Debian's python3.11 puts it in /usr/lib/x86_64-linux-gnu), nothing is printed and no
# rpath is needed. Otherwise (a pyenv or self-built python given by URO_REC_PYTHON) the
# library's path is printed: the Makefile then copies it to lib/ beside the executable and
# links with the rpath $ORIGIN/lib, and `make install` carries lib/ along.
#
# PYTHON is the virtualenv's interpreter; nothing is printed when it does not exist yet.
set -euo pipefail
py=${1:?usage: libpython.sh PYTHON}
[ -x "$py" ] || exit 0
read -r libdir soname < <("$py" -c 'import sysconfig as s
print(s.get_config_var("LIBDIR"), s.get_config_var("INSTSONAME"))')
lib="$libdir/$soname"
[ -e "$lib" ] || { echo "libpython.sh: $lib not found (not a shared-library python?)" >&2; exit 1; }

# ld.so.cache lines: "\tlibpython3.11.so.1.0 (libc6,x86-64) => /lib/x86_64-linux-gnu/libpython3.11.so.1.0".
# Only entries of this machine's ABI count: the one libc.so.6 is listed with.
ldconfig=$(command -v ldconfig || echo /sbin/ldconfig)
cache=$("$ldconfig" -p 2>/dev/null || true)
abi=$(awk '$1 == "libc.so.6" { print $2; exit }' <<<"$cache")
found=$(awk -v s="$soname" -v abi="$abi" '$1 == s && $2 == abi { print $NF; exit }' <<<"$cache")
if [ -n "$found" ] && [ "$(realpath "$found")" = "$(realpath "$lib")" ]; then
  exit 0
fi
echo "$lib"
