defmodule UroRecommender.Pool do
  @moduledoc """
  A supervisor of `pool_size` serving ports and one training port.

    * Serving calls (`recommend`, `predict`, ...) go to the serving port with the
      fewest calls in flight (an `:atomics` counter per port, kept by the port
      server; ties go round-robin).
    * Concurrent `recommend` calls that reach a port while it is answering at least 12 (`:batch_from`)
      callers are held and sent as one `recommend_many` for the same model, `N` and
      options, at most `:batch_size` (default 32; `1` turns it off) callers at a time, each
      answered with its own list or error; a call that finds its port idle goes straight
      through, and fewer than 4 held calls go as separate `recommend`s
      (`UroRecommender.Batch`). Throughput grows with load: docs/OPERATIONS.md,
      "Throughput: batching and pool size", has the figures and what pool size to choose.
    * `train`, `evaluate`, `export` and `publish` go to the training port, so a
      long training never delays a recommendation.
    * After a `train` that saved a version, and after a `load`, every serving
      port loads that version ("hot swap"). A port answers its calls strictly in
      order, so calls sent before the `load` are answered by the old model and
      calls after it by the new one; nothing is dropped.
    * The supervisor owns an ETS table with the models each port has loaded
      (`UroRecommender.ModelStore`); a port whose OS process dies starts a new one,
      which reloads them before it serves (see `UroRecommender.Port`). The serving
      ports share one entry, so a port that was down during a hot swap comes back
      with the new version.
    * A port slot that cannot start (missing executable, Python not starting, wrong
      protocol...) is `:degraded` and tries again with a backoff; it is skipped by
      the routing, and when no serving slot is ready or starting, calls answer
      `{:error, :unavailable}` at once. The port servers never exit because of their
      OS process, so the supervisor's restart intensity (10 in 30 s) is left for
      bugs and the host's supervision tree is never taken down by a broken port.
      `status/1` shows every slot.

  Options: those of `UroRecommender.Config`, validated when the pool starts.
  """
  use Supervisor
  require Logger

  alias UroRecommender.{Config, ModelStore, Port}

  @typedoc "The registered name of a pool."
  @type pool :: atom()

  @doc "Starts the pool under the caller; raises `ArgumentError` on invalid options."
  @spec start_link(keyword()) :: Supervisor.on_start()
  def start_link(opts \\ []) do
    config = Config.resolve(opts)
    Supervisor.start_link(__MODULE__, config, name: Keyword.fetch!(config, :name))
  end

  @doc false
  def child_spec(opts) do
    opts = Config.validate!(opts)
    name = Keyword.get(opts, :name, UroRecommender)

    %{id: name, start: {__MODULE__, :start_link, [opts]}, type: :supervisor}
  end

  @impl true
  def init(config) do
    name = Keyword.fetch!(config, :name)
    size = Keyword.fetch!(config, :pool_size)

    # Owned by this supervisor: survives the restart of any port server.
    table = :ets.new(__MODULE__, [:set, :public, read_concurrency: true])
    busy = :atomics.new(size + 1, signed: true)
    # Each slot's state (UroRecommender.Port: 2 ready, 1 starting, 0 degraded); the training
    # slot is the last.
    phases = :atomics.new(size + 1, signed: false)
    next = :atomics.new(1, signed: false)

    :persistent_term.put({__MODULE__, name}, %{
      size: size,
      table: table,
      busy: busy,
      phases: phases,
      next: next,
      train_timeout: Keyword.fetch!(config, :train_timeout)
    })

    port_opts =
      config
      |> Keyword.drop([:name, :pool_size, :train_timeout])
      |> Keyword.put(:store, table)

    slot = fn id, index, key ->
      Supervisor.child_spec(
        {Port,
         port_opts ++
           [
             name: port_name(name, id),
             id: {name, id},
             store_key: key,
             busy: {busy, index},
             phase: {phases, index}
           ]},
        id: if(id == :train, do: :train, else: {:serving, id})
      )
    end

    children = [slot.(:train, size + 1, :train) | for(i <- 1..size, do: slot.(i, i, :serving))]
    Supervisor.init(children, strategy: :one_for_one, max_restarts: 10, max_seconds: 30)
  end

  # ---- routing ----------------------------------------------------------------------------

  @doc "The registered name of serving port `i` (1-based) or of the training port (`:train`)."
  @spec port_name(pool(), pos_integer() | :train) :: atom()
  def port_name(pool, :train), do: Module.concat(pool, Train)
  def port_name(pool, i) when is_integer(i), do: Module.concat(pool, "Serving#{i}")

  @doc "Number of serving ports."
  @spec size(pool()) :: pos_integer()
  def size(pool), do: meta!(pool).size

  @doc "Calls in flight on each serving port, in port order."
  @spec busy(pool()) :: [non_neg_integer()]
  def busy(pool) do
    %{busy: busy, size: size} = meta!(pool)
    for i <- 1..size, do: :atomics.get(busy, i)
  end

  @doc """
  The serving port to send a call to: the ready one with the fewest calls in flight (among
  equals, the next in round-robin order); when none is ready, a starting one (the call waits
  for it); `nil` when every serving slot is degraded.
  """
  @spec pick(pool() | map()) :: pos_integer() | nil
  def pick(pool) when is_atom(pool), do: pick(meta!(pool))

  def pick(%{busy: busy, phases: phases, size: size, next: next}) do
    start = rem(:atomics.add_get(next, 1, 1), size)

    candidates =
      for k <- 0..(size - 1),
          i = rem(start + k, size) + 1,
          (phase = :atomics.get(phases, i)) > 0,
          do: {-phase, :atomics.get(busy, i), k, i}

    case candidates do
      [] -> nil
      _ -> candidates |> Enum.min() |> elem(3)
    end
  end

  # Commands that only read a model: safe to send again to another port.
  @read_only [:recommend, :recommend_many, :predict, :similar_items, :ping, :echo, :info, :models]

  @doc """
  Sends `command` to a serving port (`pick/1`). A read-only command whose port died under it
  (another call crashed the interpreter while this one waited in its queue) is sent once
  more, to another port, so one crash fails only the call that caused it. Answers
  `{:error, :unavailable}` at once when no serving port is ready or starting, and
  `{:error, :not_started}` when the pool is not running.
  """
  @spec call(pool(), term(), keyword()) :: Port.reply()
  def call(pool, command, opts \\ []) do
    with {:ok, meta} <- meta(pool), index when is_integer(index) <- pick(meta) do
      reply = Port.call(port_name(pool, index), command, opts)

      if retry?(reply) and read_only?(command),
        do: retry_elsewhere(pool, meta, index, command, opts),
        else: reply
    else
      nil -> {:error, :unavailable}
      error -> error
    end
  end

  defp retry?({:error, :unavailable}), do: true
  defp retry?({:error, {down, _}}) when down in [:port_exited, :port_down], do: true
  defp retry?(_reply), do: false

  defp read_only?(command) when is_atom(command), do: command in @read_only
  defp read_only?(command) when is_tuple(command), do: elem(command, 0) in @read_only
  defp read_only?(_), do: false

  defp retry_elsewhere(pool, meta, failed, command, opts) do
    case pick(meta) do
      index when is_integer(index) and index != failed ->
        Port.call(port_name(pool, index), command, opts)

      _ when meta.size > 1 ->
        Port.call(port_name(pool, rem(failed, meta.size) + 1), command, opts)

      _ ->
        Port.call(port_name(pool, failed), command, opts)
    end
  end

  @doc """
  Sends `command` to the training port; its timeout defaults to the pool's
  `:train_timeout`.
  """
  @spec call_training(pool(), term(), keyword()) :: Port.reply()
  def call_training(pool, command, opts \\ []) do
    with {:ok, meta} <- meta(pool) do
      opts = Keyword.put_new(opts, :timeout, meta.train_timeout)
      Port.call(port_name(pool, :train), command, opts)
    end
  end

  @doc "Sends `command` to every serving port at once; the replies in port order."
  @spec call_serving(pool(), term(), keyword()) :: [Port.reply()] | {:error, :not_started}
  def call_serving(pool, command, opts \\ []) do
    with {:ok, meta} <- meta(pool) do
      1..meta.size
      |> Enum.map(fn i -> Task.async(fn -> Port.call(port_name(pool, i), command, opts) end) end)
      |> Task.await_many(:infinity)
    end
  end

  @doc """
  Trains on the training port, then hot-swaps the saved version into every
  serving port. The reply is the training port's; a serving port that failed to
  load the version is logged (it will load it when it restarts).
  """
  @spec train(pool(), String.t() | atom(), map(), keyword()) :: Port.reply()
  def train(pool, name, spec, opts \\ []) do
    case call_training(pool, {:train, name, spec}, opts) do
      {:ok, %{name: model, version: version}} = ok when is_integer(version) ->
        swap(pool, model, version, Keyword.delete(opts, :events))
        ok

      other ->
        other
    end
  end

  @doc """
  Loads a version on every port (serving and training); the reply is the first serving
  port's that answered (a degraded port loads it when it recovers). `opts` is the port's
  `load` map (`version`, `path`).
  """
  @spec load(pool(), String.t() | atom(), map(), keyword()) :: Port.reply()
  def load(pool, name, load_opts, opts \\ []) do
    with {:ok, meta} <- meta(pool) do
      training = Task.async(fn -> call_training(pool, {:load, name, load_opts}, opts) end)
      replies = call_serving(pool, {:load, name, load_opts}, opts)
      Task.await(training, :infinity)

      case first_answer(replies) do
        {:ok, %{version: version}} = ok ->
          ModelStore.put(meta.table, :serving, to_string(name), version)
          ok

        other ->
          other
      end
    end
  end

  @doc """
  `{observe, Name, Events, Opts}` on every serving port (each keeps its own copy of what
  users consumed); only one, the first ready one, stores the events in the database, the
  others get `store: false`. The reply is that port's.
  """
  @spec observe(pool(), String.t() | atom(), list(), map(), keyword()) :: Port.reply()
  def observe(pool, name, events, observe_opts, opts \\ []) do
    with {:ok, meta} <- meta(pool), store when is_integer(store) <- first_ready(meta) do
      others = Map.put(observe_opts, :store, false)

      1..meta.size
      |> Enum.map(fn i ->
        o = if i == store, do: observe_opts, else: others
        Task.async(fn -> Port.call(port_name(pool, i), {:observe, name, events, o}, opts) end)
      end)
      |> Task.await_many(:infinity)
      |> Enum.at(store - 1)
    else
      nil -> {:error, :unavailable}
      error -> error
    end
  end

  @doc """
  `{update_features, Name, Sources}` on the training port, which then saves the
  result as a new version; that version is hot-swapped into every serving port.
  """
  @spec update_features(pool(), String.t() | atom(), map(), keyword()) :: Port.reply()
  def update_features(pool, name, sources, opts \\ []) do
    with {:ok, counts} <- call_training(pool, {:update_features, name, sources}, opts),
         {:ok, %{version: version}} <- call_training(pool, {:save, name}, opts) do
      swap(pool, to_string(name), version, opts)
      {:ok, Map.put(counts, :version, version)}
    end
  end

  @doc "Unloads a model from every port."
  @spec unload(pool(), String.t() | atom(), keyword()) :: Port.reply()
  def unload(pool, name, opts \\ []) do
    with {:ok, meta} <- meta(pool) do
      call_training(pool, {:unload, name}, opts)
      first = pool |> call_serving({:unload, name}, opts) |> first_answer()
      ModelStore.put(meta.table, :serving, to_string(name), nil)
      first
    end
  end

  @doc false
  @spec swap(pool(), String.t(), pos_integer(), keyword()) :: :ok
  def swap(pool, name, version, opts) do
    # Recorded first, so that a serving port restarting right now reloads the new version.
    ModelStore.put(meta!(pool).table, :serving, name, version)

    pool
    |> call_serving({:load, name, %{version: version}}, opts)
    |> Enum.with_index(1)
    |> Enum.each(fn
      {{:ok, _}, _i} ->
        :ok

      {{:error, :unavailable}, i} ->
        Logger.debug(
          "uro_recommender: serving port #{i} is degraded; it loads #{name} when it recovers"
        )

      {error, i} ->
        Logger.error(
          "uro_recommender: serving port #{i} did not load #{name} version #{version}: " <>
            inspect(error)
        )
    end)
  end

  @doc "The `{name, version}` pairs the serving ports are to have loaded."
  @spec loaded(pool()) :: [{String.t(), pos_integer()}]
  def loaded(pool), do: meta!(pool).table |> ModelStore.get(:serving) |> Enum.sort()

  @doc """
  Every slot's state (`UroRecommender.Port.status/1`): `{:ok, %{training: status, serving:
  [status]}}`, or `{:error, :not_started}`.
  """
  @spec status(pool()) :: {:ok, %{training: map(), serving: [map()]}} | {:error, :not_started}
  def status(pool) do
    with {:ok, meta} <- meta(pool) do
      serving = for i <- 1..meta.size, do: slot_status(port_name(pool, i))
      {:ok, %{training: slot_status(port_name(pool, :train)), serving: serving}}
    end
  end

  defp slot_status(name) do
    Port.status(name)
  catch
    :exit, _ -> %{id: name, state: :down}
  end

  # A reply from a port, if any port answered; else the first reply.
  defp first_answer(replies) do
    Enum.find(replies, hd(replies), &(not match?({:error, :unavailable}, &1)))
  end

  defp first_ready(%{phases: phases, size: size}) do
    Enum.find(1..size, &(:atomics.get(phases, &1) == 2)) ||
      Enum.find(1..size, &(:atomics.get(phases, &1) == 1))
  end

  @doc false
  # The pool's shared data, or {:error, :not_started} when no pool of that name runs.
  def meta(pool) do
    with pid when is_pid(pid) <- Process.whereis(pool),
         %{} = meta <- :persistent_term.get({__MODULE__, pool}, nil) do
      {:ok, meta}
    else
      _ -> {:error, :not_started}
    end
  end

  defp meta!(pool) do
    case meta(pool) do
      {:ok, meta} ->
        meta

      {:error, :not_started} ->
        raise ArgumentError, "no UroRecommender pool named #{inspect(pool)} is running"
    end
  end
end
