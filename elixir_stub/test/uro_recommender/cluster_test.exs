defmodule UroRecommender.ClusterTest do
  # uro runs several nodes. Three BEAM nodes on this machine share one PostgreSQL database:
  # A (this test's node) trains and publishes; B, a peer connected before the publish, must
  # serve each new version at once (the :pg broadcast: its own poll is an hour), with none of
  # its calls dropped during the swap; C, started after the publish, must load the served
  # version from the database on its own; and B cannot take the lease while A holds it.
  use ExUnit.Case, async: false

  import ExUnit.CaptureLog
  import UroRecommender.TestHelpers

  alias UroRecommender.{Interactions, PeerStack, Scheduler, UroFixture}

  @moduletag timeout: 600_000
  @worlds "worlds_you_may_like"
  @pool UroRecommender.ClusterPool
  # One model, so that a cycle is short.
  @models %{"avatars_like_this" => false, "popular_now" => false}

  setup_all do
    unless Node.alive?() do
      {_, 0} = System.cmd("epmd", ["-daemon"])

      {:ok, _} =
        Node.start(:"uro_rec_a_#{System.unique_integer([:positive])}@127.0.0.1", :longnames)

      on_exit(fn -> Node.stop() end)
    end

    db = UroFixture.create_database("cluster")
    on_exit(fn -> UroFixture.drop_database(db) end)
    uro = UroFixture.create_uro_schema(db, 160)

    start_supervised!(
      {UroRecommender,
       name: @pool,
       port_path: port_path(),
       model_dir: tmp_dir("cluster_a"),
       pool_size: 1,
       timeout: 120_000,
       database_url: db,
       model_key_file: model_key_file()}
    )

    {:ok, _} = UroRecommender.apply_schema(pool: @pool, schema: :uro)

    start_supervised!(
      {Interactions, name: UroRecommender.ClusterRecorder, pool: @pool, observe: %{}}
    )

    start_supervised!(
      {Scheduler,
       name: UroRecommender.ClusterScheduler,
       pool: @pool,
       models: @models,
       check_every: 3_600_000,
       poll: 3_600_000,
       lease: "uro_cluster_test"}
    )

    %{db: db, uro: uro}
  end

  defp follower(node, db, tag, poll) do
    :erpc.call(node, PeerStack, :start, [
      [
        {UroRecommender,
         name: @pool,
         port_path: port_path(),
         model_dir: tmp_dir(tag),
         pool_size: 1,
         timeout: 120_000,
         database_url: db,
         model_key_file: model_key_file()},
        {Scheduler,
         name: UroRecommender.ClusterScheduler,
         pool: @pool,
         models: @models,
         enabled: false,
         poll: poll,
         lease: "uro_cluster_test"}
      ]
    ])
  end

  test "every node serves what one node publishes: at once when connected, at start when late",
       %{db: db, uro: uro} do
    {_peer_b, b} = PeerStack.start_peer(:uro_rec_b)
    follower(b, db, "cluster_b", 3_600_000)

    # v1: B has no model yet, and is told of it by A's broadcast.
    record(uro, 1)
    assert [%{decision: "published", version: 1}] = run_now()
    seen = :erpc.call(b, PeerStack, :wait_served, [@pool, @worlds, 1, 30_000])
    assert seen, "node B did not serve version 1 within 30 s"
    bound_ms = (seen - served_at(db)) / 1000
    IO.puts("\n  cluster: node B served version 1 #{round(bound_ms)} ms after it was published")

    # v2, while B answers recommend calls one after the other: none is dropped.
    users = Enum.map(uro.users, & &1.id)

    hammer =
      Task.async(fn -> :erpc.call(b, PeerStack, :hammer, [@pool, @worlds, users, 2, 120_000]) end)

    record(uro, 2)
    assert [%{decision: "published", version: 2}] = run_now()
    result = Task.await(hammer, 180_000)
    assert %{swapped: true, errors: []} = result
    assert result.ok > 200

    IO.puts(
      "  cluster: node B answered #{result.ok} recommend calls across the swap to version 2, none dropped"
    )

    # C starts after the publish: it loads the served version at start, from the database.
    {_peer_c, c} = PeerStack.start_peer(:uro_rec_c)
    follower(c, db, "cluster_c", 3_600_000)
    assert :erpc.call(c, PeerStack, :wait_served, [@pool, @worlds, 2, 60_000])

    assert {:ok, [_ | _]} =
             :erpc.call(c, UroRecommender, :recommend, [@worlds, hd(users), 5, [pool: @pool]])

    # One scheduler per cluster. A cycle just ended, so no node may start one before the
    # interval has passed; and while a node holds the lease, another's run_now is refused.
    lease = fn holder, opts ->
      UroRecommender.Pool.call(@pool, {:lease, "uro_cluster_test", holder, opts})
    end

    assert {:ok, %{held: false, holder: nil}} = lease.("c", %{every_ms: 3_600_000})
    assert {:ok, %{held: true}} = lease.("a-by-hand", %{ttl_ms: 60_000})

    assert {:error, {:held_by, "a-by-hand"}} =
             :erpc.call(b, Scheduler, :run_now, [UroRecommender.ClusterScheduler, 30_000])

    assert {:ok, %{held: false}} = lease.("a-by-hand", %{release: true})
  end

  defp run_now do
    capture_log(fn -> send(self(), Scheduler.run_now(UroRecommender.ClusterScheduler)) end)
    assert_received {:ok, runs}
    runs
  end

  defp record(uro, seed) do
    for {user, kind, item} <- UroFixture.visits(uro, seed: seed, visits: {4, 8}) do
      :ok =
        Interactions.record(user.id, kind, item.id, 1.0, server: UroRecommender.ClusterRecorder)
    end

    {:ok, _} = Interactions.flush(UroRecommender.ClusterRecorder)
  end

  defp served_at(db) do
    [[us]] =
      UroFixture.psql!(
        db,
        "SELECT CAST(extract(epoch FROM served_at) * 1000000 AS INT8) " <>
          "FROM uro_rec_served WHERE name = '#{@worlds}'"
      )

    String.to_integer(us)
  end
end
