#!/usr/bin/env bash
# test/host/host_test.sh: uro_recommender as a new user's Mix project gets it (`make test-host`).
#
# In a temporary directory, from a fresh copy of this checkout (its tracked and new files,
# nothing built):
#   1. a `mix new --sup` host with one dependency line, {:uro_recommender, path: ...}, compiles
#      without a warning and builds the port; its supervision tree starts
#      {UroRecommender, model_dir: ...}; a task in that tree trains on rows and recommends;
#   2. the same host as `mix release`, copied elsewhere and run with the checkout and the
#      host's _build hidden;
#   3. hosts that also have an :oban dependency (the stand-in, elixir_stub/test/fixtures/oban),
#      listed before and after uro_recommender: UroRecommender.Oban.TrainWorker is compiled
#      and performs a job (training from SQL on the local PostgreSQL);
#   4. a host with the git form of the dependency line compiles it and gets a port that serves.
# The virtualenv is the cached one (make setup); the PostgreSQL server is the local one.
set -euo pipefail
here=$(cd "$(dirname "$0")/../.." && pwd)
db=${URO_REC_TEST_DATABASE_URL:-postgresql://postgres@127.0.0.1:5432/test}
work=$(mktemp -d "${TMPDIR:-/tmp}/uro_rec_host.XXXXXX")
passed=0
failed=0
keep=0

finish() {
  local status=$?
  # A command that failed under set -e without saying so is a failure too.
  if [ "$status" != 0 ] && [ "$failed" = 0 ]; then failed=1; keep=1; fi
  if [ "$keep" = 1 ]; then echo "host test: left $work for a look"; else rm -rf "$work"; fi
  echo "host test: $passed passed, $failed failed"
}
trap finish EXIT

step() { echo; echo "== host test: $*"; }
ok() { passed=$((passed + 1)); echo "ok: $*"; }
fail() { failed=$((failed + 1)); keep=1; echo "FAILED: $*"; exit 1; }

# A command's output in a file; the command must succeed and, with `quiet`, print no warning.
run() {
  local log=$1 quiet=$2; shift 2
  if ! "$@" >"$log" 2>&1; then cat "$log"; fail "$*"; fi
  if [ "$quiet" = quiet ] && grep -qi "warning" "$log"; then
    grep -i -B2 -A4 "warning" "$log"; fail "warnings from: $*"
  fi
}

# ---- a fresh copy of the checkout ------------------------------------------------------------
step "a fresh copy of $here"
src=$work/uro_recommender
mkdir -p "$src"
(cd "$here" && git ls-files -z -co --exclude-standard) |
  while IFS= read -r -d '' f; do
    if [ -e "$here/$f" ] || [ -L "$here/$f" ]; then
      (cd "$here" && cp -P --parents -- "$f" "$src/")
    fi
  done
[ ! -e "$src/priv/uro_recommender" ] || fail "the copy already has a port executable"

# ---- 1. the host ---------------------------------------------------------------------------
# Writes a `mix new --sup` host in $work/$1 whose deps are the rest of the arguments.
new_host() {
  local name=$1; shift
  (cd "$work" && mix new "$name" --sup >/dev/null)
  local deps
  deps=$(printf '%s, ' "$@")
  DEPS="${deps%, }" perl -0pi -e 's/defp deps do\n.*?\n  end/defp deps do\n    [$ENV{DEPS}]\n  end/s' \
    "$work/$name/mix.exs"
}

step "a new host with the one dependency line; mix compile"
new_host host '{:uro_recommender, path: "../uro_recommender"}'
host=$work/host
grep -q '{:uro_recommender, path: "../uro_recommender"}' "$host/mix.exs" || fail "deps not written"

# The host's supervision tree: the pool, then a task that uses it and stops the node.
perl -0pi -e 's/children = \[\n.*?\n    \]/children = [\n      {UroRecommender, model_dir: System.fetch_env!("HOST_MODEL_DIR"), pool_size: 1},\n      Host.Check\n    ]/s' \
  "$host/lib/host/application.ex"
grep -q "Host.Check" "$host/lib/host/application.ex" || fail "application.ex not written"
cat >"$host/lib/host/check.ex" <<'EOF'
defmodule Host.Check do
  # Last in the host's supervision tree: trains on rows and recommends through the pool the
  # tree started (the calls wait for its ports to be ready), prints, stops the node.
  use Task, restart: :temporary

  def start_link(_), do: Task.start_link(&run/0)

  def run do
    rows = for u <- 1..40, i <- 1..25, rem(u * 7 + i * 3, 4) == 0, do: {"u#{u}", "i#{i}", 1.0}
    spec = %{algorithm: "ALS", data: {:rows, rows}, params: %{n_epochs: 2, embed_size: 8}}
    {:ok, %{version: 1}} = UroRecommender.train("host_als", spec)
    {:ok, [_, _, _] = items} = UroRecommender.recommend("host_als", "u1", 3)
    {:ok, %{serving: [%{state: :ready}], training: %{state: :ready}}} = UroRecommender.status()
    priv = :code.priv_dir(:uro_recommender)
    IO.puts("host check: ok #{inspect(items)} from #{priv}")
    System.stop(0)
  rescue
    e ->
      IO.puts("host check: FAILED " <> Exception.format(:error, e, __STACKTRACE__))
      System.halt(1)
  end
end
EOF

run "$work/compile.log" quiet env -C "$host" mix compile
[ -x "$src/priv/uro_recommender" ] || fail "mix compile did not build the port"
priv=$host/_build/dev/lib/uro_recommender/priv
for f in uro_recommender python/uro_rec/commands.py sql/001_interactions.sql; do
  [ -e "$priv/$f" ] || fail "$priv/$f missing after mix compile"
done
grep -q "cc .*-o priv/uro_recommender" "$work/compile.log" || fail "the port was not built by mix compile"
ok "mix compile: no warning, the port built, priv/ laid out"

run "$work/compile2.log" quiet env -C "$host" mix compile
! grep -q "cc " "$work/compile2.log" || fail "a second mix compile rebuilt the port"
ok "a second mix compile builds nothing"

step "the host runs (mix run): pool in its tree, train on rows, recommend"
run "$work/run.log" noisy env -C "$host" HOST_MODEL_DIR="$work/models_dev" timeout 300 mix run --no-halt
grep -q "host check: ok" "$work/run.log" || { cat "$work/run.log"; fail "mix run"; }
ok "$(grep 'host check: ok' "$work/run.log")"

# ---- 2. the release ------------------------------------------------------------------------
step "mix release, copied, run with the checkout and the host's _build hidden"
run "$work/release.log" quiet env -C "$host" MIX_ENV=prod mix release --overwrite
cp -a "$host/_build/prod/rel/host" "$work/copied"
mv "$src" "$src.hidden"
mv "$host/_build" "$host/_build.hidden"
rel_status=0
RELEASE_DISTRIBUTION=none HOST_MODEL_DIR="$work/models_rel" timeout 300 "$work/copied/bin/host" start >"$work/rel_run.log" 2>&1 ||
  rel_status=$?
mv "$src.hidden" "$src"
mv "$host/_build.hidden" "$host/_build"
if [ "$rel_status" != 0 ] || ! grep -q "host check: ok" "$work/rel_run.log"; then
  cat "$work/rel_run.log"; fail "the release (exit $rel_status)"
fi
grep -q "host check: ok .* from $work/copied/lib/uro_recommender-" "$work/rel_run.log" ||
  fail "the release did not use its own priv/"
ok "release: $(grep 'host check: ok' "$work/rel_run.log")"

# ---- 3. with Oban, in either order ---------------------------------------------------------
oban='{:oban, path: "../uro_recommender/elixir_stub/test/fixtures/oban"}'
uro='{:uro_recommender, path: "../uro_recommender"}'
check_oban() {
  local name=$1
  run "$work/$name.compile.log" quiet env -C "$work/$name" mix compile
  # A job as Oban would perform it, against a pool on the default name.
  local script='
    {:ok, _} = Supervisor.start_link([{UroRecommender, model_dir: System.fetch_env!("HOST_MODEL_DIR"),
      pool_size: 1, database_url: System.fetch_env!("HOST_DB")}], strategy: :one_for_one)
    true = Code.ensure_loaded?(UroRecommender.Oban.TrainWorker)
    job = UroRecommender.Oban.TrainWorker.new(%{name: "oban_host", model_params: %{n_epochs: 1},
      query: "SELECT g % 20, (g * 7) % 15, 1.0::FLOAT8 FROM generate_series(1, 300) g"})
    {:ok, %{"train" => %{"ok" => true, "result" => %{"version" => 1}}}} =
      UroRecommender.Oban.TrainWorker.perform(job)
    IO.puts("oban check: ok")'
  run "$work/$name.run.log" noisy env -C "$work/$name" HOST_MODEL_DIR="$work/models_$name" \
    HOST_DB="$db" timeout 300 mix run -e "$script"
  grep -q "oban check: ok" "$work/$name.run.log" || { cat "$work/$name.run.log"; fail "$name"; }
}

step "a host with :oban listed first"
new_host host_oban_first "$oban" "$uro"
check_oban host_oban_first
ok "oban first: TrainWorker compiled and performed"

step "a host with :oban listed last"
new_host host_oban_last "$uro" "$oban"
check_oban host_oban_last
ok "oban last: TrainWorker compiled and performed"

# ---- 4. the git form -----------------------------------------------------------------------
step "a host with the git form of the dependency line"
git_src=$work/uro_recommender_git
cp -a "$src" "$git_src"
rm -f "$git_src/priv/uro_recommender" "$git_src/priv/echo_port"
rm -rf "$git_src/_build"
(cd "$git_src" && git init -q && git add -A && git -c user.name=t -c user.email=t@t commit -qm t)
new_host host_git "{:uro_recommender, git: \"file://$git_src\"}"
run "$work/git.deps.log" noisy env -C "$work/host_git" mix deps.get
run "$work/git.compile.log" quiet env -C "$work/host_git" mix compile
[ -x "$work/host_git/_build/dev/lib/uro_recommender/priv/uro_recommender" ] || fail "git: no port"
script='
  {:ok, _} = Supervisor.start_link([{UroRecommender, model_dir: System.fetch_env!("HOST_MODEL_DIR"),
    pool_size: 1}], strategy: :one_for_one)
  {:ok, :pong} = UroRecommender.call(:ping)
  IO.puts("git check: ok")'
run "$work/git.run.log" noisy env -C "$work/host_git" HOST_MODEL_DIR="$work/models_git" \
  timeout 120 mix run -e "$script"
grep -q "git check: ok" "$work/git.run.log" || { cat "$work/git.run.log"; fail "git"; }
ok "git dependency: compiled, built the port in deps/, served"
