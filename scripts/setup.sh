#!/usr/bin/env bash
# scripts/setup.sh: the one idempotent set-up step behind `make demo`, `make test` and `make bench`.
#
# It installs the Debian packages the build and the tests need, then a Python 3.11 virtualenv with
# the pinned runtime, python/requirements.txt, and beside it an overlay directory with the pinned
# test-only packages, python/requirements-test.txt (pytest, psycopg, SQLAlchemy), which the test
# and bench targets put on PYTHONPATH. The virtualenv thus holds exactly what an installed tree
# carries (`make install` copies it). Both live outside the checkout, in
# ${URO_REC_VENV:-~/.cache/uro_recommender/venv-<hash of requirements.txt>} and
# ~/.cache/uro_recommender/test-<hash of requirements-test.txt>, so a fresh clone (CI's) reuses
# them. A second run checks two stamps and returns in a second or two.
#
# The interpreter is Debian's own python3.11 when it is there: the virtualenv then points at
# /usr/bin, which is where a Debian bookworm image (deploy/) has it too.
#
# Prints the virtualenv's path as its last line of stdout; everything else goes to stderr.
#   setup.sh --path        only print the virtualenv's path
#   setup.sh --test-path   only print the test overlay's path
#   setup.sh --hash        only print <hash> (the Makefile compiles it into the port, which
#                          looks for this virtualenv when no other is configured: c_src/paths.c)
#   setup.sh --runtime     only the virtualenv: no Debian packages, no test overlay (the image
#                          recipe, deploy/Dockerfile, whose build stage brings its own packages)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
req="$here/python/requirements.txt"
req_test="$here/python/requirements-test.txt"
hash=$(sha256sum "$req" | cut -c1-12)
hash_test=$(sha256sum "$req_test" | cut -c1-12)
cache="${XDG_CACHE_HOME:-$HOME/.cache}/uro_recommender"
venv="${URO_REC_VENV:-$cache/venv-$hash}"
overlay="$cache/test-$hash_test"

log() { echo "setup: $*" >&2; }

# `setup.sh --path` only prints where the virtualenv is (the Makefile asks, to build against it).
if [ "${1:-}" = "--path" ]; then echo "$venv"; exit 0; fi
if [ "${1:-}" = "--test-path" ]; then echo "$overlay"; exit 0; fi
if [ "${1:-}" = "--hash" ]; then echo "$hash"; exit 0; fi
runtime_only=0
if [ "${1:-}" = "--runtime" ]; then runtime_only=1; fi

# --- Debian packages -------------------------------------------------------------------------
debs=(erlang-base erlang-dev erlang-tools erlang-crypto erlang-inets erlang-ssl elixir libpq-dev
      libcmocka-dev zlib1g-dev postgresql postgresql-client pkg-config python3.11-dev python3.11-venv
      clang libclang-rt-14-dev)
missing=()
for p in "${debs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ] && [ $runtime_only = 0 ]; then
  log "installing Debian packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq >&2
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi

# --- The interpreter -------------------------------------------------------------------------
# We embed the libpython of the virtualenv's base interpreter, so it must be a shared build.
pick_python() {
  for py in ${URO_REC_PYTHON:-} /usr/bin/python3.11 python3.11; do
    command -v "$py" >/dev/null 2>&1 || continue
    "$py" -c 'import sys, sysconfig; assert sys.version_info[:2] == (3, 11); assert sysconfig.get_config_var("Py_ENABLE_SHARED")' 2>/dev/null || continue
    command -v "$py"; return 0
  done
  return 1
}

# --- The virtualenv --------------------------------------------------------------------------
quiet_pip() { grep -v "is ignored: it is neither a file nor a directory" >&2 || true; }

stamp="$venv/.uro_rec_installed"
if ! { [ -f "$stamp" ] && cmp -s "$stamp" "$req"; }; then
  py=$(pick_python) || { log "no shared-library Python 3.11 found"; exit 1; }
  log "building virtualenv $venv from $py (a few minutes, once)"
  mkdir -p "$(dirname "$venv")"
  [ -x "$venv/bin/python" ] || "$py" -m venv "$venv" >&2
  # torch==2.13.0 is pinned so pip takes the CPU wheel that lies on this machine's disk.
  "$venv/bin/python" -m pip install -q -r "$req" 2>&1 | quiet_pip
  "$venv/bin/python" -c 'import libreco, tensorflow, torch, gensim, recfarm' >&2
  cp "$req" "$stamp"
fi

# --- The test overlay ------------------------------------------------------------------------
# --no-deps: requirements-test.txt pins every package it needs beyond the runtime, so nothing
# here can shadow a runtime package with another version.
stamp_test="$overlay/.uro_rec_installed"
if [ $runtime_only = 0 ] && ! { [ -f "$stamp_test" ] && cmp -s "$stamp_test" "$req_test"; }; then
  log "installing the test packages into $overlay"
  rm -rf "$overlay"
  "$venv/bin/python" -m pip install -q --no-deps --target "$overlay" -r "$req_test" 2>&1 | quiet_pip
  PYTHONPATH="$overlay" "$venv/bin/python" -c 'import pytest, psycopg, sqlalchemy' >&2
  cp "$req_test" "$stamp_test"
fi
echo "$venv"
