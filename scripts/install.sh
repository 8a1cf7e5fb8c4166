#!/usr/bin/env bash
# scripts/install.sh PREFIX VENV [copy|link]: `make install`'s tree, self-contained, mirroring
# priv/ (where a Mix host's build puts the same files):
#
#   PREFIX/uro_recommender      the port (no path of the build machine in it)
#   PREFIX/lib/libpython*.so.*  only when libpython is not in the system library path
#                               (scripts/libpython.sh; the binary then has rpath $ORIGIN/lib)
#   PREFIX/python/uro_rec/      the Python package (no tests, no __pycache__)
#   PREFIX/sql/*.sql            apply_schema's files
#   PREFIX/venv/                the runtime virtualenv: a real copy (copy, the default), or hard
#                               links to VENV's files (link: seconds instead of minutes, same
#                               file system only; for tests, since the files are then shared)
#
# The executable finds all of them beside itself (c_src/paths.c), so PREFIX can be moved as a
# whole. The virtualenv's bin/python still points at its base interpreter (/usr/bin/python3.11
# for Debian's), which must exist where the tree runs: docs/OPERATIONS.md. When PREFIX/venv is
# VENV itself (the image recipe builds it in place), it is left as it is.
#
# Run from the checkout after `make build` (priv/uro_recommender).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
prefix=${1:?usage: install.sh PREFIX VENV [copy|link]}
venv=${2:?usage: install.sh PREFIX VENV [copy|link]}
mode=${3:-copy}
case "$mode" in copy | link) ;; *) echo "install.sh: INSTALL_VENV is copy or link, not $mode" >&2; exit 2 ;; esac
[ -x "$here/priv/uro_recommender" ] || { echo "install.sh: run make build first" >&2; exit 1; }
[ -f "$venv/pyvenv.cfg" ] || { echo "install.sh: $venv is not a virtualenv (make setup)" >&2; exit 1; }

mkdir -p "$prefix"
prefix=$(cd "$prefix" && pwd)
install -m 0755 "$here/priv/uro_recommender" "$prefix/uro_recommender"
if [ -d "$here/priv/lib" ]; then
  rm -rf "$prefix/lib" && cp -a "$here/priv/lib" "$prefix/lib"
fi

rm -rf "$prefix/python" "$prefix/sql"
mkdir -p "$prefix/python" "$prefix/sql"
tar -C "$here/python" --exclude=__pycache__ -cf - uro_rec | tar -C "$prefix/python" -xf -
install -m 0644 "$here"/priv/sql/*.sql "$prefix/sql/"

if [ "$(realpath "$venv")" != "$(realpath -m "$prefix/venv")" ]; then
  rm -rf "$prefix/venv"
  if [ "$mode" = link ]; then
    cp -al "$venv" "$prefix/venv"
  else
    cp -a "$venv" "$prefix/venv"
  fi
fi
echo "installed into $prefix (venv: $mode)" >&2
