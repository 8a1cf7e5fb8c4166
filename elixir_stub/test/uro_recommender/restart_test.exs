defmodule UroRecommender.RestartTest do
  # Killing and restarting ports: each test starts its own supervised port. The port server
  # outlives its OS processes: it starts a new one itself, so its pid stays.
  use ExUnit.Case, async: false

  import UroRecommender.TestHelpers

  alias UroRecommender.Port

  @moduletag timeout: 300_000

  defp start_port(opts) do
    dir = tmp_dir("restart")
    table = :ets.new(:restart_test, [:set, :public])
    name = :"uro_rec_port_#{System.unique_integer([:positive])}"

    base = [
      port_path: port_path(),
      model_dir: dir,
      name: name,
      store: table,
      timeout: 120_000,
      env: [{"URO_REC_FAULTS", "1"}]
    ]

    # A supervisor of its own (not the test's), so the test may watch it restart.
    {:ok, sup} =
      Supervisor.start_link([{Port, Keyword.merge(base, opts)}],
        strategy: :one_for_one,
        max_restarts: 10
      )

    # Unlinked, so that the test process's exit does not take it down before on_exit.
    Process.unlink(sup)
    on_exit(fn -> if Process.alive?(sup), do: Supervisor.stop(sup) end)
    {name, Process.whereis(name)}
  end

  test "kill -9 while a caller waits: port_exited, restart, models reloaded, OS process gone" do
    {name, pid} = start_port([])
    assert {:ok, %{version: 1}} = Port.call(name, {:train, "k", tiny_spec()})
    assert {:ok, %{version: 2}} = Port.call(name, {:save, "k"})
    assert {:ok, %{version: 1}} = Port.call(name, {:load, "k", %{version: 1}})
    {:ok, before} = Port.call(name, {:recommend, "k", 1, 5, %{}})
    old_os = Port.os_pid(name)

    waiting = Task.async(fn -> Port.call(name, {:train, "slow", slow_spec(200)}) end)
    eventually(fn -> Port.in_flight(name) == 1 end)
    Process.sleep(200)
    System.cmd("kill", ["-9", Integer.to_string(old_os)])

    assert {:error, {:port_exited, status}} = Task.await(waiting, 30_000)
    assert status in [137, 9]

    # The same server, a new OS process.
    new_os = new_os_pid(name, old_os)
    assert Process.whereis(name) == pid
    assert new_os != old_os
    assert eventually(fn -> os_process_gone?(old_os) end)
    # Same version as before the crash (1, not the latest 2), and the same answers.
    assert Port.loaded(name) == [{"k", 1}]
    assert {:ok, [%{name: "k", version: 1}]} = Port.call(name, :models)
    assert {:ok, ^before} = Port.call(name, {:recommend, "k", 1, 5, %{}})
  end

  test "client-side timeout: no reply within timeout + grace kills and restarts the port" do
    # send_timeout_ms: false, so the port is not asked to stop itself.
    {name, pid} = start_port(send_timeout_ms: false, grace: 500)
    assert {:ok, :pong} = Port.call(name, :ping)
    old_os = Port.os_pid(name)

    t0 = System.monotonic_time(:millisecond)
    assert {:error, :timeout} = Port.call(name, {:train, "slow", slow_spec(200)}, timeout: 1_000)
    assert System.monotonic_time(:millisecond) - t0 < 5_000

    new_os = new_os_pid(name, old_os)
    assert Process.whereis(name) == pid
    assert eventually(fn -> os_process_gone?(old_os) end)
    assert {:ok, :pong} = Port.call(name, :ping)
    assert Port.os_pid(name) == new_os
  end

  @tag :server_timeout
  @tag :faults
  test "server-side timeout_ms: the port interrupts the call and stays up" do
    {name, pid} = start_port(grace: 5_000)
    os = Port.os_pid(name)
    assert {:error, {:timeout, _}} = Port.call(name, {:fault, :hang}, timeout: 500)
    assert {:ok, :pong} = Port.call(name, :ping)
    assert Process.whereis(name) == pid
    assert Port.os_pid(name) == os
  end

  @tag :faults
  test "a crashing port: every waiting caller gets port_exited, then it is restarted" do
    {name, pid} = start_port([])
    os = Port.os_pid(name)
    callers = for _ <- 1..3, do: Task.async(fn -> Port.call(name, {:fault, :segfault}) end)

    for task <- callers do
      assert {:error, {:port_exited, status}} = Task.await(task, 30_000)
      assert status != 0
    end

    new_os_pid(name, os)
    assert Process.whereis(name) == pid
    assert {:ok, :pong} = Port.call(name, :ping)

    assert {:error, {:port_exited, 3}} = Port.call(name, {:fault, :exit})
  end
end
