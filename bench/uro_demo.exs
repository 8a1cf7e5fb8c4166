# make demo: uro's story, on uro-shaped tables, through the Elixir client uro uses.
#
#   uro's users, worlds (`maps`) and avatars -> visits recorded with
#   UroRecommender.Interactions.record/4 -> a scheduled run (train from SQL on the training
#   port, the gate against most-popular, publish, export) -> a user's visited worlds next to
#   the worlds recommended, read back by SQL joined to maps -> forget_user -> a run on data
#   where nothing beats most-popular, refused by the gate -> latency of recommend calls.
#
#   DATABASE_URL=... URO_REC_PORT=priv/uro_recommender mix run bench/uro_demo.exs
#
# scripts/demo.sh sets DATABASE_URL (a throwaway local cluster when none is given). The demo
# creates a database of its own on that server (CREATE DATABASE, from the database the URL
# names) and drops it at the end: nothing of yours is touched.
Code.require_file("../elixir_stub/test/support/uro_fixture.ex", __DIR__)

defmodule Demo do
  alias UroRecommender.{Interactions, Models, Scheduler, UroFixture}

  @worlds "worlds_you_may_like"

  def main do
    # The port's per-epoch lines and banners arrive at :debug (docs/OPERATIONS.md); the story
    # is told at :info.
    Logger.configure(level: :info)
    t0 = System.monotonic_time(:millisecond)
    base = System.fetch_env!("DATABASE_URL")
    db = UroFixture.create_database("demo", base)

    IO.puts(
      "database: #{URI.parse(db).path |> String.trim_leading("/")} (created for the demo, dropped at the end)"
    )

    # The model directory: this run's own, removed at the end.
    dir =
      Path.join(
        System.tmp_dir!(),
        "uro_rec_demo_#{System.pid()}_#{System.unique_integer([:positive])}"
      )

    try do
      uro = UroFixture.create_uro_schema(db, 600)
      start(db, dir)
      show_catalogue(uro)
      record(UroFixture.visits(uro))
      first_run(db, uro)
      forget(db, uro)
      refused_run(db, uro)
      latency(uro)
    after
      UroFixture.drop_database(db, base)
      File.rm_rf(dir)
    end

    IO.puts(
      "\ndemo done in #{Float.round((System.monotonic_time(:millisecond) - t0) / 1000, 1)} s"
    )
  end

  defp start(db, dir) do
    # Only signed versions travel through the registry (publish, load from the database): a
    # key every node shares. uro keeps its own in a secret (docs/OPERATIONS.md); the demo's is
    # random and thrown away with the model directory.
    File.mkdir_p!(dir)
    key_file = Path.join(dir, "model.key")
    File.write!(key_file, Base.encode16(:crypto.strong_rand_bytes(32), case: :lower) <> "\n")

    {:ok, _} =
      Supervisor.start_link(
        [
          {UroRecommender,
           model_dir: dir,
           pool_size: 2,
           database_url: db,
           timeout: 120_000,
           model_key_file: key_file},
          # A buffer that takes the demo's bursts whole (the default, 10_000, would drop some).
          {Interactions, observe: %{world: [@worlds]}, max_buffer: 50_000}
        ],
        strategy: :one_for_one
      )

    {:ok, files} = UroRecommender.apply_schema(schema: :uro)
    # After the tables exist (in uro, the migration runs before the application starts).
    {:ok, _} =
      Supervisor.start_link([{Scheduler, check_every: 3_600_000}], strategy: :one_for_one)

    IO.puts(
      "tables: uro's users, maps, avatars, props (UUID keys); apply_schema(schema: :uro): #{Enum.join(files, ", ")}"
    )
  end

  defp show_catalogue(uro) do
    public = Enum.filter(uro.worlds, & &1.public)

    IO.puts(
      "\n== uro's content: #{length(uro.users)} users, #{length(public)} public worlds and " <>
        "#{length(uro.worlds) - length(public)} private ones, #{length(uro.avatars)} avatars, in six themes"
    )

    for t <- 0..5 do
      names = for w <- public, w.theme == t, w.rank <= 3, do: w.name
      IO.puts("  #{String.pad_trailing(UroFixture.theme(t), 14)} #{Enum.join(names, ", ")}, ...")
    end
  end

  defp record(visits) do
    before = Interactions.stats()
    t0 = System.monotonic_time(:microsecond)
    for {user, kind, item} <- visits, do: :ok = Interactions.record(user.id, kind, item.id)
    accepted_us = System.monotonic_time(:microsecond) - t0
    {:ok, stats} = Interactions.flush()
    written_us = System.monotonic_time(:microsecond) - t0
    worlds = Enum.count(visits, &match?({_, :world, _}, &1))

    IO.puts(
      "\n== #{length(visits)} interactions (#{worlds} world visits, the rest avatar selections) " <>
        "recorded with Interactions.record/4\n  accepted in #{div(accepted_us, 1000)} ms " <>
        "(#{Float.round(accepted_us / length(visits), 2)} us a call), all written " <>
        "#{div(written_us, 1000)} ms after the first: #{stats.written - before.written} rows in " <>
        "#{stats.flushes - before.flushes} flushes, #{stats.dropped - before.dropped} dropped"
    )
  end

  defp first_run(db, uro) do
    IO.puts("\n== the scheduled run (Scheduler.run_now/0: train from SQL, gate, publish, export)")
    {:ok, runs} = Scheduler.run_now()
    Enum.each(runs, &show_run/1)
    user = Enum.at(uro.users, 4)
    show_user(db, user)

    {:ok, popular} = Models.popular(5)
    IO.puts("\n  popular now (Models.popular/2): #{Enum.join(names(db, "maps", popular), ", ")}")
    avatar = Enum.find(uro.avatars, &(&1.public and &1.theme == 1))
    {:ok, similar} = UroRecommender.similar_items("avatars_like_this", avatar.id, 4)

    IO.puts(
      "  avatars like \"#{avatar.name}\": #{Enum.join(names(db, "avatars", Enum.map(similar, &elem(&1, 0))), ", ")}"
    )
  end

  defp show_run(run) do
    scores =
      case run do
        %{metrics: %{ndcg: m}, baseline: %{ndcg: b}} ->
          " ndcg@10 #{f(m)} against most-popular #{f(b)}" <>
            if(run.current_metrics[:ndcg],
              do: " and the served version #{f(run.current_metrics.ndcg)}",
              else: ""
            )

        _ ->
          ""
      end

    IO.puts(
      "  #{String.pad_trailing(run.model, 20)} version #{run[:version]}: #{String.upcase(run.decision)}#{scores}"
    )

    IO.puts("  #{String.pad_trailing("", 20)} (#{run.reason}; train #{run[:train_ms]} ms)")
  end

  defp show_user(db, user) do
    visited =
      UroFixture.psql!(
        db,
        "SELECT m.name, count(*) FROM uro_rec_interactions AS i JOIN maps AS m " <>
          "ON m.id = i.item_id WHERE i.user_id = '#{user.id}' GROUP BY m.name ORDER BY min(i.created_at)"
      )

    sql = """
    SELECT r.rank, m.name, round(r.score::numeric, 3) FROM uro_rec_recommendations AS r
      JOIN maps AS m ON m.id = r.item_id::UUID
     WHERE r.model = 'worlds_you_may_like' AND r.user_id = '#{user.id}' ORDER BY r.rank LIMIT 10
    """

    IO.puts("\n== #{user.name}, who likes #{UroFixture.theme(user.theme)} worlds")

    IO.puts(
      "  visited (first visit first, visits):\n    " <>
        Enum.map_join(visited, "\n    ", fn [n, c] -> "#{n} (#{c})" end)
    )

    IO.puts(
      "  worlds you may like, read back from the exported table:\n  " <>
        String.replace(sql, "\n", "\n  ")
    )

    for [rank, name, score] <- UroFixture.psql!(db, sql),
        do:
          IO.puts("    #{String.pad_leading(rank, 2)}. #{String.pad_trailing(name, 24)} #{score}")
  end

  defp forget(db, uro) do
    user = Enum.at(uro.users, 9)
    {:ok, gone} = Interactions.forget_user(user.id)

    [[left]] =
      UroFixture.psql!(
        db,
        "SELECT count(*) FROM uro_rec_recommendations WHERE user_id = '#{user.id}'"
      )

    IO.puts(
      "\n== Interactions.forget_user(#{user.name}): #{gone.interactions} interactions and " <>
        "#{gone.recommendations} exported rows deleted (#{gone.buffered} still buffered); rows left: #{left}"
    )
  end

  defp refused_run(db, uro) do
    UroFixture.psql!(db, "DELETE FROM uro_rec_interactions")
    users = Enum.reject(uro.users, &(&1 == Enum.at(uro.users, 9)))

    record(UroFixture.visits(%{uro | users: users}, taste: false, seed: 2, visits: {8, 16}))

    IO.puts(
      "  (every world visit now follows global popularity alone: nothing can beat most-popular)"
    )

    IO.puts("\n== the next run")
    {:ok, runs} = Scheduler.run_now()
    Enum.each(runs, &show_run/1)
    [[v]] = UroFixture.psql!(db, "SELECT version FROM uro_rec_served WHERE name = '#{@worlds}'")

    IO.puts(
      "  #{@worlds} is still served at version #{v}; the refused version stays on disk, unserved"
    )

    IO.puts("\n  uro_rec_runs:")

    for row <-
          UroFixture.psql!(
            db,
            "SELECT model, version, decision, reason FROM uro_rec_runs ORDER BY started_at"
          ),
        do: IO.puts("    " <> Enum.join(row, " | "))
  end

  defp latency(uro) do
    users = uro.users |> Enum.map(& &1.id) |> List.to_tuple()
    pick = fn i -> elem(users, rem(i * 7919, tuple_size(users))) end
    for i <- 1..100, do: {:ok, _} = UroRecommender.recommend(@worlds, pick.(i), 10)

    lat =
      for i <- 1..1000 do
        t = System.monotonic_time(:nanosecond)
        {:ok, [_ | _]} = UroRecommender.recommend(@worlds, pick.(i), 10)
        (System.monotonic_time(:nanosecond) - t) / 1000
      end
      |> Enum.sort()

    p = fn q -> Float.round(Enum.at(lat, min(999, round(q * 10))), 1) end
    IO.puts("\n== 1000 UroRecommender.recommend/4 calls through the pool (N = 10), microseconds")

    IO.puts(
      "  p50 #{p.(50)}   p90 #{p.(90)}   p99 #{p.(99)}   max #{Float.round(List.last(lat), 1)}"
    )
  end

  defp names(db, table, ids) do
    list = Enum.map_join(ids, ", ", &"'#{&1}'")

    by_id =
      Map.new(
        UroFixture.psql!(db, "SELECT id::TEXT, name FROM #{table} WHERE id IN (#{list})"),
        &List.to_tuple/1
      )

    Enum.map(ids, &by_id[&1])
  end

  defp f(x), do: :erlang.float_to_binary(x, decimals: 4)
end

Demo.main()
