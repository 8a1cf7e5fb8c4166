defmodule UroRecommender.Interactions do
  @schema [
    name: {:atom, UroRecommender.Interactions, "the recorder's registered name"},
    pool: {:atom, UroRecommender, "the pool whose serving ports write and apply the rows"},
    flush_ms: {:pos_integer, 1_000, "a flush at least this often while rows wait"},
    flush_rows: {:pos_integer, 500, "a flush as soon as this many rows wait"},
    max_batch:
      {:pos_integer, 5_000,
       "rows in one flush at most (one INSERT); with more waiting, the next flush follows at once"},
    max_buffer:
      {:pos_integer, 10_000, "rows accepted and not yet written; past it, `record` drops"},
    table: {:string, "`\"uro_rec_interactions\"`", "the interactions table"},
    ids: {{:in, [:uuid, :text]}, :uuid, "`:uuid` (uro's table) or `:text` ids"},
    users_table:
      {:string, "`\"users\"`",
       "rows of users no longer in this table (an account deleted) are skipped; `check_users: false` turns it off"},
    check_users: {:boolean, true, "check `users_table` (see above)"},
    observe:
      {:map, %{world: ["worlds_you_may_like"]},
       "kind => models each written row is `observe`d into (`store: false`), so that serving ports stop recommending what the user just visited"},
    timeout: {:pos_integer, 15_000, "ms for each port call of a flush"}
  ]

  @moduledoc """
  Records what users do, for training, without making them wait for the database.

      UroRecommender.Interactions.record(user.id, :world, map.id)        # a visit, weight 1.0
      UroRecommender.Interactions.record(user.id, :avatar, avatar.id, 2.0)

  `record/4` checks its arguments, counts the row against `max_buffer` with an `:atomics`
  counter and casts it to the recorder: about a microsecond, whatever the database does. The
  recorder buffers rows and flushes them every `flush_ms`, or as soon as `flush_rows` wait:
  one `record_interactions` call on a serving port, one multi-row `INSERT` in a transaction
  the port retries on 40001 (docs/PROTOCOL.md), then the rows go to `observe` (never stored
  again) for the models of `:observe`, on every serving port of this node. A flush runs in a
  process of its own, so rows keep being accepted meanwhile.

  ## What is lost, and when

    * **Buffer full** (`max_buffer` rows accepted and not yet written: the database is slow or
      down): `record/4` returns `{:error, :full}` at once and counts the row in `dropped`. It
      never blocks and never queues more.
    * **A flush fails** on a connection loss, a serialization failure past the port's retries,
      a port restart or a timeout: its rows go back to the head of the buffer and are sent
      again, after `flush_ms`, doubling to 30 s while flushes keep failing (one warning on the
      first failure, then every tenth); each row carries a UUID chosen before the first attempt and the
      insert skips ids already there, so a retry never writes a row twice. A flush refused for
      any other reason (a table missing, a constraint) is dropped and counted in `rejected`,
      so one bad batch cannot stop the rows behind it.
    * **The recorder crashes or the node dies**: what it held is lost: at most the unflushed
      buffer (at most `max_buffer` rows; in steady state the rows of the last `flush_ms`).
      Rows whose insert had committed are in the table.
    * **An orderly stop** (the host shutting down): `terminate/2` flushes what is left, within
      the child's shutdown time (`timeout` + 5 s).

  Rows of a user `forget_user/2` removed, recorded before the removal and still in a buffer
  (of this node or another), are skipped by the insert; rows of a user deleted from
  `users_table` too (their foreign key would refuse them).

  ## Options

  #{UroRecommender.Config.table(@schema)}

  Also from `config :uro_recommender, UroRecommender.Interactions, [...]`; the child spec's
  options win. Unknown keys raise `ArgumentError`.
  """
  use GenServer
  require Logger

  alias UroRecommender.{Config, UUID}

  @kinds [:world, :avatar, :prop]
  # :atomics slots
  @pending 1
  @accepted 2
  @dropped 3
  @written 4
  @skipped 5
  @rejected 6
  @flushes 7
  @failed 8
  @names [:pending, :accepted, :dropped, :written, :skipped, :rejected, :flushes, :failed_flushes]

  @doc "Child spec: `{UroRecommender.Interactions, opts}`; raises on invalid options."
  def child_spec(opts) do
    opts = Config.resolve(__MODULE__, opts, @schema)

    %{
      id: opts[:name],
      start: {__MODULE__, :start_link, [opts]},
      shutdown: opts[:timeout] + 5_000
    }
  end

  @doc "Starts the recorder (see the options above)."
  def start_link(opts) do
    opts = Config.resolve(__MODULE__, opts, @schema)
    GenServer.start_link(__MODULE__, opts, name: opts[:name])
  end

  @doc """
  Records that `user_id` interacted with item `item_id` of `kind` (`:world`, `:avatar` or
  `:prop`) with `weight` (default 1.0), now. Returns at once: `:ok`, `{:error, :full}` (the
  row was dropped, see above), `{:error, :not_started}` or `{:error, {:badarg, why}}`.
  Option: `:server` (default `UroRecommender.Interactions`).
  """
  @spec record(String.t(), atom(), String.t(), number(), keyword()) ::
          :ok | {:error, :full | :not_started | {:badarg, String.t()}}
  def record(user_id, kind, item_id, weight \\ 1.0, opts \\ []) do
    server = Keyword.get(opts, :server, __MODULE__)

    with {:ok, %{counters: c, max: max, ids: ids}} <- meta(server),
         {:ok, row} <- row(user_id, kind, item_id, weight, ids) do
      if :atomics.add_get(c, @pending, 1) > max do
        :atomics.sub(c, @pending, 1)
        :atomics.add(c, @dropped, 1)
        {:error, :full}
      else
        :atomics.add(c, @accepted, 1)
        GenServer.cast(server, {:record, row})
      end
    end
  end

  defp row(user, kind, item, weight, ids) do
    with {:ok, user} <- id(user, ids, "user_id"),
         {:ok, item} <- id(item, ids, "item_id"),
         {:ok, kind} <- kind(kind) do
      if is_number(weight),
        do: {:ok, {user, kind, item, weight / 1, System.os_time(:microsecond) / 1_000_000}},
        else: {:error, {:badarg, "weight must be a number, got: #{inspect(weight)}"}}
    end
  end

  defp id(value, :uuid, field) do
    case UUID.cast(value) do
      {:ok, uuid} -> {:ok, uuid}
      :error -> {:error, {:badarg, "#{field} must be a UUID string, got: #{inspect(value)}"}}
    end
  end

  defp id(value, :text, _field) when is_binary(value) and byte_size(value) > 0,
    do: {:ok, value}

  defp id(value, :text, field),
    do: {:error, {:badarg, "#{field} must be a non-empty string, got: #{inspect(value)}"}}

  defp kind(kind) when kind in @kinds, do: {:ok, kind}
  defp kind(kind) when kind in ["world", "avatar", "prop"], do: {:ok, String.to_atom(kind)}

  defp kind(kind),
    do: {:error, {:badarg, "kind must be one of #{inspect(@kinds)}, got: #{inspect(kind)}"}}

  @doc """
  Removes everything recorded of `user_id`: the rows still in this node's buffer, then, in one
  transaction, their rows in the interactions table and their exported lists of every model
  (`forget_user` on a serving port). Returns `{:ok, %{buffered, interactions,
  recommendations}}` (the rows removed from each). What stays, until the next training, is in
  the trained versions: see docs/URO.md, "forget_user". Works without a running recorder too
  (nothing is buffered then). Options: `:server`, `:pool`, `:timeout`.
  """
  @spec forget_user(String.t(), keyword()) :: {:ok, map()} | {:error, term()}
  def forget_user(user_id, opts \\ []) do
    server = Keyword.get(opts, :server, __MODULE__)

    case Process.whereis(server) do
      nil ->
        table = Keyword.get(opts, :table, "uro_rec_interactions")
        pool = Keyword.get(opts, :pool, UroRecommender)
        timeout = Keyword.get(opts, :timeout, 15_000)
        forget_in_database(user_id, %{table: table, pool: pool, timeout: timeout}, 0)

      pid ->
        GenServer.call(pid, {:forget, user_id}, Keyword.get(opts, :timeout, 60_000))
    end
  end

  @doc "Writes what is buffered now and returns once it is written (or the flush failed)."
  @spec flush(GenServer.server(), timeout()) :: {:ok, map()} | {:error, term()}
  def flush(server \\ __MODULE__, timeout \\ 60_000), do: GenServer.call(server, :flush, timeout)

  @doc """
  The recorder's counters: `pending` (accepted, not yet written), `accepted`, `dropped`
  (buffer full), `written`, `skipped` (forgotten or deleted users, ids already written),
  `rejected` (refused flushes' rows), `flushes`, `failed_flushes`.
  """
  @spec stats(GenServer.server()) :: map()
  def stats(server \\ __MODULE__) do
    {:ok, %{counters: c}} = meta(server)
    Map.new(Enum.with_index(@names, 1), fn {name, i} -> {name, :atomics.get(c, i)} end)
  end

  defp meta(server) do
    case :persistent_term.get({__MODULE__, server}, nil) do
      nil -> {:error, :not_started}
      meta -> {:ok, meta}
    end
  end

  # ---- the recorder ---------------------------------------------------------------------------

  @impl true
  def init(opts) do
    Process.flag(:trap_exit, true)
    counters = :atomics.new(length(@names), signed: true)
    meta = %{counters: counters, max: opts[:max_buffer], ids: opts[:ids]}
    :persistent_term.put({__MODULE__, opts[:name]}, meta)
    Process.send_after(self(), :tick, opts[:flush_ms])

    {:ok,
     %{
       opts: Map.new(opts),
       c: counters,
       # Rows waiting: `ready` in the order recorded (the next flushes take from its head),
       # `buffer` newest first (a cast prepends); `count` is both together.
       ready: [],
       buffer: [],
       count: 0,
       inflight: nil,
       # Failed flushes in a row, and no flush before `paused_until` (monotonic ms): the
       # next attempt waits flush_ms, doubling to 30 s, instead of retrying at once.
       failures: 0,
       paused_until: nil,
       forgets: [],
       waiters: []
     }}
  end

  @impl true
  def handle_cast({:record, row}, state) do
    state = %{state | buffer: [row | state.buffer], count: state.count + 1}
    {:noreply, if(state.count >= state.opts.flush_rows, do: start_flush(state), else: state)}
  end

  @impl true
  def handle_call(:flush, from, state) do
    if state.count == 0 and state.inflight == nil,
      do: {:reply, {:ok, stats_of(state)}, state},
      else: {:noreply, start_flush(%{state | waiters: [from | state.waiters]})}
  end

  def handle_call({:forget, user}, from, state) do
    user = canonical(user, state.opts.ids)
    {ready, removed_ready} = without_user(state.ready, user)
    {buffer, removed_buffer} = without_user(state.buffer, user)
    removed = removed_ready + removed_buffer
    :atomics.sub(state.c, @pending, removed)
    state = %{state | ready: ready, buffer: buffer, count: state.count - removed}

    if state.inflight,
      do: {:noreply, %{state | forgets: [{from, user, removed} | state.forgets]}},
      else: {:reply, forget_in_database(user, state.opts, removed), state}
  end

  @impl true
  def handle_info(:tick, state) do
    Process.send_after(self(), :tick, state.opts.flush_ms)
    {:noreply, if(state.count > 0, do: start_flush(state), else: state)}
  end

  def handle_info({:DOWN, ref, :process, _, reason}, %{inflight: {ref, rows}} = state) do
    outcome =
      case reason do
        {:flushed, outcome} -> outcome
        other -> {:error, {:flush_crashed, other}}
      end

    state = %{state | inflight: nil} |> flushed(rows, outcome) |> run_forgets()
    state = if state.count >= state.opts.flush_rows, do: start_flush(state), else: state
    {:noreply, answer_waiters(state, outcome)}
  end

  def handle_info(_other, state), do: {:noreply, state}

  @impl true
  def terminate(_reason, state) do
    # An orderly stop writes what is left (a crash does not get here: see the moduledoc).
    rows =
      case state.inflight do
        {ref, rows} ->
          receive do
            {:DOWN, ^ref, :process, _, {:flushed, {:ok, _}}} -> []
          after
            state.opts.timeout -> rows
          end

        nil ->
          []
      end

    (rows ++ with_ids(state.ready ++ Enum.reverse(state.buffer)))
    |> Enum.chunk_every(state.opts.max_batch)
    |> Enum.each(&write(&1, state.opts))

    :ok
  end

  # ---- flushing -------------------------------------------------------------------------------

  defp start_flush(%{inflight: nil, count: n} = state) when n > 0 do
    # (Monotonic time may be negative: nil, not 0, means "not paused".)
    if state.paused_until == nil or System.monotonic_time(:millisecond) >= state.paused_until,
      do: send_batch(state),
      else: state
  end

  defp start_flush(state), do: state

  defp send_batch(%{count: n} = state) do
    state =
      if state.ready == [],
        do: %{state | ready: Enum.reverse(state.buffer), buffer: []},
        else: state

    {batch, ready} = Enum.split(state.ready, state.opts.max_batch)
    rows = with_ids(batch)
    opts = state.opts
    {_pid, ref} = spawn_monitor(fn -> exit({:flushed, write(rows, opts)}) end)
    %{state | ready: ready, count: n - length(rows), inflight: {ref, rows}}
  end

  # Rows get their UUID once, before their first attempt: a retry sends the same ids.
  defp with_ids(rows) do
    fresh = Enum.count(rows, &(tuple_size(&1) == 5))
    {out, []} = Enum.map_reduce(rows, UUID.generate(fresh), &with_id/2)
    out
  end

  defp with_id({_, _, _, _, _} = row, [id | ids]), do: {Tuple.insert_at(row, 0, id), ids}
  defp with_id(row, ids), do: {row, ids}

  # In the flush's own process: the insert, then observe for the models fed by these kinds.
  defp write(rows, opts) do
    users = if opts.check_users, do: opts.users_table || "users"
    spec = %{table: opts.table || "uro_rec_interactions", ids: opts.ids, users: users}
    call = [timeout: opts.timeout]

    case UroRecommender.Pool.call(opts.pool, {:record_interactions, rows, spec}, call) do
      {:ok, written} ->
        observe(rows, opts)
        {:ok, written}

      error ->
        error
    end
  end

  defp observe(rows, opts) do
    for {kind, models} <- opts.observe,
        events = for({_id, u, ^kind, i, w, t} <- rows, do: {u, i, w, t}),
        events != [],
        model <- List.wrap(models) do
      case UroRecommender.observe(model, events,
             pool: opts.pool,
             timeout: opts.timeout,
             store: false
           ) do
        {:ok, _} -> :ok
        # Not trained yet, or no port up: the rows are in the table, the next training has them.
        {:error, _} -> :ok
      end
    end
  end

  defp flushed(state, rows, {:ok, %{written: w, skipped: s}}) do
    n = length(rows)
    :atomics.sub(state.c, @pending, n)
    :atomics.add(state.c, @written, w)
    :atomics.add(state.c, @skipped, s)
    :atomics.add(state.c, @flushes, 1)

    if state.failures > 0,
      do:
        Logger.info(
          "uro_recommender: interactions written again after #{state.failures} failed flushes"
        )

    %{state | failures: 0, paused_until: nil}
  end

  defp flushed(state, rows, {:error, reason}) do
    :atomics.add(state.c, @failed, 1)
    failures = state.failures + 1

    pause =
      UroRecommender.Backoff.delay(
        failures,
        {state.opts.flush_ms, max(state.opts.flush_ms, 30_000)}
      )

    state = %{
      state
      | failures: failures,
        paused_until: System.monotonic_time(:millisecond) + pause
    }

    if retryable?(reason) do
      if failures == 1 or rem(failures, 10) == 0 do
        Logger.warning(
          "uro_recommender: interactions not written yet (#{failures} failed flushes in a row, " <>
            "#{state.count + length(rows)} rows waiting): #{inspect(reason)}; next attempt in #{pause} ms"
        )
      end

      # Back at the head of the buffer: the oldest rows are written first.
      %{state | ready: rows ++ state.ready, count: state.count + length(rows)}
    else
      Logger.error(
        "uro_recommender: #{length(rows)} interactions refused, dropped: #{inspect(reason)}"
      )

      :atomics.sub(state.c, @pending, length(rows))
      :atomics.add(state.c, @rejected, length(rows))
      state
    end
  end

  @retry_states ["08", "40", "53", "57"]
  defp retryable?({:database, %{sqlstate: <<class::binary-2, _::binary>>}}),
    do: class in @retry_states

  defp retryable?({kind, _}) when kind in [:port_exited, :port_down, :timeout, :flush_crashed],
    do: true

  defp retryable?(reason), do: reason in [:unavailable, :not_started, :timeout]

  defp answer_waiters(%{waiters: []} = state, _outcome), do: state

  defp answer_waiters(state, outcome) do
    cond do
      match?({:error, _}, outcome) ->
        Enum.each(state.waiters, &GenServer.reply(&1, outcome))
        %{state | waiters: []}

      state.count == 0 and state.inflight == nil ->
        Enum.each(state.waiters, &GenServer.reply(&1, {:ok, stats_of(state)}))
        %{state | waiters: []}

      true ->
        start_flush(state)
    end
  end

  defp stats_of(state), do: stats(state.opts.name)

  # ---- forgetting -----------------------------------------------------------------------------

  defp canonical(user, :uuid) do
    case UUID.cast(user) do
      {:ok, uuid} -> uuid
      :error -> user
    end
  end

  defp canonical(user, :text), do: user

  defp without_user(buffer, user) do
    {removed, kept} = Enum.split_with(buffer, &(user_of(&1) == user))
    {kept, length(removed)}
  end

  defp user_of({user, _, _, _, _}), do: user
  defp user_of({_id, user, _, _, _, _}), do: user

  defp run_forgets(%{forgets: []} = state), do: state

  defp run_forgets(state) do
    for {from, user, removed} <- Enum.reverse(state.forgets),
        do: GenServer.reply(from, forget_in_database(user, state.opts, removed))

    %{state | forgets: []}
  end

  defp forget_in_database(user, opts, buffered) do
    table = opts[:table] || "uro_rec_interactions"

    case UroRecommender.Pool.call(opts[:pool], {:forget_user, user, %{table: table}},
           timeout: opts[:timeout]
         ) do
      {:ok, counts} -> {:ok, Map.put(counts, :buffered, buffered)}
      error -> error
    end
  end
end
