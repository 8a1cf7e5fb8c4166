defmodule UroRecommender.BatchTest do
  # Coalescing of concurrent recommend calls into recommend_many (UroRecommender.Batch),
  # through a real pool of one serving port. The port is made busy answering 4 callers (a call
  # the port interrupts itself, {fault, hang} with a timeout, and 3 echoes queued behind it),
  # so that the calls made meanwhile are held, and batched when it has answered them.
  use ExUnit.Case, async: false

  import ExUnit.CaptureLog
  import UroRecommender.TestHelpers

  alias UroRecommender.{Pool, Port}

  @pool UroRecommender.BatchPool
  @moduletag timeout: 300_000

  setup_all do
    start_supervised!({
      UroRecommender,
      # Held from 4 callers in flight (the default is 12): the tests occupy the port with 4.
      # URO_REC_MAX_REPLY_ITEMS: a recommend_many of more than 100 ids is refused as a whole
      # (badarg), while each of its calls alone is fine: the refused-batch test below.
      name: @pool,
      port_path: port_path(),
      model_dir: tmp_dir("batch"),
      pool_size: 1,
      batch_size: 8,
      batch_from: 4,
      timeout: 60_000,
      backoff: {100, 1_000},
      env: [{"URO_REC_FAULTS", "1"}, {"URO_REC_MAX_REPLY_ITEMS", "100"}]
    })

    other = %{algorithm: "ALS", data: {:rows, tiny_rows()}, params: %{n_epochs: 2, embed_size: 4}}

    capture_log(fn ->
      send(self(), UroRecommender.train("batched", tiny_spec(), pool: @pool))
      send(self(), UroRecommender.train("batched_other", other, pool: @pool))
    end)

    assert_received {:ok, %{version: 1}}
    assert_received {:ok, %{version: 1}}
    :ok
  end

  setup do
    parent = self()
    id = "uro-rec-batch-test-#{System.unique_integer([:positive])}"
    events = [[:uro_recommender, :batch], [:uro_recommender, :call, :stop]]

    forward = fn event, measurements, meta, _ ->
      send(parent, {:telemetry, event, measurements, meta})
    end

    :ok = :telemetry.attach_many(id, events, forward, nil)
    on_exit(fn -> :telemetry.detach(id) end)
    :ok
  end

  # What a lone recommend answers: one call at a time, so nothing is held or batched.
  defp lone(server, command), do: Port.call(server, command)

  defp serving, do: Pool.port_name(@pool, 1)

  # Runs `fun` while the serving port is answering 4 callers, a hang the port interrupts after
  # `ms` and 3 echoes: the calls `fun` starts are held until then. Returns what `fun` returns.
  defp while_busy(ms, fun) do
    [hang | echoes] = occupy(serving(), ms)
    result = fun.()
    assert {:error, {:timeout, _}} = Task.await(hang, ms + 10_000)
    for e <- echoes, do: assert({:ok, _} = Task.await(e, 10_000))
    result
  end

  # The 4 calls that keep `server` busy (straight to the port server, not through the pool).
  defp occupy(server, ms) do
    hang = Task.async(fn -> Port.call(server, {:fault, :hang}, timeout: ms) end)
    eventually(fn -> Pool.busy(@pool) == [1] end, 5_000)
    echoes = for i <- 1..3, do: Task.async(fn -> Port.call(server, {:echo, i}) end)
    eventually(fn -> Pool.busy(@pool) == [4] end, 5_000)
    [hang | echoes]
  end

  # Each command made by a caller of its own while the port is busy: each reply must equal what
  # a lone recommend answers. Returns those answers.
  defp concurrently(commands, ms \\ 2_000) do
    expected = Enum.map(commands, &lone(serving(), &1))
    drain()
    tasks = while_busy(ms, fn -> start_calls(commands) end)
    assert Task.await_many(tasks, 30_000) == expected
    expected
  end

  # Starts one task per command (through the pool) and waits until the port holds them all.
  defp start_calls(commands) do
    tasks = Enum.map(commands, fn c -> Task.async(fn -> Pool.call(@pool, c) end) end)
    eventually(fn -> Pool.busy(@pool) == [4 + length(commands)] end, 5_000)
    tasks
  end

  defp batch_sizes do
    receive do
      {:telemetry, [:uro_recommender, :batch], %{size: size}, meta} ->
        [{meta.model, size} | batch_sizes()]
    after
      0 -> []
    end
  end

  test "concurrent callers each get exactly their own list, equal to a lone recommend" do
    users = Enum.to_list(1..20) ++ ["a-stranger", 99_999]
    commands = for u <- users, do: {:recommend, "batched", u, 5, %{}}
    scored = for u <- 1..6, do: {:recommend, "batched", u, 4, %{scores: true}}
    expected = Enum.map(commands ++ scored, &lone(serving(), &1))
    assert Enum.all?(expected, &match?({:ok, [_ | _]}, &1))
    # Cold start: the stranger's list is the popular one, not an error.
    assert {:ok, [_, _, _, _, _]} = Enum.at(expected, 20)
    drain()

    tasks = while_busy(2_000, fn -> start_calls(commands ++ scored) end)
    assert Task.await_many(tasks, 30_000) == expected

    # 22 calls of one kind in batches of at most 8, 6 of the other in one batch.
    sizes = batch_sizes()

    assert Enum.sort(sizes) ==
             Enum.sort(
               [{"batched", 8}, {"batched", 8}, {"batched", 6}] ++
                 [{"batched", 6}]
             )

    # Every caller still got its own :stop span, with the size of its batch.
    stops =
      for _ <- 1..28 do
        assert_receive {:telemetry, [:uro_recommender, :call, :stop], _,
                        %{command: :recommend, batch: b, result: :ok}}

        b
      end

    assert Enum.frequencies(stops) == %{8 => 16, 6 => 12}
  end

  test "calls of other models, N or options are never merged" do
    groups = [
      {"batched", 5, %{}},
      {"batched", 3, %{}},
      {"batched", 5, %{filter_consumed: false}},
      {"batched", 5, %{exclude: [1, 2, 3]}},
      {"batched_other", 5, %{}}
    ]

    concurrently(for {model, n, opts} <- groups, u <- 1..4, do: {:recommend, model, u, n, opts})

    # One batch of 4 per group: nothing mixed.
    assert Enum.sort(batch_sizes()) ==
             Enum.sort(
               [{"batched", 4}, {"batched", 4}, {"batched", 4}, {"batched", 4}] ++
                 [{"batched_other", 4}]
             )
  end

  test "a batch the port refuses is sent again call by call: each caller gets a lone answer" do
    # 6 users x 20 items are over this pool's URO_REC_MAX_REPLY_ITEMS (100): the
    # recommend_many is badarg, each recommend alone is not. (No single id can fail a batch
    # any more: any integer or binary is an id, an unknown one gets the cold-start list.)
    commands = for u <- [1, 2, 3, 4, 5, 999_999], do: {:recommend, "batched", u, 20, %{}}
    expected = concurrently(commands)
    assert Enum.all?(expected, &match?({:ok, [_ | _]}, &1))
    # They were batched, and answered one by one after the port refused the batch.
    assert batch_sizes() == [{"batched", 6}]
  end

  test "an unknown model: every caller gets recommend's own error" do
    expected = concurrently(for u <- 1..4, do: {:recommend, "no_such_model", u, 5, %{}})
    assert Enum.all?(expected, &match?({:error, {:unknown_model, _}}, &1))
    assert batch_sizes() == [{"no_such_model", 4}]
  end

  test "fewer than 4 held calls of a kind go out as their own recommend frames" do
    commands = for u <- 1..3, do: {:recommend, "batched", u, 5, %{}}
    concurrently(commands ++ [{:recommend, "batched_other", 1, 5, %{}}])
    assert batch_sizes() == []

    for _ <- 1..4 do
      assert_receive {:telemetry, [:uro_recommender, :call, :stop], _,
                      %{command: :recommend, batch: 1, result: :ok}}
    end
  end

  test "half a batch held and one frame left in flight: the batch is queued behind that frame" do
    # batch_size 8: half a batch is 4. The port answers a hang (interrupted at 1 s) and 2
    # echoes; a second hang (4 s) is then the one frame left, and the 5 held calls go out at
    # once, not when it is answered (the port would have nothing queued).
    commands = for u <- 1..5, do: {:recommend, "batched", u, 5, %{}}
    expected = Enum.map(commands, &lone(serving(), &1))
    drain()
    server = serving()
    first = Task.async(fn -> Port.call(server, {:fault, :hang}, timeout: 1_000) end)
    eventually(fn -> Pool.busy(@pool) == [1] end, 5_000)
    echoes = for i <- 1..2, do: Task.async(fn -> Port.call(server, {:echo, i}) end)
    eventually(fn -> Pool.busy(@pool) == [3] end, 5_000)
    last = Task.async(fn -> Port.call(server, {:fault, :hang}, timeout: 4_000) end)
    eventually(fn -> Pool.busy(@pool) == [4] end, 5_000)
    tasks = start_calls(commands)
    assert batch_sizes() == []

    assert {:error, {:timeout, _}} = Task.await(first, 10_000)
    assert_receive {:telemetry, [:uro_recommender, :batch], %{size: 5}, _}, 2_000
    assert Task.yield(last, 0) == nil
    assert {:error, {:timeout, _}} = Task.await(last, 10_000)
    for e <- echoes, do: assert({:ok, _} = Task.await(e, 10_000))
    assert Task.await_many(tasks, 30_000) == expected
  end

  test "calls that are not recommend flush what is held first, in order" do
    commands = for u <- 1..4, do: {:recommend, "batched", u, 5, %{}}
    expected = Enum.map(commands, &lone(serving(), &1))

    tasks =
      while_busy(2_000, fn ->
        held = start_calls(commands)
        # ping is not batched: the held calls go out (one recommend_many), then the ping.
        ping = Task.async(fn -> Pool.call(@pool, :ping) end)
        eventually(fn -> Pool.busy(@pool) == [9] end, 5_000)
        assert batch_sizes() == [{"batched", 4}]
        held ++ [ping]
      end)

    assert Task.await_many(tasks, 30_000) == expected ++ [{:ok, :pong}]
  end

  test "a port crash with calls held or a batch in flight: every caller is answered" do
    commands = for u <- 1..6, do: {:recommend, "batched", u, 5, %{}}
    expected = Enum.map(commands, &lone(serving(), &1))
    name = serving()
    os = Port.os_pid(name)

    # Through the pool, a read-only call is sent again when its port died: every caller that
    # was held gets its list from the restarted port. The port must have been ready 5 s
    # (Port's @stable_ms): a port that dies sooner is a failed start, backed off, and the
    # retry would find it :unavailable (seen when this test ran first).
    eventually(fn -> stable?(name) end, 10_000)
    busy = occupy(name, 10_000)
    pooled = start_calls(commands)
    capture_log(fn -> kill_os(os) end)
    for t <- busy, do: assert({:error, {:port_exited, _}} = Task.await(t, 10_000))
    assert Task.await_many(pooled, 30_000) == expected
    os = new_os_pid(name, os)

    # Straight to the port server (no pool retry), with the batch sent: each caller gets the
    # exit.
    busy = occupy(name, 10_000)
    direct = Enum.map(commands, fn c -> Task.async(fn -> Port.call(name, c) end) end)
    eventually(fn -> Pool.busy(@pool) == [10] end, 5_000)
    drain()
    # A call that is not recommend flushes the held calls: the batch is in the port's pipe,
    # behind the hang.
    echo = Task.async(fn -> Port.call(name, {:echo, 1}) end)
    eventually(fn -> batch_sizes() == [{"batched", 6}] end, 5_000)
    capture_log(fn -> kill_os(os) end)

    for t <- [echo | busy] ++ direct,
        do: assert({:error, {:port_exited, _}} = Task.await(t, 10_000))

    # Serving again (for the other tests).
    new_os_pid(name, os)
  end

  test "fewer than 4 callers in flight: a recommend is sent at once, not held" do
    commands = for u <- 1..3, do: {:recommend, "batched", u, 5, %{}}
    expected = Enum.map(commands, &lone(serving(), &1))
    drain()
    hang = Task.async(fn -> Port.call(serving(), {:fault, :hang}, timeout: 2_000) end)
    eventually(fn -> Pool.busy(@pool) == [1] end, 5_000)
    # One at a time, so that each finds 1, 2, then 3 callers in flight.
    tasks =
      for {c, i} <- Enum.with_index(commands, 2) do
        t = Task.async(fn -> Pool.call(@pool, c) end)
        eventually(fn -> Pool.busy(@pool) == [i] end, 5_000)
        t
      end

    # Sent to the port (4 frames in flight), none held.
    state = :sys.get_state(serving())
    assert {map_size(state.calls), state.held.count} == {4, 0}
    assert {:error, {:timeout, _}} = Task.await(hang, 10_000)
    assert Task.await_many(tasks, 30_000) == expected
    assert batch_sizes() == []
  end

  test "batch_size: 1: no call is held, each is sent as it comes" do
    name = :"uro_rec_batch_off_#{System.unique_integer([:positive])}"

    start_supervised!(
      {
        Port,
        # URO_REC_MAX_REPLY_ITEMS: a recommend_many of more than 100 ids is refused as a whole
        # (badarg), while each of its calls alone is fine: the refused-batch test below.
        port_path: port_path(),
        model_dir: tmp_dir("batch_off"),
        name: name,
        batch_size: 1,
        env: [{"URO_REC_FAULTS", "1"}, {"URO_REC_MAX_REPLY_ITEMS", "100"}]
      },
      id: name
    )

    capture_log(fn -> send(self(), Port.call(name, {:train, "off", tiny_spec()})) end)
    assert_received {:ok, %{version: 1}}
    commands = for u <- 1..5, do: {:recommend, "off", u, 5, %{}}
    expected = Enum.map(commands, &Port.call(name, &1))

    hang = Task.async(fn -> Port.call(name, {:fault, :hang}, timeout: 2_000) end)
    eventually(fn -> Port.in_flight(name) == 1 end, 5_000)
    tasks = Enum.map(commands, fn c -> Task.async(fn -> Port.call(name, c) end) end)
    eventually(fn -> Port.in_flight(name) == 6 end, 5_000)
    assert {:error, {:timeout, _}} = Task.await(hang, 10_000)
    assert Task.await_many(tasks, 30_000) == expected
    assert batch_sizes() == []
  end

  test "batch_size is validated like the pool's other options" do
    assert_raise ArgumentError, ~r/:batch_size option: expected positive integer, got: 0/, fn ->
      UroRecommender.child_spec(batch_size: 0)
    end

    assert [batch_size: 1] = UroRecommender.Config.validate!(batch_size: 1)
  end

  # kill -9, as an OOM killer would.
  defp kill_os(os), do: UroRecommender.PortProcess.kill(os)

  defp stable?(name) do
    %{state: state, since: since} = Port.status(name)
    state == :ready and DateTime.diff(DateTime.utc_now(), since, :millisecond) > 5_500
  end

  # Forgets the telemetry messages received so far.
  defp drain do
    receive do
      {:telemetry, _, _, _} -> drain()
    after
      0 -> :ok
    end
  end
end
