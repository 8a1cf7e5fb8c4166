#!/usr/bin/env bash
# scripts/elixir_newer.sh: compiles the Elixir client (library and tests) with --warnings-as-errors
# on a newer Elixir than Debian bookworm's 1.14, inside a Debian trixie chroot (Elixir 1.18,
# OTP 27) made with debootstrap. Not part of `make test` (it downloads a base system, about
# two minutes); run as root: `make check-elixir-newer`.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
root=${URO_REC_TRIXIE:-/tmp/uro_rec_trixie}
command -v debootstrap >/dev/null || apt-get install -y -qq debootstrap >/dev/null
if ! [ -x "$root/usr/bin/elixir" ]; then
  debootstrap --variant=minbase --include=elixir,erlang-dev,erlang-tools trixie "$root" \
    http://deb.debian.org/debian >/dev/null
fi
# The Mix project (mix.exs at the top, the sources in elixir_stub/); MAKE=true: the chroot has
# no C toolchain, and only the Elixir code is checked here.
rm -rf "$root/src/uro_recommender" && mkdir -p "$root/src/uro_recommender"
cp -r "$here/mix.exs" "$here/elixir_stub" "$root/src/uro_recommender/"
chroot "$root" elixir --version | tail -1
chroot "$root" sh -c 'cd /src/uro_recommender && export MAKE=true &&
  mix compile --warnings-as-errors &&
  MIX_ENV=test mix compile --warnings-as-errors &&
  URO_REC_PORT=/bin/true mix test --exclude test --warnings-as-errors'
