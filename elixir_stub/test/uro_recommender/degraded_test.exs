defmodule UroRecommender.DegradedTest do
  # A pool whose executable is broken, in a host's supervision tree: each slot is degraded
  # with a backoff, calls answer :unavailable at once, status says why, the pool comes back by
  # itself once the executable is good, and the host's top supervisor is alive throughout,
  # never having restarted anything. The broken executables are shell scripts; the good one is
  # the real port.
  use ExUnit.Case, async: false

  import ExUnit.CaptureLog
  import UroRecommender.TestHelpers

  alias UroRecommender.{Pool, PortProcess}

  @moduletag timeout: 120_000

  # A host: its own top supervisor with Supervisor's default intensity (3 restarts in 5 s),
  # unlinked from the test so that only our assertions decide.
  defp start_host(pool, opts) do
    base = [name: pool, pool_size: 1, model_dir: tmp_dir("degraded"), ready_timeout: 5_000]

    {:ok, top} =
      Supervisor.start_link([{UroRecommender, Keyword.merge(base, opts)}], strategy: :one_for_one)

    Process.unlink(top)
    on_exit(fn -> if Process.alive?(top), do: Supervisor.stop(top) end)
    %{top: top, pool_pid: Process.whereis(pool), servers: servers(pool)}
  end

  defp servers(pool), do: for(s <- [:train, 1], do: Process.whereis(Pool.port_name(pool, s)))

  # Alive, and nothing below it restarted: the same pool supervisor, the same port servers.
  defp assert_host_intact(host, pool) do
    assert Process.alive?(host.top)
    assert Process.whereis(pool) == host.pool_pid
    assert servers(pool) == host.servers
    assert [{_, _, :supervisor, _}] = Supervisor.which_children(host.top)
  end

  defp script(body) do
    path = Path.join(tmp_dir("script"), "uro_recommender")
    File.write!(path, "#!/bin/sh\n" <> body <> "\n")
    File.chmod!(path, 0o755)
    path
  end

  defp degraded(pool) do
    eventually(fn ->
      {:ok, %{training: t, serving: [s]}} = UroRecommender.status(pool: pool)
      t.state == :degraded and s.state == :degraded and {t, s}
    end)
  end

  # Calls answer at once (no port is asked); a generous bound, far below ready_timeout.
  defp assert_unavailable_at_once(pool) do
    t0 = System.monotonic_time(:millisecond)
    assert {:error, :unavailable} = UroRecommender.recommend("m", 1, 3, pool: pool)
    assert {:error, :unavailable} = UroRecommender.train("m", %{}, pool: pool)
    assert {:error, :unavailable} = UroRecommender.call(:ping, pool: pool)
    assert System.monotonic_time(:millisecond) - t0 < 1_000
  end

  cases = [
    missing: {"a path with nothing there", :not_found},
    not_executable: {"a file without execute permission", :not_executable},
    exits_at_once: {"a script that exits 127 at once", :exited},
    hangs: {"a script that never answers its first call", :no_ready_reply},
    wrong_protocol: {"a script that answers info with protocol 2", :protocol},
    garbage: {"a script whose frame is not a term", :bad_frame},
    python_down: {"the real port whose virtualenv is missing", :python_did_not_start}
  ]

  for {kind, {what, reason}} <- cases do
    test "#{kind}: #{what} -> degraded (#{reason}), :unavailable at once, host intact" do
      pool = :"UroRecommender.Degraded#{unquote(kind)}"
      {path, opts} = broken(unquote(kind))

      capture_log(fn ->
        host = start_host(pool, [port_path: path] ++ opts)
        {train, serving} = degraded(pool)

        for slot <- [train, serving] do
          assert %{failures: n, last_failure: %{reason: reason, message: msg, at: %DateTime{}}} =
                   slot

          assert n >= 1
          assert elem(reason, 0) == unquote(reason)
          assert is_binary(msg) and msg != ""
        end

        assert_unavailable_at_once(pool)
        {:ok, info} = UroRecommender.info(pool: pool)

        assert %{training: %{slot: %{state: :degraded}}, serving: [%{slot: %{state: :degraded}}]} =
                 info

        assert_host_intact(host, pool)
      end)
    end
  end

  defp broken(:missing), do: {Path.join(tmp_dir("missing"), "uro_recommender"), []}

  defp broken(:not_executable) do
    path = script("exit 0")
    File.chmod!(path, 0o644)
    {path, []}
  end

  defp broken(:exits_at_once), do: {script("exit 127"), []}
  defp broken(:hangs), do: {script("exec sleep 600"), [ready_timeout: 300]}

  defp broken(:wrong_protocol) do
    # The reply to the handshake (its Ref is `handshake`), as the port would frame it.
    reply = :erlang.term_to_binary({:reply, :handshake, {:ok, %{protocol: 2, version: "9.9.9"}}})
    frame = Path.join(tmp_dir("frame"), "reply.bin")
    File.write!(frame, <<byte_size(reply)::32, reply::binary>>)
    {script(~s(cat "#{frame}"; exec sleep 600)), []}
  end

  defp broken(:garbage), do: {script(~S(printf '\000\000\000\003abc'; exec sleep 600)), []}

  defp broken(:python_down), do: {port_path(), [venv: "/nonexistent/venv"]}

  test "the backoff doubles from 1 s, and each failure is counted" do
    pool = UroRecommender.DegradedBackoff

    capture_log(fn ->
      host = start_host(pool, port_path: script("exit 3"))

      {_, first} = degraded(pool)
      assert first.failures == 1
      assert first.next_attempt_in_ms in 1..1_000

      second =
        eventually(fn ->
          {:ok, %{serving: [s]}} = UroRecommender.status(pool: pool)
          s.failures == 2 and s.next_attempt_in_ms != nil and s
        end)

      assert second.next_attempt_in_ms in 1_001..2_000
      assert %{reason: {:exited, 3}} = second.last_failure
      assert_host_intact(host, pool)
    end)
  end

  test "an executable fixed while the pool runs: it recovers by itself and serves" do
    pool = UroRecommender.DegradedFixed
    path = script("exit 1")

    capture_log(fn ->
      host = start_host(pool, port_path: path)

      eventually(fn ->
        match?({:ok, %{serving: [%{failures: f}]}} when f >= 2, UroRecommender.status(pool: pool))
      end)

      assert_unavailable_at_once(pool)

      # Replaced by a rename, as a deploy would: a wrapper that runs the real port.
      fixed = path <> ".new"
      File.write!(fixed, ~s(#!/bin/sh\nexec "#{port_path()}" "$@"\n))
      File.chmod!(fixed, 0o755)
      File.rename!(fixed, path)

      {:ok, %{serving: [serving]}} =
        eventually(fn ->
          status = UroRecommender.status(pool: pool)

          match?({:ok, %{training: %{state: :ready}, serving: [%{state: :ready}]}}, status) &&
            status
        end)

      assert is_integer(serving.os_pid)
      assert %{reason: {:exited, 1}} = serving.last_failure
      assert {:ok, :pong} = UroRecommender.call(:ping, pool: pool)
      assert {:ok, %{version: 1}} = UroRecommender.train("fixed", tiny_spec(), pool: pool)
      assert {:ok, [_, _, _]} = UroRecommender.recommend("fixed", 1, 3, pool: pool)
      assert_host_intact(host, pool)
    end)
  end

  test "a port that keeps dying soon after it is ready backs off too" do
    pool = UroRecommender.DegradedCrashLoop
    # Ready (the real port answers info), then killed a moment later, every time.
    # (The shell gives an asynchronous command /dev/null as stdin: hence fd 3.)
    path =
      script(
        ~s(exec 3<&0; "#{port_path()}" "$@" <&3 3<&- & p=$!; sleep 4; kill -9 $p; wait $p 2>/dev/null)
      )

    capture_log(fn ->
      host = start_host(pool, port_path: path)

      status =
        eventually(fn ->
          {:ok, %{serving: [s]}} = UroRecommender.status(pool: pool)
          s.failures >= 2 and s
        end)

      assert %{reason: {:port_exited, _}} = status.last_failure
      assert_host_intact(host, pool)
    end)
  end

  test "Port.info/2 answering nil for a process that exited at once is not a crash" do
    path = script("exit 127")

    for _ <- 1..20 do
      assert {:ok, port, os_pid} = PortProcess.open(port_path: path)
      assert os_pid == nil or is_integer(os_pid)
      assert_receive {^port, {:exit_status, 127}}, 5_000
    end
  end

  test "a call before the pool starts is {:error, :not_started}" do
    assert {:error, :not_started} = UroRecommender.recommend("m", 1, 3, pool: NoSuchPool)
    assert {:error, :not_started} = UroRecommender.train("m", %{}, pool: NoSuchPool)
    assert {:error, :not_started} = UroRecommender.status(pool: NoSuchPool)
    assert {:error, :not_started} = UroRecommender.info(pool: NoSuchPool)
    assert {:error, :not_started} = UroRecommender.observe("m", [], pool: NoSuchPool)
    assert {:error, :not_started} = UroRecommender.load("m", pool: NoSuchPool)
  end

  test "options are checked when the pool is given them" do
    assert_raise ArgumentError,
                 ~r/unknown options \[:pool_sise\], valid options are: \[:name/,
                 fn ->
                   UroRecommender.child_spec(pool_sise: 7)
                 end

    assert_raise ArgumentError,
                 ~r/invalid value for :pool_size option: expected positive integer/,
                 fn ->
                   UroRecommender.start_link(pool_size: 0)
                 end

    Application.put_env(:uro_recommender, :timout, 5)

    try do
      assert_raise ArgumentError,
                   ~r/in config :uro_recommender: unknown options \[:timout\]/,
                   fn ->
                     UroRecommender.start_link(name: :never_started)
                   end
    after
      Application.delete_env(:uro_recommender, :timout)
    end
  end
end
