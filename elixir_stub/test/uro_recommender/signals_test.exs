defmodule UroRecommender.SignalsTest do
  # Process behaviour of the bare port (no GenServer): SIGTERM lets the current call finish
  # and reply, then the port exits 0 promptly; calls queued behind it are not started.
  use ExUnit.Case, async: false

  import UroRecommender.TestHelpers

  @moduletag timeout: 120_000

  defp open do
    port =
      Port.open({:spawn_executable, port_path()}, [
        :binary,
        {:packet, 4},
        :exit_status,
        args: ["--model-dir", tmp_dir("signals")],
        env: [{~c"URO_REC_FAULTS", ~c"1"}]
      ])

    {:os_pid, os} = Port.info(port, :os_pid)
    assert {:ok, :pong} = call(port, 1, :ping)
    {port, os}
  end

  defp send_call(port, ref, command, opts \\ %{}) do
    Port.command(port, :erlang.term_to_binary({:call, ref, command, opts}))
  end

  defp call(port, ref, command) do
    send_call(port, ref, command)
    reply(port, ref, 30_000)
  end

  defp reply(port, ref, timeout) do
    receive do
      {^port, {:data, data}} ->
        case :erlang.binary_to_term(data) do
          {:reply, ^ref, result} -> result
          _log_or_event -> reply(port, ref, timeout)
        end
    after
      timeout -> flunk("no reply to #{inspect(ref)}")
    end
  end

  # The exit status, and the frames that came before it.
  defp exit_status(port, timeout, frames \\ []) do
    receive do
      {^port, {:exit_status, status}} ->
        {status, Enum.reverse(frames)}

      {^port, {:data, data}} ->
        exit_status(port, timeout, [:erlang.binary_to_term(data) | frames])
    after
      timeout -> flunk("the port did not exit within #{timeout} ms")
    end
  end

  test "SIGTERM when idle: exit 0 within a second" do
    {port, os} = open()
    System.cmd("kill", ["-TERM", Integer.to_string(os)])
    assert {0, _frames} = exit_status(port, 1_000)
    assert eventually(fn -> os_process_gone?(os) end, 2_000)
  end

  test "SIGTERM during a call: that call replies, queued calls are not started, exit 0" do
    {port, os} = open()
    send_call(port, 2, {:fault, :hang}, %{timeout_ms: 700})
    send_call(port, 3, :ping)
    Process.sleep(200)
    System.cmd("kill", ["-TERM", Integer.to_string(os)])
    assert {:error, {:timeout, _}} = reply(port, 2, 5_000)
    assert {0, frames} = exit_status(port, 1_000)
    assert [] == for({:reply, 3, _} = r <- frames, do: r)
  end

  test "the parent dies (kill -9): the port dies with it, never an orphan" do
    # sh is the port's parent here; its stdin is a FIFO opened read-write, which never
    # reaches EOF, so only the parent's death can end the port.
    shell =
      Port.open({:spawn_executable, "/bin/sh"}, [
        :binary,
        :exit_status,
        args: [
          "-c",
          ~s(f=$(mktemp -u\); mkfifo "$f"; exec 3<>"$f"; rm "$f"; ) <>
            ~s("$0" --model-dir "$1" <&3 3<&- & echo "$!"; wait),
          port_path(),
          tmp_dir("orphan")
        ]
      ])

    port_os =
      receive do
        {^shell, {:data, line}} -> line |> String.trim() |> String.to_integer()
      after
        10_000 -> flunk("no pid from the shell")
      end

    # Its first frame (the ready log line) says it runs: only then is PR_SET_PDEATHSIG set,
    # a killed parent before that would only make the port a child of init unseen.
    receive do
      {^shell, {:data, _ready}} -> :ok
    after
      30_000 -> flunk("the port did not start")
    end

    {:os_pid, shell_os} = Port.info(shell, :os_pid)
    System.cmd("kill", ["-9", Integer.to_string(shell_os)])
    assert eventually(fn -> os_process_gone?(port_os) end, 3_000)
  end
end
