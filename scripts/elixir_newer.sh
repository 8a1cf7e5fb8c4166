#!/usr/bin/env bash
# scripts/elixir_newer.sh: compiles elixir_stub (library and tests) with --warnings-as-errors
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
rm -rf "$root/src/elixir_stub" && mkdir -p "$root/src"
cp -r "$here/elixir_stub" "$root/src/" && rm -rf "$root/src/elixir_stub/_build"
chroot "$root" elixir --version | tail -1
chroot "$root" sh -c 'cd /src/elixir_stub && mix compile --warnings-as-errors &&
  MIX_ENV=test mix compile --warnings-as-errors &&
  URO_REC_PORT=/bin/true mix test --exclude test --warnings-as-errors'
