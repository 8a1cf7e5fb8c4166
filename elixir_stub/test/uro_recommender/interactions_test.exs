defmodule UroRecommender.InteractionsTest do
  # UroRecommender.Interactions against the real port and PostgreSQL: what record/4 accepts,
  # what a full buffer does, what a crash loses and what an orderly stop keeps, and that a
  # flush sent twice writes its rows once.
  use ExUnit.Case, async: false

  import ExUnit.CaptureLog
  import UroRecommender.TestHelpers

  alias UroRecommender.{Interactions, UroFixture, UUID}

  @moduletag timeout: 300_000
  @pool UroRecommender.RecorderPool

  setup_all do
    db = UroFixture.create_database("recorder")
    on_exit(fn -> UroFixture.drop_database(db) end)
    uro = UroFixture.create_uro_schema(db, 20)
    # The tables first (in uro, the migration runs before the application starts): a recorder
    # whose flush found no table would rightly drop its rows.
    {:ok, schema} = start_supervised(pool_spec(db, UroRecommender.RecorderSchemaPool))

    capture_log(fn ->
      {:ok, _} =
        UroRecommender.apply_schema(pool: UroRecommender.RecorderSchemaPool, schema: :uro)
    end)

    Supervisor.stop(schema)
    %{db: db, uro: uro, pool_spec: pool_spec(db, @pool)}
  end

  defp pool_spec(db, name) do
    {UroRecommender,
     name: name,
     port_path: port_path(),
     model_dir: tmp_dir("recorder"),
     pool_size: 1,
     database_url: db}
  end

  defp start_pool(spec), do: start_supervised!(spec)

  defp recorder(name, opts) do
    spec = {Interactions, [name: name, pool: @pool, observe: %{}] ++ opts}
    start_supervised!(Supervisor.child_spec(spec, id: name))
  end

  test "arguments are checked before anything is buffered", %{uro: uro} do
    recorder(:checked, flush_ms: 60_000)
    user = hd(uro.users).id

    assert {:error, {:badarg, "user_id must be a UUID string" <> _}} =
             Interactions.record("nope", :world, UUID.generate(), 1.0, server: :checked)

    assert {:error, {:badarg, "kind must be one of" <> _}} =
             Interactions.record(user, :song, UUID.generate(), 1.0, server: :checked)

    assert {:error, {:badarg, "weight must be a number" <> _}} =
             Interactions.record(user, :world, UUID.generate(), "1", server: :checked)

    assert {:error, :not_started} =
             Interactions.record(user, :world, UUID.generate(), 1.0, server: :nobody)

    assert %{accepted: 0, pending: 0} = Interactions.stats(:checked)
  end

  test "a full buffer drops and counts, never blocks; what waited is written once the database is back",
       %{db: db, uro: uro, pool_spec: spec} do
    # No pool yet: every flush fails ({:error, :not_started}) and its rows go back to the buffer.
    recorder(:full, flush_ms: 50, flush_rows: 10, max_buffer: 100)
    user = Enum.at(uro.users, 1).id
    worlds = for w <- uro.worlds, w.public, do: w.id

    replies =
      for w <- Enum.take(Stream.cycle(worlds), 150),
          do: Interactions.record(user, :world, w, 1.0, server: :full)

    assert Enum.count(replies, &(&1 == :ok)) == 100
    assert Enum.count(replies, &(&1 == {:error, :full})) == 50
    assert %{accepted: 100, dropped: 50, pending: 100, written: 0} = Interactions.stats(:full)
    eventually(fn -> Interactions.stats(:full).failed_flushes > 0 end)
    # Failed flushes back off (50 ms doubling): a second brings a handful, not a hot loop.
    Process.sleep(1_000)
    assert Interactions.stats(:full).failed_flushes <= 10

    start_pool(spec)
    eventually(fn -> match?({:ok, %{pending: 0}}, Interactions.flush(:full)) end)
    assert %{written: 100, dropped: 50, rejected: 0} = Interactions.stats(:full)
    assert count(db, user) == 100
    assert :ok = Interactions.record(user, :world, hd(worlds), 1.0, server: :full)
  end

  test "a crash loses the unflushed buffer and nothing else; an orderly stop writes it",
       %{db: db, uro: uro, pool_spec: spec} do
    start_pool(spec)
    recorder(:crash, flush_ms: 60_000, flush_rows: 1_000)
    user = Enum.at(uro.users, 2).id
    world = Enum.find(uro.worlds, & &1.public).id

    record = fn n ->
      for _ <- 1..n, do: :ok = Interactions.record(user, :world, world, 1.0, server: :crash)
    end

    record.(5)
    assert {:ok, %{written: 5}} = Interactions.flush(:crash)
    record.(7)
    old = Process.whereis(:crash)
    Process.exit(old, :kill)
    new_pid(:crash, old)
    assert count(db, user) == 5

    record.(4)
    stop_supervised!(:crash)
    assert count(db, user) == 9
  end

  test "a flush sent twice writes its rows once; rows of users no longer there are skipped",
       %{db: db, uro: uro, pool_spec: spec} do
    start_pool(spec)
    user = Enum.at(uro.users, 3).id
    world = Enum.find(uro.worlds, & &1.public).id
    now = System.os_time(:microsecond) / 1_000_000
    rows = for id <- UUID.generate(3), do: {id, user, :world, world, 1.0, now}
    spec = %{ids: :uuid, users: "users"}

    assert {:ok, %{rows: 3, written: 3, skipped: 0}} =
             UroRecommender.call({:record_interactions, rows, spec}, pool: @pool)

    assert {:ok, %{written: 0, skipped: 3}} =
             UroRecommender.call({:record_interactions, rows, spec}, pool: @pool)

    gone = {UUID.generate(), UUID.generate(), :world, world, 1.0, now}

    assert {:ok, %{written: 0, skipped: 1}} =
             UroRecommender.call({:record_interactions, [gone], spec}, pool: @pool)

    assert {:error, {:badarg, "record_interactions: row 1 user must be a UUID" <> _}} =
             UroRecommender.call({:record_interactions, [put_elem(gone, 1, "x")], spec},
               pool: @pool
             )

    assert count(db, user) == 3
  end

  defp count(db, user) do
    [[n]] =
      UroFixture.psql!(db, "SELECT count(*) FROM uro_rec_interactions WHERE user_id = '#{user}'")

    String.to_integer(n)
  end
end
