#!/usr/bin/env bash
# scripts/debian_root.sh: a clean Debian root made with debootstrap, shared by
# `make check-elixir-newer` (trixie) and `make check-clean-debian` (bookworm). As root.
#
#   debian_root.sh make SUITE ROOT [PACKAGE...]
#       Makes ROOT (debootstrap --variant=minbase, plus exactly PACKAGEs and what they depend
#       on), once: a stamp in ROOT records suite, mirror and packages, and a root whose stamp
#       differs is made again from scratch, so a package dropped from a list is gone too.
#   debian_root.sh run ROOT COMMAND [ARG...]
#       Runs COMMAND chrooted in ROOT with a clean environment, in a mount namespace of its own
#       with /proc and /dev mounted (the port finds itself through /proc/self/exe), sharing
#       the host's network (127.0.0.1 is the host's).
#   debian_root.sh mirror
#       Prints the mirror `make` uses: the machine's own.
#
# The mirror is read from this machine's apt sources (/etc/apt/sources.list and
# /etc/apt/sources.list.d/*.list|*.sources, one-line and deb822 forms): the first `deb` URI
# that serves the machine's own release (its codename, not -security or -updates). No host
# name is written into the repository. (URO_REC_APT_ETC=DIR reads DIR instead of /etc/apt.)
set -euo pipefail

# Prints "URI SUITE..." per `deb` entry of the apt sources, in the order apt reads them.
apt_entries() {
  local f
  local etc=${URO_REC_APT_ETC:-/etc/apt}
  for f in "$etc/sources.list" "$etc"/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    # deb [options] URI SUITE COMPONENT...
    sed -e 's/#.*//' -e 's/\[[^]]*\]//' "$f" | awk '$1 == "deb" { print $2, $3 }'
  done
  for f in "$etc"/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    # deb822 stanzas: Types, URIs, Suites (Enabled: no skips one); blank lines separate them.
    awk 'function flush() { if (types ~ /(^| )deb( |$)/ && enabled != "no")
                              for (i = 1; i <= nu; i++) print uris[i], suites
                            types = ""; suites = ""; nu = 0; enabled = "" }
         /^[ \t]*#/ { next }
         /^[ \t]*$/ { flush(); next }
         tolower($1) == "types:"   { $1 = ""; types = $0 }
         tolower($1) == "uris:"    { for (i = 2; i <= NF; i++) uris[++nu] = $i }
         tolower($1) == "suites:"  { $1 = ""; suites = $0 }
         tolower($1) == "enabled:" { enabled = tolower($2) }
         END { flush() }' "$f"
  done
}

mirror() {
  local codename
  codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
  apt_entries | awk -v c="$codename" '{ for (i = 2; i <= NF; i++) if ($i == c) { print $1; exit } }'
}

make_root() {
  local suite=$1 root=$2
  shift 2
  local url want
  url=$(mirror)
  [ -n "$url" ] || { echo "debian_root.sh: no Debian mirror in /etc/apt/sources*" >&2; exit 1; }
  want=$(printf '%s\n' "suite $suite" "mirror $url" "$(printf '%s\n' "$@" | sort -u)")
  if [ -f "$root/.uro_rec_root" ] && [ "$(cat "$root/.uro_rec_root")" = "$want" ]; then
    return 0
  fi
  command -v debootstrap >/dev/null || apt-get install -y -qq debootstrap >/dev/null
  echo "debian_root.sh: debootstrap $suite into $root (a few minutes, once)" >&2
  rm -rf "$root"
  local include=""
  [ $# -gt 0 ] && include="--include=$(IFS=,; echo "$*")"
  debootstrap --variant=minbase $include "$suite" "$root" "$url" >/dev/null
  # What the image would not carry: downloaded .debs and the package lists.
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
  printf '%s\n' "$want" >"$root/.uro_rec_root"
}

run_in_root() {
  local root=$1
  shift
  unshare -m --propagation private -- sh -c '
    root=$1; shift
    mount -t proc proc "$root/proc" && mount --rbind /dev "$root/dev" &&
      exec chroot "$root" /usr/bin/env -i PATH=/usr/local/bin:/usr/bin:/bin HOME=/root \
        LANG=C.UTF-8 "$@"' sh "$root" "$@"
}

case "${1:-}" in
  make) shift; [ $# -ge 2 ] || { echo "usage: debian_root.sh make SUITE ROOT [PACKAGE...]" >&2; exit 2; }
        make_root "$@" ;;
  run) shift; [ $# -ge 2 ] || { echo "usage: debian_root.sh run ROOT COMMAND..." >&2; exit 2; }
       run_in_root "$@" ;;
  mirror) mirror ;;
  *) echo "usage: debian_root.sh make SUITE ROOT [PACKAGE...] | run ROOT COMMAND... | mirror" >&2
     exit 2 ;;
esac
