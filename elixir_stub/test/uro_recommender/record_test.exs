defmodule UroRecommender.RecordTest do
  use ExUnit.Case, async: false

  import UroRecommender.TestHelpers

  alias UroRecommender.{Port, Recorder}

  @replay Path.expand("../../../test/replay/replay.escript", __DIR__)

  test "a recorded line is a consultable {call, Command, CallOpts, Pattern} term" do
    file = Path.join(tmp_dir("line"), "one.session")
    io = Recorder.open(file)
    Recorder.record(io, :ping, %{}, {:ok, :pong})
    Recorder.record(io, {:echo, %{a: [1.5, "x"]}}, %{timeout_ms: 5}, {:ok, %{a: [1.5, "x"]}})
    Recorder.comment(io, {:fault, :hang}, "timeout")
    Recorder.close(io)

    assert {:ok, [first, second]} = :file.consult(String.to_charlist(file))
    assert first == {:call, :ping, %{}, ~c"{ok,pong}"}
    assert {:call, {:echo, %{a: [1.5, "x"]}}, %{timeout_ms: 5}, pattern} = second
    assert to_string(pattern) == ~s({ok,\#{a => [_,<<"x">>]}})
    assert File.read!(file) |> String.split("\n", trim: true) |> length() == 3
  end

  @tag timeout: 300_000
  test "a recorded session replays with test/replay/replay.escript" do
    dir = tmp_dir("record")
    file = Path.join(dir, "session.session")

    {:ok, port} =
      Port.start_link(
        port_path: port_path(),
        model_dir: Path.join(dir, "models"),
        record: file,
        timeout: 120_000
      )

    assert {:ok, :pong} = Port.call(port, :ping)
    assert {:ok, {:a, "b", [1, 2]}} = Port.call(port, {:echo, {:a, "b", [1, 2]}})
    assert {:ok, %{version: 1}} = Port.call(port, {:train, "rec", tiny_spec(1)})
    assert {:ok, [_ | _]} = Port.call(port, {:recommend, "rec", 3, 5, %{}})
    assert {:ok, [_ | _]} = Port.call(port, {:recommend, "rec", 3, 5, %{scores: true}})
    assert {:ok, %{version: 2}} = Port.call(port, {:save, "rec"})
    assert {:ok, %{version: 1}} = Port.call(port, {:load, "rec", %{version: 1}})
    assert {:error, {:unknown_model, _}} = Port.call(port, {:recommend, "none", 3, 5, %{}})
    GenServer.stop(port)

    assert {:ok, entries} = :file.consult(String.to_charlist(file))
    assert length(entries) == 8

    if File.exists?(@replay) do
      {out, status} = System.cmd("escript", [@replay, port_path(), file], stderr_to_stdout: true)
      assert status == 0, "replay failed:\n#{out}\n--- session:\n#{File.read!(file)}"
      assert out =~ "0 failed"
    else
      IO.puts("\nskipping the replay: #{@replay} does not exist yet")
    end
  end
end
