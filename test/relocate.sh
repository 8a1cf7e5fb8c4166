#!/usr/bin/env bash
# test/relocate.sh VENV: the relocation check of `make test` (make test-relocate).
#
#   1. scripts/libpython.sh keeps Debian's libpython off the binary (soname, no rpath) and
#      names a libpython that is outside the system library path (it must then travel).
#   2. The built port carries no path of this machine: neither the checkout nor VENV.
#   3. `make install` to A (the virtualenv hard-linked: seconds, not a 2.5 GB copy), mv A B,
#      then in a mount namespace with tmpfs over the checkout and over the developer cache
#      (~/.cache/uro_recommender): --check passes and its lookup lines show B's python dir,
#      virtualenv and SQL files (and Python's apply_schema agrees on the SQL files), and the
#      replay sessions (copied out of the checkout with their harness first) pass against
#      B/uro_recommender.
#
# Needs root (unshare -m, mount). Prints `relocate: ok` last; exit status 0 iff all held.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
venv=${1:?usage: relocate.sh VENV}
cache="${XDG_CACHE_HOME:-$HOME/.cache}/uro_recommender"
work=$(mktemp -d /tmp/uro_relocate.XXXXXX)
trap 'rm -rf "$work"' EXIT
fail() { echo "relocate: FAIL: $*" >&2; exit 1; }

# 1. Which libpython travels. A stand-in interpreter reports a LIBDIR outside ld.so's cache.
[ -z "$(bash "$here/scripts/libpython.sh" "$venv/bin/python")" ] ||
  fail "scripts/libpython.sh wants to ship Debian's libpython"
soname=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_config_var("INSTSONAME"))')
mkdir -p "$work/pyenv/lib" "$work/pyenv/bin"
cp "$("$venv/bin/python" -c 'import sysconfig as s; print(s.get_config_var("LIBDIR"))')/$soname" "$work/pyenv/lib/"
printf '#!/bin/sh\necho %s %s\n' "$work/pyenv/lib" "$soname" >"$work/pyenv/bin/python"
chmod +x "$work/pyenv/bin/python"
[ "$(bash "$here/scripts/libpython.sh" "$work/pyenv/bin/python")" = "$work/pyenv/lib/$soname" ] ||
  fail "scripts/libpython.sh does not name a libpython outside the system library path"
echo "relocate: ok   libpython: soname only for the system's; a pyenv-like one would travel"

# 2. No path of this machine in the binary.
for p in "$here" "$venv" "$cache"; do
  ! grep -q -a -F "$p" "$here/priv/uro_recommender" || fail "priv/uro_recommender contains $p"
done
! readelf -d "$here/priv/uro_recommender" | grep -q -E 'RPATH|RUNPATH' ||
  [ -d "$here/priv/lib" ] || fail "an rpath, but no libpython shipped in priv/lib"
echo "relocate: ok   the binary names neither the checkout, nor the virtualenv, nor the cache"

# 3. Install, move, hide, replay.
t0=$(date +%s)
bash "$here/scripts/install.sh" "$work/A" "$venv" link 2>/dev/null
mv "$work/A" "$work/B"
mkdir "$work/replay"
cp "$here"/test/replay/replay.escript "$here"/test/replay/*.session "$work/replay/"
cd "$work"
B="$work/B" here="$here" venv="$venv" cache="$cache" \
  unshare -m --propagation private env -u URO_REC_VENV -u URO_REC_PYTHON_DIR bash -euo pipefail -c '
  fail() { echo "relocate: FAIL: $*" >&2; exit 1; }
  mkdir -p "$cache"
  mount -t tmpfs none "$here"
  mount -t tmpfs none "$cache"
  [ ! -e "$here/Makefile" ] && [ ! -e "$venv/pyvenv.cfg" ] || fail "the checkout or the cache is still visible"
  "$B/uro_recommender" --check --model-dir "$PWD/check_models" >paths.txt ||
    { cat paths.txt; fail "--check failed in the moved tree"; }
  grep -q -x -F "  <exe_dir> = $B, <cache> = ${cache%/uro_recommender}, <hash> = ${venv##*venv-}" paths.txt ||
    { cat paths.txt; fail "--check: <exe_dir> is not $B"; }
  for want in "python dir  $B/python   (by <exe_dir>/python)" \
              "virtualenv  $B/venv   (by <exe_dir>/venv)" \
              "SQL files   $B/sql   (by <python_dir>/../sql)"; do
    grep -q -x -F "  $want" paths.txt || { cat paths.txt; fail "--check lacks: $want"; }
  done
  echo "relocate: ok   --check passes and shows B: python/, venv/, sql/ beside the executable"
  escript replay/replay.escript "$B/uro_recommender" replay/*.session
'
echo "relocate: ok   replay sessions against the moved tree, checkout and cache hidden ($(($(date +%s) - t0)) s)"
echo "relocate: ok"
