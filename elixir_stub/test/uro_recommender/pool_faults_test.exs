defmodule UroRecommender.PoolFaultsTest do
  # Crash isolation, kind by kind, through a pool: for each fault the BEAM lives, the caller
  # gets an error (never a hang), the pool's other callers keep being served, the faulted
  # port serves the same model version again within 5 seconds, and no OS process is left.
  use ExUnit.Case, async: false

  import ExUnit.CaptureLog
  import UroRecommender.TestHelpers

  alias UroRecommender.{Pool, Port}

  @pool UroRecommender.FaultPool
  @moduletag timeout: 600_000

  setup_all do
    start_supervised!(
      {UroRecommender,
       name: @pool,
       port_path: port_path(),
       model_dir: tmp_dir("faults"),
       pool_size: 2,
       timeout: 60_000,
       env: [{"URO_REC_FAULTS", "1"}]}
    )

    capture_log(fn -> send(self(), UroRecommender.train("faulty", tiny_spec(), pool: @pool)) end)
    assert_received {:ok, %{version: 1}}
    :ok
  end

  for kind <- [:segfault, :abort, :exit, :hang, :oom] do
    test "fault #{kind}: caller gets an error, pool keeps serving, same version within 5 s" do
      fault(unquote(kind))
    end
  end

  defp fault(kind) do
    name = Pool.port_name(@pool, 1)
    before_pid = Process.whereis(name)
    os = Port.os_pid(name)
    expected = Pool.loaded(@pool)
    assert {"faulty", 1} in expected

    # Other callers hammer the pool while port 1 breaks.
    stop = :atomics.new(1, [])
    hammer = Task.async(fn -> hammer(stop, 0, 0) end)

    t0 = System.monotonic_time(:millisecond)

    capture_log(fn -> send(self(), Port.call(name, {:fault, kind}, timeout: 1_500)) end)
    assert_received {:error, reason}
    assert System.monotonic_time(:millisecond) - t0 < 10_000

    crashed = kind in [:segfault, :abort, :exit]

    case kind do
      :hang -> assert {:timeout, _} = reason
      :oom -> assert {:python, %{type: "MemoryError"}} = reason
      _ -> assert match?({:port_exited, status} when status != 0, reason)
    end

    # The faulted port serves the same version again within 5 s of the fault.
    eventually(
      fn ->
        pid = Process.whereis(name)

        # The same server (it starts a new OS process itself), a new OS process.
        pid == before_pid and (not crashed or Port.os_pid(name) not in [nil, os]) and
          match?({:ok, _}, Port.call(name, {:recommend, "faulty", 1, 3, %{}}, timeout: 1_000)) and
          Port.loaded(name) == expected
      end,
      5_000 - (System.monotonic_time(:millisecond) - t0)
    )

    {:ok, models} = Port.call(name, :models)
    assert Enum.sort(Enum.map(models, &{&1.name, &1.version})) == expected

    :atomics.put(stop, 1, 1)
    {served, failed} = Task.await(hammer, 30_000)
    assert served > 0
    assert failed == 0

    if crashed, do: assert(eventually(fn -> os_process_gone?(os) end, 5_000))
    if not crashed, do: assert(Port.os_pid(name) == os)
  end

  # Recommends through the pool until told to stop: {served, failed}.
  defp hammer(stop, served, failed) do
    if :atomics.get(stop, 1) == 1 do
      {served, failed}
    else
      case UroRecommender.recommend("faulty", rem(served, 50) + 1, 3, pool: @pool, timeout: 5_000) do
        {:ok, [_, _, _]} -> hammer(stop, served + 1, failed)
        _ -> hammer(stop, served, failed + 1)
      end
    end
  end
end
