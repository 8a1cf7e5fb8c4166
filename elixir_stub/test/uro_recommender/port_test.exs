defmodule UroRecommender.PortTest do
  # One port for the module: each start costs a second, the first train several more
  # (TensorFlow import).
  use ExUnit.Case, async: false

  import ExUnit.CaptureLog
  import UroRecommender.TestHelpers

  alias UroRecommender.Port

  setup_all do
    dir = tmp_dir("port")

    pid =
      start_supervised!(
        {Port, port_path: port_path(), model_dir: dir, timeout: 60_000, id: :port_test}
      )

    # The first train imports TensorFlow: its warnings are not this suite's business.
    capture_log(fn ->
      send(self(), Port.call(pid, {:train, "tiny", tiny_spec()}, timeout: 120_000))
    end)

    assert_received {:ok, trained}
    %{port: pid, dir: dir, trained: trained}
  end

  test "call and reply: ping, echo, info", %{port: port} do
    assert {:ok, :pong} = Port.call(port, :ping)
    term = %{a: "x", b: [1, 2.5, {:t, -7}], c: Bitwise.bsl(1, 70)}
    assert {:ok, ^term} = Port.call(port, {:echo, term})
    assert {:ok, %{protocol: 1, pid: os_pid, version: v}} = Port.call(port, :info)
    assert os_pid == Port.os_pid(port)
    assert is_binary(v)
  end

  test "the port's errors come back as {:error, {kind, detail}}", %{port: port} do
    assert {:error, {:unknown_command, _}} = Port.call(port, {:no_such_command, 1})
    assert {:error, {:badarg, _}} = Port.call(port, {:ping, 1})
    assert {:error, {:unknown_model, _}} = Port.call(port, {:recommend, "nope", 1, 3, %{}})
    assert {:error, {:badarg, msg}} = Port.call(port, {:recommend, "tiny", 1, -1, %{}})
    assert msg =~ "N"
  end

  test "a frame over --max-frame answers its caller with too_large, and the port goes on" do
    small =
      start_supervised!(
        {Port,
         port_path: port_path(),
         model_dir: tmp_dir("port_small"),
         max_frame: 4096,
         timeout: 5_000,
         id: :port_small},
        id: :port_small
      )

    os_pid = Port.os_pid(small)
    started = System.monotonic_time(:millisecond)

    assert {:error, {:too_large, _}} =
             Port.call(small, {:echo, :binary.copy("x", 10_000)}, timeout: 60_000)

    # answered by the port, not by the client's timeout and kill
    assert System.monotonic_time(:millisecond) - started < 5_000
    assert {:ok, :pong} = Port.call(small, :ping)
    assert Port.os_pid(small) == os_pid
  end

  test "data_dir, model_key_file and allow_unsigned_models reach the port", %{dir: dir} do
    start = fn id, opts ->
      opts =
        [port_path: port_path(), model_dir: tmp_dir("#{id}"), timeout: 60_000, id: id] ++ opts

      start_supervised!({Port, opts}, id: id)
    end

    short_key = Path.join(tmp_dir("port_key"), "model.key")
    File.write!(short_key, "too-short\n")
    keyed = start.(:port_keyed, model_key_file: short_key)
    strict = start.(:port_strict, [])
    unsigned = start.(:port_unsigned, allow_unsigned_models: true)
    confined = start.(:port_confined, data_dir: "/etc")

    from_db = {:load, "tiny", %{from: :database}}
    assert {:error, {:untrusted_model, msg}} = Port.call(keyed, from_db)
    assert msg =~ "key 1 is shorter than 32 characters"
    assert {:error, {:untrusted_model, msg}} = Port.call(strict, from_db)
    assert msg =~ "no model key is configured"
    # allowed past the signature check, on to the database (none here, or not this model)
    assert {:error, {kind, _}} = Port.call(unsigned, from_db)
    assert kind in [:database, :unknown_model]

    assert {:ok, _} = Port.call(confined, {:load, "tiny", %{path: Path.join([dir, "tiny", "1"])}})
    outside = {:evaluate, "tiny", {:csv, "../proc/self/environ"}}
    assert {:error, {:badarg, msg}} = Port.call(confined, outside)
    assert msg =~ "is outside the data directory /etc"
  end

  test "many concurrent callers each get their own reply", %{port: port} do
    results =
      1..50
      |> Enum.map(fn i -> Task.async(fn -> {i, Port.call(port, {:echo, i})} end) end)
      |> Task.await_many(30_000)

    for {i, reply} <- results, do: assert(reply == {:ok, i})
    assert Port.in_flight(port) == 0
  end

  test "train small ALS from rows and recommend", %{port: port, trained: trained} do
    assert %{name: "tiny", version: 1, algorithm: "ALS", n_users: 50, n_items: 40} = trained
    assert {:ok, items} = Port.call(port, {:recommend, "tiny", 1, 5, %{}})
    assert length(items) == 5
    assert Enum.all?(items, &(&1 in 1..40))

    assert {:ok, %{1 => [_, _, _], 2 => [_, _, _]}} =
             Port.call(port, {:recommend_many, "tiny", [1, 2], 3, %{}})

    assert {:ok, [a, b]} = Port.call(port, {:predict, "tiny", 1, [1, 2]})
    assert is_float(a) and is_float(b)
    assert {"tiny", 1} in Port.loaded(port)
  end

  test "log frames reach Logger with the port's OS pid", %{port: port} do
    os_pid = Port.os_pid(port)
    parent = self()
    handler = :"uro_rec_test_#{System.unique_integer([:positive])}"

    :logger.add_handler(handler, __MODULE__.Forward, %{config: %{pid: parent}})
    # Epoch lines are progress, logged at debug (python/uro_rec/streams.py, LEVELS).
    level = Logger.level()
    Logger.configure(level: :debug)

    log =
      try do
        capture_log([level: :debug], fn ->
          assert {:ok, %{name: "logs"}} =
                   Port.call(port, {:train, "logs", tiny_spec(2)}, timeout: 120_000)
        end)
      after
        Logger.configure(level: level)
      end

    :logger.remove_handler(handler)
    assert log =~ ~r/\[debug\] .*Epoch 1 elapsed/
    refute log =~ ~r/\[(info|warning)\] .*Epoch/
    assert_received {:log_event, %{meta: %{port: ^os_pid}, msg: _}}
  end

  test "training events go to the caller that asked", %{port: port} do
    assert {:ok, _} =
             Port.call(port, {:train, "events", tiny_spec(2)}, timeout: 120_000, events: self())

    assert_received {:uro_recommender_event, ref, %{type: :epoch, epoch: 1}} when is_integer(ref)
  end

  defmodule Forward do
    @moduledoc false
    def log(%{meta: meta} = event, %{config: %{pid: pid}}) do
      if Map.has_key?(meta, :port), do: send(pid, {:log_event, event})
    end
  end

  test "cpu_affinity: the port process and its threads run on the CPUs given" do
    cpu = "#{System.schedulers_online() - 1}"

    pinned =
      start_supervised!(
        {Port, port_path: port_path(), model_dir: tmp_dir("port_cpu"), cpu_affinity: cpu},
        id: :pinned
      )

    assert {:ok, %{pid: os}} = Port.call(pinned, :info)
    assert os == Port.os_pid(pinned)
    tasks = File.ls!("/proc/#{os}/task")
    assert tasks != []

    for tid <- tasks do
      status = File.read!("/proc/#{os}/task/#{tid}/status")
      assert [_, ^cpu] = Regex.run(~r/Cpus_allowed_list:\s*(\S+)/, status)
    end

    assert_raise ArgumentError, ~r/:cpu_affinity option: expected a CPU list/, fn ->
      UroRecommender.Config.validate!(cpu_affinity: "one")
    end
  end
end
