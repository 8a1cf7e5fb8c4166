#!/usr/bin/env bash
# scripts/elixir_newer.sh: compiles elixir_stub (library and tests) with --warnings-as-errors
# on a newer Elixir than Debian bookworm's 1.14, inside a Debian trixie chroot (Elixir 1.18,
# OTP 27) made with debootstrap by scripts/debian_root.sh (the mirror is this machine's own,
# from its apt sources). Not part of `make test` (it downloads a base system, about two
# minutes, once; the root is kept in $URO_REC_TRIXIE, default /tmp/uro_rec_trixie); run as
# root: `make check-elixir-newer`.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
root=${URO_REC_TRIXIE:-/tmp/uro_rec_trixie}
# The root, its mirror taken from this machine's apt sources: scripts/debian_root.sh.
bash "$here/scripts/debian_root.sh" make trixie "$root" elixir erlang-dev erlang-tools
rm -rf "$root/src/elixir_stub" && mkdir -p "$root/src"
cp -r "$here/elixir_stub" "$root/src/" && rm -rf "$root/src/elixir_stub/_build"
bash "$here/scripts/debian_root.sh" run "$root" elixir --version | tail -1
bash "$here/scripts/debian_root.sh" run "$root" sh -c 'cd /src/elixir_stub && mix compile --warnings-as-errors &&
  MIX_ENV=test mix compile --warnings-as-errors &&
  URO_REC_PORT=/bin/true mix test --exclude test --warnings-as-errors'
