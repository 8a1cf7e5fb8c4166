#!/usr/bin/env bash
# scripts/clean_debian.sh VENV: `make check-clean-debian`, deploy/Dockerfile's final stage
# proven without Docker (none runs on these machines).
#
#   1. A clean Debian 12 root (scripts/debian_root.sh: debootstrap minbase, the mirror from this
#      machine's apt sources), kept in $URO_REC_BOOKWORM (default /var/tmp/uro_rec_bookworm),
#      with exactly deploy/runtime-packages, the list the Dockerfile installs, plus, for the
#      test only, Debian's erlang-base (escript, to run the replay harness; the image itself
#      runs uro's release, which brings its own ERTS).
#   2. The installed tree in it at /opt/uro_recommender (scripts/install.sh, as the Dockerfile's
#      `make install`; the virtualenv hard-linked when on the same file system, else copied).
#   3. In the root: --paths (everything found beside the executable), --check (every model
#      family imports with only those packages), no shared library of the tree left unresolved,
#      the replay sessions, and one database round trip (test/deploy/db_roundtrip.session:
#      schema, train from SQL, export, read back) against the host's PostgreSQL on
#      127.0.0.1:5432 (the root shares the network), in a database of its own, dropped after.
#
# As root. Minutes the first time (debootstrap), about a minute after.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
venv=${1:?usage: clean_debian.sh VENV}
root=${URO_REC_BOOKWORM:-/var/tmp/uro_rec_bookworm}
pg=${URO_REC_TEST_PG:-postgresql://postgres@127.0.0.1:5432}
in_root() { bash "$here/scripts/debian_root.sh" run "$root" "$@"; }
step() { printf 'clean-debian: %-58s %4d s\n' "$1" $(($(date +%s) - t0)); }
t0=$(date +%s)

mapfile -t runtime < <(sed -e 's/#.*//' -e '/^[[:space:]]*$/d' "$here/deploy/runtime-packages" | awk '{print $1}')
bash "$here/scripts/debian_root.sh" make bookworm "$root" "${runtime[@]}" erlang-base
step "root: ${#runtime[@]} runtime packages + erlang-base (test only)"

rm -rf "$root/opt/uro_recommender" "$root/tmp/check"
if ! bash "$here/scripts/install.sh" "$root/opt/uro_recommender" "$venv" link 2>/dev/null; then
  bash "$here/scripts/install.sh" "$root/opt/uro_recommender" "$venv" copy
fi
mkdir -p "$root/tmp/check"
cp "$here"/test/replay/replay.escript "$here"/test/replay/*.session "$here"/test/deploy/*.session "$root/tmp/check/"
step "installed tree in /opt/uro_recommender"

exe=/opt/uro_recommender/uro_recommender
in_root "$exe" --paths >"$root/tmp/check/paths.txt" ||
  { echo "clean-debian: FAIL: the port does not start in the root" >&2; exit 1; }
for want in "python dir  /opt/uro_recommender/python   (by <exe_dir>/python)" \
            "virtualenv  /opt/uro_recommender/venv   (by <exe_dir>/venv)" \
            "SQL files   /opt/uro_recommender/sql   (by <python_dir>/../sql)"; do
  grep -q -x -F "  $want" "$root/tmp/check/paths.txt" ||
    { cat "$root/tmp/check/paths.txt"; echo "clean-debian: FAIL: --paths lacks: $want" >&2; exit 1; }
done
step "--paths: python/, venv/, sql/ beside the executable"

# Every ELF file of the tree: no library it needs may be missing from the root. A library
# that ldd cannot place but that the tree holds (auditwheel's bundled numpy.libs/, TF's own
# framework) is loaded in-process by the module that needs it: not missing.
missing=$(in_root sh -c 'find /opt/uro_recommender -type f \( -name "*.so*" -o -name uro_recommender \) |
  while read -r f; do ldd "$f" 2>/dev/null | sed -n "s|^\t\(.*\) => not found|\1|p"; done | sort -u |
  while read -r lib; do [ -n "$(find /opt/uro_recommender -name "$lib" -print -quit)" ] || echo "$lib"; done')
[ -z "$missing" ] || { echo "clean-debian: FAIL: libraries missing from the root: $missing" >&2; exit 1; }
step "ldd: every library the tree needs is in the root or the tree"

in_root "$exe" --check --model-dir /tmp/check/models >"$root/tmp/check/check.txt" ||
  { cat "$root/tmp/check/check.txt"; echo "clean-debian: FAIL: --check" >&2; exit 1; }
step "--check: $(grep -c '^ok ' "$root/tmp/check/check.txt") checks ok, every model family imports"

in_root sh -c 'cd /tmp/check && escript replay.escript '"$exe"' $(ls *.session | grep -v db_roundtrip)'
step "replay sessions"

db="uro_rec_clean_$$"
psql "$pg/postgres" -qc "CREATE DATABASE $db"
trap 'psql "$pg/postgres" -qc "DROP DATABASE IF EXISTS $db" || true' EXIT
in_root env DATABASE_URL="$pg/$db" sh -c 'cd /tmp/check && escript replay.escript '"$exe"' db_roundtrip.session'
step "database round trip against the host's PostgreSQL"
echo "clean-debian: ok"
