defmodule UroRecommender.PoolTest do
  # One pool (2 serving ports + the training port) for the module, through the public API.
  use ExUnit.Case, async: false

  import ExUnit.CaptureLog
  import UroRecommender.TestHelpers

  alias UroRecommender.{Pool, Port}

  @pool UroRecommender.TestPool
  @moduletag timeout: 300_000

  setup_all do
    dir = tmp_dir("pool")

    start_supervised!(
      {UroRecommender,
       name: @pool,
       port_path: port_path(),
       model_dir: dir,
       pool_size: 2,
       timeout: 60_000,
       env: [{"URO_REC_FAULTS", "1"}]}
    )

    capture_log(fn -> send(self(), UroRecommender.train("pooled", tiny_spec(), pool: @pool)) end)
    assert_received {:ok, %{version: 1}}
    %{dir: dir}
  end

  test "child_spec: one line in the host's supervisor" do
    spec = UroRecommender.child_spec(name: :some_pool)
    assert %{id: :some_pool, type: :supervisor, start: {Pool, :start_link, _}} = spec
  end

  test "train hot-swaps the version into every serving port" do
    # Other tests may have trained newer versions: all ports must agree with the pool.
    {"pooled", v} = List.keyfind(Pool.loaded(@pool), "pooled", 0)
    for i <- 1..2, do: assert({"pooled", v} in Port.loaded(Pool.port_name(@pool, i)))
    assert {:ok, [_, _, _, _, _]} = UroRecommender.recommend("pooled", 1, 5, pool: @pool)

    assert {:ok, %{3 => [_, _]}} =
             UroRecommender.recommend_many("pooled", [3], 2, pool: @pool, filter_consumed: true)

    assert {:ok, models} = UroRecommender.models(pool: @pool)
    assert %{version: ^v} = Enum.find(models, &(&1.name == "pooled"))
    assert {:ok, %{training: %{pid: _}, serving: [_, _]}} = UroRecommender.info(pool: @pool)
    # No database in the tests: the port says so.
    assert {:error, {_kind, _}} = UroRecommender.export("pooled", pool: @pool)
  end

  test "features: a cold user by features, update_features swapped into every serving port" do
    users =
      for u <- 1..50, do: {u, %{country: Enum.at(["de", "jp", "us"], rem(u, 3)), friends: u}}

    spec = %{
      algorithm: "FM",
      data: {:rows, tiny_rows()},
      params: %{n_epochs: 1, embed_size: 8},
      features: %{user: %{country: :sparse, friends: :dense}, users: {:rows, users}}
    }

    assert {:ok, %{version: v1}} = UroRecommender.train("featured", spec, pool: @pool)

    assert {:ok, [_, _, _]} =
             UroRecommender.recommend("featured", "newcomer", 3,
               pool: @pool,
               user_feats: %{country: "jp", friends: 3}
             )

    {:ok, before} = UroRecommender.predict("featured", 1, [1, 2, 3], pool: @pool)

    assert {:ok, %{users: 1, version: v2}} =
             UroRecommender.update_features("featured", %{users: {:rows, [{1, %{friends: 500}}]}},
               pool: @pool
             )

    assert v2 == v1 + 1

    for i <- 1..2 do
      assert {"featured", ^v2} =
               List.keyfind(Port.loaded(Pool.port_name(@pool, i)), "featured", 0)

      assert {:ok, after_update} =
               Port.call(Pool.port_name(@pool, i), {:predict, "featured", 1, [1, 2, 3]})

      assert after_update != before
    end
  end

  test "observe reaches every serving port: a consumed item is filtered on both" do
    {:ok, [top | _]} = UroRecommender.recommend("pooled", 7, 5, pool: @pool)

    assert {:ok, _} =
             UroRecommender.observe("pooled", [{7, top, 1.0, 1_700_000_000}],
               pool: @pool,
               store: false
             )

    for i <- 1..2 do
      {:ok, items} =
        Port.call(
          Pool.port_name(@pool, i),
          {:recommend, "pooled", 7, 5, %{filter_consumed: true}}
        )

      refute top in items
    end
  end

  test "least-busy routing: a busy serving port gets no new calls" do
    busy_port = Pool.port_name(@pool, 1)

    hog =
      Task.async(fn ->
        Port.call(busy_port, {:train, "hog", slow_spec(25)}, timeout: 120_000)
      end)

    eventually(fn -> Pool.busy(@pool) == [1, 0] end)

    for _ <- 1..20 do
      assert Pool.pick(@pool) == 2
      assert {:ok, _} = UroRecommender.recommend("pooled", 2, 3, pool: @pool, timeout: 5_000)
    end

    assert {:ok, %{name: "hog"}} = Task.await(hog, 120_000)
    eventually(fn -> Pool.busy(@pool) == [0, 0] end)
    # Idle ports share the work round-robin.
    assert Enum.map(1..4, fn _ -> Pool.pick(@pool) end) |> Enum.uniq() |> Enum.sort() == [1, 2]
  end

  test "a long train on the training port does not delay recommend" do
    parent = self()

    trainer =
      Task.async(fn ->
        UroRecommender.train("long", slow_spec(25), pool: @pool, events: parent)
      end)

    # Wait until the training port is in its epochs.
    assert_receive {:uro_recommender_event, _, %{type: :epoch}}, 120_000

    for _ <- 1..10 do
      {us, reply} = :timer.tc(fn -> UroRecommender.recommend("pooled", 4, 5, pool: @pool) end)
      assert {:ok, [_ | _]} = reply
      assert us < 1_000_000
    end

    assert {:ok, %{name: "long", version: 1}} = Task.await(trainer, 120_000)
    # ...and then the serving ports have it.
    assert {:ok, [_ | _]} = UroRecommender.recommend("long", 4, 5, pool: @pool)
  end

  test "hot swap under load: no call dropped, the new version serves afterwards" do
    stop = :atomics.new(1, [])

    load =
      for user <- 1..4 do
        Task.async(fn -> hammer(stop, user, []) end)
      end

    assert {:ok, %{version: v}} = UroRecommender.train("pooled", tiny_spec(3), pool: @pool)
    assert v >= 2
    :atomics.put(stop, 1, 1)
    replies = load |> Task.await_many(60_000) |> List.flatten()
    assert replies != []

    assert Enum.all?(replies, &match?({:ok, [_, _, _, _, _]}, &1)),
           inspect(Enum.reject(replies, &match?({:ok, _}, &1)))

    for i <- 1..2, do: assert({"pooled", v} in Port.loaded(Pool.port_name(@pool, i)))
    assert {"pooled", v} in Pool.loaded(@pool)
    assert {:ok, models} = UroRecommender.models(pool: @pool)
    assert %{version: ^v} = Enum.find(models, &(&1.name == "pooled"))
  end

  defp hammer(stop, user, acc) do
    acc = [UroRecommender.recommend("pooled", user, 5, pool: @pool) | acc]
    if :atomics.get(stop, 1) == 0, do: hammer(stop, user, acc), else: acc
  end

  test "a serving port that dies is restarted with the pool's current versions" do
    name = Pool.port_name(@pool, 2)
    pid = Process.whereis(name)
    os = Port.os_pid(name)
    expected = Pool.loaded(@pool)
    System.cmd("kill", ["-9", Integer.to_string(os)])

    new_os_pid(name, os)
    assert Process.whereis(name) == pid
    assert eventually(fn -> os_process_gone?(os) end)
    assert Port.loaded(name) == expected
    {:ok, models} = Port.call(name, :models)
    assert Enum.sort(Enum.map(models, &{&1.name, &1.version})) == expected
  end
end
