#!/usr/bin/env bash
# scripts/elixir_newer.sh: compiles the Elixir client (library and tests) with --warnings-as-errors
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
# The Mix project (mix.exs at the top, the sources in elixir_stub/); MAKE=true: the chroot has
# no C toolchain, and only the Elixir code is checked here.
rm -rf "$root/src/uro_recommender" && mkdir -p "$root/src/uro_recommender"
cp -r "$here/mix.exs" "$here/elixir_stub" "$root/src/uro_recommender/"
bash "$here/scripts/debian_root.sh" run "$root" elixir --version | tail -1
bash "$here/scripts/debian_root.sh" run "$root" sh -c 'cd /src/uro_recommender && export MAKE=true &&
  mix compile --warnings-as-errors &&
  MIX_ENV=test mix compile --warnings-as-errors &&
  URO_REC_PORT=/bin/true mix test --exclude test --warnings-as-errors'
