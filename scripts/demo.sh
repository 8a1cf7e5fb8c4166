#!/usr/bin/env bash
# scripts/demo.sh: runs bench/uro_demo.exs (uro's story, through the Elixir client) against a
# database server.
#
# DATABASE_URL when given (the demo creates a database of its own there and drops it);
# otherwise a throwaway PostgreSQL cluster in a temporary directory, started here and stopped
# (and removed) on exit. `make setup` installs the server binaries (Debian's postgresql).
#   usage: scripts/demo.sh PORT_EXE
set -euo pipefail
exe=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
here=$(cd "$(dirname "$0")/.." && pwd)

if [ -z "${DATABASE_URL:-}" ]; then
  bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1 || true)
  if [ -z "$bindir" ] || [ ! -x "$bindir/initdb" ]; then
    echo "demo: no DATABASE_URL and no PostgreSQL server binaries (make setup installs them)" >&2
    exit 1
  fi
  dir=$(mktemp -d /tmp/uro_rec_demo_pg.XXXXXX)
  as_pg=()
  if [ "$(id -u)" -eq 0 ]; then chown postgres "$dir"; as_pg=(runuser -u postgres --); fi
  port=55432
  while (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do port=$((port + 1)); done
  stop() {
    "${as_pg[@]}" "$bindir/pg_ctl" -D "$dir/data" -m fast stop >/dev/null 2>&1 || true
    rm -rf "$dir"
  }
  trap stop EXIT
  "${as_pg[@]}" "$bindir/initdb" -D "$dir/data" -A trust -U postgres >/dev/null
  "${as_pg[@]}" "$bindir/pg_ctl" -D "$dir/data" -l "$dir/log" -w \
    -o "-p $port -k $dir -c listen_addresses=127.0.0.1" start >/dev/null
  export DATABASE_URL="postgresql://postgres@127.0.0.1:$port/postgres"
  echo "demo: throwaway PostgreSQL cluster on port $port (stopped and removed at exit)"
else
  echo "demo: using DATABASE_URL's server"
fi

cd "$here"
URO_REC_PORT="$exe" mix run bench/uro_demo.exs
