defmodule UroRecommender.Batch do
  @moduledoc """
  Coalescing of concurrent `recommend` calls into one `recommend_many` (the pool's
  `:batch_size` option, default 32; `batch_size: 1` turns it off). The decisions live here as
  plain data; `UroRecommender.Port` holds the calls and talks to the OS process.

  As in `Nx.Serving`, nothing waits for a batch to fill: a call that finds its port idle goes
  straight through. Only the calls that arrive while the port is answering at least 12 callers
  (`:batch_from`)
  (its frames in flight, every caller of a batch counted) are held, grouped by model, `N`,
  options and timeout, and each group goes out as one `recommend_many` as soon as the port has
  nothing in flight, or one frame left and half a batch held (`flush?/3`), or at once when it
  reaches `:batch_size`. A group of fewer than 4 goes out as its callers' own `recommend`
  frames, back to back.

  Why half a batch with one frame left: sent only once nothing was in flight, a batch found the
  port idle while its frame travelled, and a caller that answered late missed its group and
  waited behind one or two more. With the rule, one port at 64 clients (10k-item ALS, on a
  slower machine than the runs below) gave 2.08x to 2.15x the calls/s of no batching with p99
  0.49x to 0.60x in three runs, against 1.89x to 2.06x and 0.66x to 0.73x in five without it
  (bench/README.md, "Throughput"); holding 8 instead of half a batch (1.87x, 1.88x; p99 0.61x,
  0.60x) or 24 (2.08x, 2.03x; 0.59x, 0.49x) did no better; flushing on one frame left with any
  number held made small batches (1.67x, p99 0.77x). On a newer machine, with the kernel's
  shorter shortlist (c_src/rank.c), 15 runs of one port gave 1.98x to 2.74x the calls/s, p99
  0.32x to 0.60x, 11 of them at or below 0.5x.

  Why 12 (`:batch_from`): once the port's ranking got twice as cheap (issue 11's float32
  kernel: 45 us of port CPU a call at 10k items), holding from 4 callers on made one port
  with 8 clients 0.67x as fast as no batching, p50 1.53x, on a quiet machine; holding from 12
  on gave 1.00x and p50 1.01x, and at 64 clients still 1.38x the calls/s, p99 0.67x
  (bench/README.md, "Throughput"). Since the port ranks a batch's users together against
  transposed blocks of items (c_src/rank_fast.c; a user of a group of 32 costs the kernel
  about half a lone one at 10k items), 64 clients get 2.34x the calls/s of no batching, p99
  0.36x, on one machine, and 1.89x to 2.06x, p99 0.66x to 0.73x, on a slower one with a
  longer latency tail (before the half-batch rule above); 1 and 8 clients stay within 8 % for
  p50. The figures below are from before both changes.

  Why 4 (the smallest batch): measured on a 10k-item ALS model (pipelined, so the port never waited), a
  `recommend_many` of 1 to 3 users cost the port as much per user as separate `recommend`
  calls, or more; of 8 or more users a quarter to a half in two rounds of three (the third met
  a change of load). Holding calls as soon as one was in flight made 2 ports with 8 clients
  (3 or 4 callers a port) 0.65x to 1.02x as fast as no batching in eight runs (seven below
  0.93x), p50 0.92x to 1.8x; holding from 4 callers on gave 1.15x and 1.13x, p50 0.92x and
  0.98x, and kept one port's gains (64 clients: 2.7x the calls/s; bench/README.md,
  "Throughput").

  Only calls whose answer `recommend_many` gives exactly are held: `{recommend, Name, User, N}`
  and `{recommend, Name, User, N, Opts}` with an integer or binary `User`, a non-negative
  integer `N` and `Opts` a map of `filter_consumed`, `cold_start`, `exclude` and `scores`
  only (`seq` and `user_feats` are for `recommend` only), without `:events`. docs/PROTOCOL.md
  guarantees that a list is the same from `recommend` and `recommend_many`; the reply map is
  keyed by the user as sent, so each caller gets the list of its own user. When the port
  answers a batch with an error (one caller's bad user id fails the whole `recommend_many`,
  and the error would name `recommend_many`), every caller of that batch is sent again alone,
  so each gets exactly what a lone `recommend` answers (a reply that cannot be split is not
  given to anyone); only a batch the port interrupted at its timeout (`{:error, {:timeout,
  _}}`) gives every caller that error, so that no caller waits for more than its timeout
  again.

  Calls that are not held (any other command) first send whatever is held, so frames reach the
  port in the order the calls arrived: a `load` or `observe` never overtakes a `recommend`
  accepted before it, nor the reverse.
  """

  @batchable_opts [:filter_consumed, :cold_start, :exclude, :scores]
  # Calls are held from this many callers in flight on; smaller groups go out as separate
  # recommend frames (see the moduledoc).
  @min_batch 4

  @typedoc "A call as the port server keeps it: `{from, command, opts, accepted}`."
  @type member :: {term(), tuple(), keyword(), integer()}

  @typedoc "What calls are held: groups in order of their first call, each newest first."
  @type held :: %{groups: [{term(), [member()]}], count: non_neg_integer()}

  @doc """
  Whether a batchable call is held, given the port's frames in flight and the callers beyond
  the first of each batch among them: when the port is answering at least `from` callers (the
  pool's `:batch_from`, default 12; never fewer than 4).

      iex> UroRecommender.Batch.hold?(0, 0, 12)
      false
      iex> UroRecommender.Batch.hold?(8, 0, 12)
      false
      iex> UroRecommender.Batch.hold?(1, 11, 12)
      true
      iex> UroRecommender.Batch.hold?(3, 0, 1)
      false
  """
  @spec hold?(non_neg_integer(), non_neg_integer(), pos_integer()) :: boolean()
  def hold?(frames, batched, from),
    do: frames > 0 and frames + batched >= max(from, @min_batch)

  @doc """
  Whether what is held goes out now, as the port answers a frame and `frames` stay in flight:
  when none do, or when one does and at least half a batch is held (half of `max`, the pool's
  `:batch_size`, and never fewer than 4), so that the port finds that batch queued when it
  answers the last frame instead of waiting for it (see the moduledoc).

      iex> UroRecommender.Batch.flush?(0, 1, 32)
      true
      iex> UroRecommender.Batch.flush?(1, 16, 32)
      true
      iex> UroRecommender.Batch.flush?(1, 15, 32)
      false
      iex> UroRecommender.Batch.flush?(2, 31, 32)
      false
      iex> UroRecommender.Batch.flush?(1, 3, 2)
      false
  """
  @spec flush?(non_neg_integer(), non_neg_integer(), pos_integer()) :: boolean()
  def flush?(frames, held, max),
    do: frames == 0 or (frames == 1 and held >= max(div(max, 2), @min_batch))

  @doc """
  The group a call may be held in, or `nil` when it is never batched.

      iex> UroRecommender.Batch.key({:recommend, "m", 7, 10, %{scores: true}}, [], 32)
      {"m", 10, %{scores: true}, nil}
      iex> UroRecommender.Batch.key({:recommend, "m", 7, 10, %{seq: [1, 2]}}, [], 32)
      nil
      iex> UroRecommender.Batch.key({:recommend, "m", 7, 10}, [], 1)
      nil
  """
  @spec key(term(), keyword(), pos_integer()) :: term() | nil
  def key({:recommend, name, user, n}, call_opts, size),
    do: key({:recommend, name, user, n, %{}}, call_opts, size)

  def key({:recommend, name, user, n, opts}, call_opts, size)
      when size > 1 and (is_integer(user) or is_binary(user)) and is_integer(n) and n >= 0 and
             is_map(opts) do
    if Enum.all?(Map.keys(opts), &(&1 in @batchable_opts)) and
         Keyword.get(call_opts, :events) == nil,
       do: {name, n, opts, Keyword.get(call_opts, :timeout)}
  end

  def key(_command, _call_opts, _size), do: nil

  @doc "No call held."
  @spec new() :: held()
  def new, do: %{groups: [], count: 0}

  @doc """
  Holds `member` in group `key`. `{:full, members, held}` when the group reached `max`: those
  members (oldest first) are to be sent now and are no longer held.
  """
  @spec add(held(), term(), member(), pos_integer()) ::
          {:held, held()} | {:full, [member()], held()}
  def add(%{groups: groups, count: count}, key, member, max) do
    case List.keyfind(groups, key, 0) do
      nil when max <= 1 ->
        {:full, [member], %{groups: groups, count: count}}

      nil ->
        {:held, %{groups: groups ++ [{key, [member]}], count: count + 1}}

      {^key, members} when length(members) + 1 >= max ->
        {:full, Enum.reverse([member | members]),
         %{groups: List.keydelete(groups, key, 0), count: count - length(members)}}

      {^key, members} ->
        {:held,
         %{groups: List.keyreplace(groups, key, 0, {key, [member | members]}), count: count + 1}}
    end
  end

  @doc """
  What is held, as the frames to send, in order of each group's first call: a group of at
  least `min(4, max)` members is one frame (members oldest first), a smaller one a frame per
  member. Nothing stays held.

      iex> held = UroRecommender.Batch.new()
      iex> {:held, held} = UroRecommender.Batch.add(held, :k, :a, 32)
      iex> {:held, held} = UroRecommender.Batch.add(held, :k, :b, 32)
      iex> UroRecommender.Batch.take_all(held, 32)
      {[[:a], [:b]], %{groups: [], count: 0}}
      iex> UroRecommender.Batch.take_all(held, 2)
      {[[:a, :b]], %{groups: [], count: 0}}
  """
  @spec take_all(held(), pos_integer()) :: {[[member()]], held()}
  def take_all(%{groups: groups}, max) do
    least = min(@min_batch, max)

    frames =
      Enum.flat_map(groups, fn {_key, members} ->
        members = Enum.reverse(members)
        if length(members) < least, do: Enum.map(members, &[&1]), else: [members]
      end)

    {frames, new()}
  end

  @doc """
  The command that answers `members`: a lone member's own command, else one
  `recommend_many` for their users (each user once, in order).
  """
  @spec command([member()]) :: tuple()
  def command([{_from, command, _opts, _accepted}]), do: command

  def command([{_, first, _, _} | _] = members) do
    {name, n, opts} = shape(first)
    users = members |> Enum.map(fn {_, command, _, _} -> elem(command, 2) end) |> Enum.uniq()
    {:recommend_many, name, users, n, opts}
  end

  defp shape({:recommend, name, _user, n}), do: {name, n, %{}}
  defp shape({:recommend, name, _user, n, opts}), do: {name, n, opts}

  @doc """
  Each member's own reply out of the reply to `command(members)`:
  `{:ok, [{member, reply}]}`, or `:resend` when the members are to be sent again alone (an
  error reply, or a user missing from the reply map). A batch the port interrupted at its
  timeout gives every member that `{:error, {:timeout, _}}`.

      iex> a = {:a, {:recommend, "m", 1, 2}, [], 0}
      iex> b = {:b, {:recommend, "m", "x", 2}, [], 0}
      iex> UroRecommender.Batch.split([a, b], {:ok, %{1 => [5, 6], "x" => [6, 7]}})
      {:ok, [{a, {:ok, [5, 6]}}, {b, {:ok, [6, 7]}}]}
      iex> UroRecommender.Batch.split([a, b], {:error, {:badarg, "recommend_many: ..."}})
      :resend
  """
  @spec split([member()], term()) :: {:ok, [{member(), term()}]} | :resend
  def split(members, {:ok, lists}) when is_map(lists) do
    replies =
      Enum.map(members, fn {_, command, _, _} = m -> {m, Map.fetch(lists, elem(command, 2))} end)

    if Enum.all?(replies, fn {_m, found} -> match?({:ok, _}, found) end),
      do: {:ok, replies},
      else: :resend
  end

  # The port interrupted the batch at the callers' common timeout: sending each again could
  # make a caller wait many timeouts, so each gets the timeout.
  def split(members, {:error, {:timeout, _}} = reply),
    do: {:ok, Enum.map(members, &{&1, reply})}

  def split(_members, _reply), do: :resend
end
