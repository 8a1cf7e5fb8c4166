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

  # Issue 13, failure 7: `~p` printed lists of integer ids as Latin-1 strings, written as raw
  # bytes that file:consult refuses (invalid_unicode); accented ids broke the same way.
  test "integer ids 1..400 and accented ids: UTF-8 lines, lists kept as lists" do
    file = Path.join(tmp_dir("utf8_line"), "ids.session")
    io = Recorder.open(file)
    lists = Map.new(1..400, fn u -> {u, [rem(u * 7, 400) + 1, rem(u * 13, 400) + 1, u]} end)
    Recorder.record(io, {:recommend_many, "m", Enum.to_list(1..400), 3}, %{}, {:ok, lists})
    Recorder.record(io, {:echo, [45, 57, 210]}, %{}, {:ok, [45, 57, 210]})

    Recorder.record(
      io,
      {:recommend, "josé", "zoë", 3, %{exclude: [~c"é"]}},
      %{},
      {:ok, ["josé", <<255, 254>>, [1 | 2], %{"ñ" => [10, 13]}]}
    )

    Recorder.close(io)

    assert {:ok, [many, echo, accented]} = :file.consult(String.to_charlist(file))
    assert String.valid?(File.read!(file))
    assert {:call, {:recommend_many, "m", users, 3}, %{}, p} = many
    assert users == Enum.to_list(1..400)
    assert to_string(p) =~ ~r/^\{ok,\#\{1 => \[8,14,1\],2 => \[15,27,2\],/
    assert echo == {:call, {:echo, [45, 57, 210]}, %{}, ~c"{ok,[45,57,210]}"}
    assert {:call, {:recommend, "josé", "zoë", 3, %{exclude: [[233]]}}, %{}, p} = accented
    assert to_string(p) == ~s({ok,[<<"josé"/utf8>>,<<"ÿþ">>,[1|2],\#{<<"ñ"/utf8>> => [10,13]}]})
  end

  test "characters beyond Latin-1, and comments, are UTF-8 too" do
    file = Path.join(tmp_dir("utf8_wide"), "wide.session")
    io = Recorder.open(file)
    Recorder.record(io, {:echo, {:日本, "日本", ~c"日本"}}, %{}, {:ok, {:日本, "日本", ~c"日本"}})
    Recorder.comment(io, {:recommend, "josé", [233, 26085], 1}, "timeout")
    Recorder.close(io)

    text = File.read!(file)
    assert String.valid?(text)
    assert {:ok, [{:call, {:echo, term}, %{}, p}]} = :file.consult(String.to_charlist(file))
    assert term == {:日本, "日本", ~c"日本"}
    assert to_string(p) =~ "{ok,{'日本',<<"
    assert text =~ "% no reply (timeout): {recommend,<<\"josé\"/utf8>>,[233,26085],1}"
  end

  # Issue 13: a pool recorded over a model with ids 1..400 wrote lines file:consult could not
  # read (`~p` printed id lists as Latin-1 strings, written as raw bytes), and accented ids
  # broke the same way. This records integer and accented ids and the reply shapes the
  # replay sessions use (ok values, maps, scored lists, floats, every error kind a call can
  # get), then replays the file against a fresh port.
  @tag timeout: 600_000
  test "a recording with ids 1..400, accented ids and every reply shape replays" do
    faults = [{"URO_REC_FAULTS", "1"}]
    {port, file} = recording_port("record_utf8", env: faults, timeout: 300_000)

    ints = for u <- 1..400, k <- [7, 13, 31, 59, 101], do: {u, rem(u * k, 400) + 1, 1}
    names = ["josé", "zoë", "ñandú", "日本", "Ørsted", "naïve", "crème", "straße"]

    accented =
      for {u, a} <- Enum.with_index(names),
          {i, b} <- Enum.with_index(names),
          rem(a + b, 3) != 0,
          do: {u, "item-" <> i, 1}

    spec = fn rows ->
      %{algorithm: "ALS", data: {:rows, rows}, params: %{n_epochs: 2, embed_size: 8}}
    end

    call = fn command -> Port.call(port, command) end

    echoes = [
      [45, 57, 210],
      ~c"josé",
      "josé",
      :josé,
      :日本,
      <<255, 254, 0>>,
      [7, 8, 9, 10, 27],
      {1, -2, 2 ** 70, -(2 ** 70), 1.5, -0.0},
      %{"josé" => [1, 2, 3], 400 => {}},
      {[], {}, %{}, true, false, nil},
      [[10], [13], [0], [255]]
    ]

    for term <- echoes, do: assert({:ok, _} = call.({:echo, term}))
    assert {:ok, :pong} = call.(:ping)
    assert {:ok, %{}} = call.(:info)
    assert {:ok, %{version: 1}} = call.({:train, "ints", spec.(ints)})
    assert {:ok, %{version: 1}} = call.({:train, "accents", spec.(accented)})
    for u <- 1..400, do: assert({:ok, [_ | _]} = call.({:recommend, "ints", u, 3}))
    assert {:ok, %{}} = call.({:recommend_many, "ints", Enum.to_list(1..400), 3, %{scores: true}})
    for u <- names, do: assert({:ok, [_ | _]} = call.({:recommend, "accents", u, 2, %{}}))
    assert {:ok, %{}} = call.({:recommend_many, "accents", names, 2, %{scores: true}})
    assert {:ok, [_ | _]} = call.({:similar_items, "ints", 45, 5})
    assert {:ok, [_ | _]} = call.({:similar_items, "accents", "item-josé", 2})
    assert {:ok, [_, _, _]} = call.({:predict, "ints", 45, [57, 210, 9999]})
    assert {:ok, %{events: 1}} = call.({:observe, "ints", [{45, 57, 1.0}], %{store: false}})
    assert {:ok, %{}} = call.({:evaluate, "ints", {:rows, Enum.take(ints, 300)}, %{k: 3}})
    assert {:ok, %{version: 2}} = call.({:save, "ints"})
    assert {:ok, %{version: 1}} = call.({:load, "ints", %{version: 1}})
    assert {:ok, [_, _]} = call.(:models)
    assert {:ok, :ok} = call.({:unload, "accents"})
    assert {:error, {:unknown_model, _}} = call.({:recommend, "accents", "josé", 2, %{}})
    assert {:error, {:unknown_command, _}} = call.({:nope, "josé"})
    assert {:error, {:badarg, _}} = call.({:recommend, "ints", 1.5, 3})

    assert {:error, {:unsupported, _}} =
             call.({:train, "x", spec.(ints) |> Map.put(:algorithm, "PinSageDGL")})

    assert {:error, {:python, %{type: "MemoryError"}}} = call.({:fault, :oom})
    assert {:error, {:timeout, _}} = Port.call(port, {:fault, :hang}, timeout: 300)
    GenServer.stop(port)

    assert String.valid?(File.read!(file))
    assert {:ok, entries} = :file.consult(String.to_charlist(file))
    assert length(entries) == length(echoes) + 400 + length(names) + 21
    assert {:call, {:echo, [45, 57, 210]}, _, ~c"{ok,[45,57,210]}"} = hd(entries)

    assert_replays(file, faults)
  end

  @tag timeout: 300_000
  test "a recorded session replays with test/replay/replay.escript" do
    {port, file} = recording_port("record", timeout: 120_000)

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
    assert_replays(file, [])
  end

  # A port server recording into a new file: {server, file}.
  defp recording_port(tag, opts) do
    dir = tmp_dir(tag)
    file = Path.join(dir, "#{tag}.session")
    opts = [port_path: port_path(), model_dir: Path.join(dir, "models"), record: file] ++ opts
    {:ok, port} = Port.start_link(opts)
    {port, file}
  end

  defp assert_replays(file, env) do
    {out, status} =
      System.cmd("escript", [@replay, port_path(), file], stderr_to_stdout: true, env: env)

    assert status == 0, "replay failed:\n#{out}\n--- session:\n#{File.read!(file)}"
    assert out =~ "0 failed"
  end
end
