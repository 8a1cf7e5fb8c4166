defmodule UroRecommender.Recorder do
  @moduledoc ~S"""
  Appends port traffic to a file in the replay harness format
  (`escript test/replay/replay.escript PORT_EXE FILE`): one Erlang term per call,

      {call, Command, CallOpts, "Pattern"}.

  where `Pattern` is the reply (`{ok, Value}` or `{error, {Kind, Detail}}`, the
  third element of the `{reply, Ref, Reply}` frame) printed with `~p`. Calls
  that got no reply (client-side timeout, port exit) are written as `%` comments,
  which `file:consult/1` skips.
  """

  @volatile_keys [:seconds, :path, :pid, :uptime_ms, :traceback, :elapsed_ms]

  @typedoc "An open recording, or `nil` when not recording."
  @type t :: :file.io_device() | nil

  @doc "Opens `path` for appending (creating its directory); `nil` gives `nil`."
  @spec open(Path.t() | nil) :: t
  def open(nil), do: nil

  def open(path) do
    path = to_string(path)
    File.mkdir_p!(Path.dirname(path))
    # :raw, :append: every line is one write(2) on an O_APPEND descriptor, so the
    # ports of a pool may share one file without tearing lines.
    {:ok, io} = :file.open(path, [:append, :raw, :binary])
    io
  end

  @doc "Writes one call and its reply."
  @spec record(t, term(), map(), term()) :: :ok
  def record(nil, _command, _call_opts, _reply), do: :ok

  def record(io, command, call_opts, reply) do
    :ok = :file.write(io, line(command, call_opts, reply))
  end

  @doc "Writes a comment line (a call that got no reply)."
  @spec comment(t, term(), iodata()) :: :ok
  def comment(nil, _command, _why), do: :ok

  def comment(io, command, why) do
    text = :io_lib.format(~c"~1000000000tp", [command])
    :ok = :file.write(io, ["% no reply (", why, "): ", text, "\n"])
  end

  @doc """
  The line for one call, as iodata: `:io_lib.format('~tp.~n', ...)` with a line
  length wide enough that the whole term stays on one line.

  The pattern is the reply printed with `~p`, with what cannot repeat on a
  replay replaced by `_`: floats (training times, scores, metrics), and the
  values of the keys #{inspect(@volatile_keys)} (OS pids, clocks, paths under
  the model directory, tracebacks). Everything else (ids, items, counts,
  versions, error kinds) must match exactly. `info` replies are recorded as
  `{ok, _}`.
  """
  @spec line(term(), map(), term()) :: iodata()
  def line(command, call_opts, reply) do
    :io_lib.format(~c"~1000000000tp.~n", [{:call, command, call_opts, pattern(command, reply)}])
  end

  @doc """
  The replay pattern of a reply (a charlist), see `line/3`.

      iex> UroRecommender.Recorder.pattern({:recommend, "m", 1, 2, %{scores: true}}, {:ok, [{7, 0.5}]})
      ~c"{ok,[{7,_}]}"
  """
  @spec pattern(term(), term()) :: charlist()
  def pattern(:info, {:ok, _}), do: ~c"{ok,_}"

  def pattern(_command, reply) do
    :io_lib.format(~c"~p", [wild(reply)])
    |> :lists.flatten()
    |> :string.replace(~c"'$uro_any'", ~c"_", :all)
    |> :lists.flatten()
  end

  defp wild(f) when is_float(f), do: :"$uro_any"
  defp wild(l) when is_list(l), do: wild_list(l)
  defp wild(t) when is_tuple(t), do: t |> Tuple.to_list() |> Enum.map(&wild/1) |> List.to_tuple()

  defp wild(m) when is_map(m) do
    Map.new(m, fn
      {k, _v} when k in @volatile_keys -> {k, :"$uro_any"}
      {k, v} -> {k, wild(v)}
    end)
  end

  defp wild(x), do: x

  # Keeps improper lists improper, and leaves printable lists (strings) alone.
  defp wild_list([h | t]), do: [wild(h) | wild_list(t)]
  defp wild_list([]), do: []
  defp wild_list(tail), do: wild(tail)

  @doc "Closes the file."
  @spec close(t) :: :ok
  def close(nil), do: :ok
  def close(io), do: :file.close(io)
end
