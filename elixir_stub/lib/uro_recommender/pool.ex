defmodule UroRecommender.Pool do
  @moduledoc """
  A supervisor of `pool_size` serving ports and one training port.

    * Serving calls (`recommend`, `predict`, ...) go to the serving port with the
      fewest calls in flight (an `:atomics` counter per port, kept by the port
      server; ties go round-robin).
    * `train`, `evaluate`, `export` and `publish` go to the training port, so a
      long training never delays a recommendation.
    * After a `train` that saved a version, and after a `load`, every serving
      port loads that version ("hot swap"). A port answers its calls strictly in
      order, so calls sent before the `load` are answered by the old model and
      calls after it by the new one; nothing is dropped.
    * The supervisor owns an ETS table with the models each port has loaded; a
      port that dies is restarted (`:one_for_one`) and reloads them before it
      serves (see `UroRecommender.Port`). The serving ports share one entry, so a
      port that was down during a hot swap comes back with the new version.

  Options: those of `UroRecommender.Config` plus `:name` (default `UroRecommender`).
  """
  use Supervisor
  require Logger

  alias UroRecommender.{Config, Port}

  @typedoc "The registered name of a pool."
  @type pool :: atom()

  @doc "Starts the pool under the caller."
  @spec start_link(keyword()) :: Supervisor.on_start()
  def start_link(opts \\ []) do
    name = Keyword.get(opts, :name, UroRecommender)
    Supervisor.start_link(__MODULE__, Keyword.put(opts, :name, name), name: name)
  end

  @doc false
  def child_spec(opts) do
    %{
      id: Keyword.get(opts, :name, UroRecommender),
      start: {__MODULE__, :start_link, [opts]},
      type: :supervisor
    }
  end

  @impl true
  def init(opts) do
    name = Keyword.fetch!(opts, :name)
    config = Config.resolve(opts)
    size = Keyword.fetch!(config, :pool_size)

    if size < 1, do: raise(ArgumentError, "pool_size must be at least 1, got #{size}")

    # Owned by this supervisor: survives the restart of any port.
    table = :ets.new(__MODULE__, [:set, :public, read_concurrency: true])
    busy = :atomics.new(size, signed: true)
    next = :atomics.new(1, signed: false)

    :persistent_term.put({__MODULE__, name}, %{
      size: size,
      table: table,
      busy: busy,
      next: next,
      train_timeout: Keyword.fetch!(config, :train_timeout)
    })

    port_opts =
      Keyword.take(config, [
        :port_path,
        :model_dir,
        :database_url,
        :max_frame,
        :env,
        :args,
        :timeout,
        :grace,
        :record,
        :send_timeout_ms
      ])
      |> Keyword.put(:store, table)

    training =
      Supervisor.child_spec(
        {Port,
         port_opts ++
           [name: port_name(name, :train), id: {name, :train}, store_key: :train]},
        id: :train
      )

    serving =
      for i <- 1..size do
        Supervisor.child_spec(
          {Port,
           port_opts ++
             [
               name: port_name(name, i),
               id: {name, i},
               store_key: :serving,
               busy: {busy, i}
             ]},
          id: {:serving, i}
        )
      end

    Supervisor.init([training | serving],
      strategy: :one_for_one,
      max_restarts: 10,
      max_seconds: 30
    )
  end

  # ---- routing ----------------------------------------------------------------------------

  @doc "The registered name of serving port `i` (1-based) or of the training port (`:train`)."
  @spec port_name(pool(), pos_integer() | :train) :: atom()
  def port_name(pool, :train), do: Module.concat(pool, Train)
  def port_name(pool, i) when is_integer(i), do: Module.concat(pool, "Serving#{i}")

  @doc "Number of serving ports."
  @spec size(pool()) :: pos_integer()
  def size(pool), do: meta(pool).size

  @doc "Calls in flight on each serving port, in port order."
  @spec busy(pool()) :: [non_neg_integer()]
  def busy(pool) do
    %{busy: busy, size: size} = meta(pool)
    for i <- 1..size, do: :atomics.get(busy, i)
  end

  @doc """
  The serving port with the fewest calls in flight; among equals, the next in
  round-robin order.
  """
  @spec pick(pool()) :: pos_integer()
  def pick(pool) do
    %{busy: busy, size: size, next: next} = meta(pool)
    start = rem(:atomics.add_get(next, 1, 1), size)

    {_load, _k, index} =
      Enum.min(
        for k <- 0..(size - 1) do
          i = rem(start + k, size) + 1
          {:atomics.get(busy, i), k, i}
        end
      )

    index
  end

  # Commands that only read a model: safe to send again to another port.
  @read_only [:recommend, :recommend_many, :predict, :similar_items, :ping, :echo, :info, :models]

  @doc """
  Sends `command` to the least-busy serving port. A read-only command whose port died
  under it (another call crashed the interpreter while this one waited in its queue) is
  sent once more, to the other ports first, so one crash fails only the call that caused
  it.
  """
  @spec call(pool(), term(), keyword()) :: Port.reply()
  def call(pool, command, opts \\ []) do
    index = pick(pool)

    case Port.call(port_name(pool, index), command, opts) do
      {:error, {down, _}} = error when down in [:port_exited, :port_down] ->
        if read_only?(command), do: retry_elsewhere(pool, index, command, opts), else: error

      reply ->
        reply
    end
  end

  defp read_only?(command) when is_atom(command), do: command in @read_only
  defp read_only?(command) when is_tuple(command), do: elem(command, 0) in @read_only
  defp read_only?(_), do: false

  defp retry_elsewhere(pool, failed, command, opts) do
    size = size(pool)
    index = if size > 1, do: rem(failed, size) + 1, else: failed
    Port.call(port_name(pool, index), command, opts)
  end

  @doc """
  Sends `command` to the training port; its timeout defaults to the pool's
  `:train_timeout`.
  """
  @spec call_training(pool(), term(), keyword()) :: Port.reply()
  def call_training(pool, command, opts \\ []) do
    opts = Keyword.put_new(opts, :timeout, meta(pool).train_timeout)
    Port.call(port_name(pool, :train), command, opts)
  end

  @doc "Sends `command` to every serving port at once; the replies in port order."
  @spec call_serving(pool(), term(), keyword()) :: [Port.reply()]
  def call_serving(pool, command, opts \\ []) do
    1..size(pool)
    |> Enum.map(fn i -> Task.async(fn -> Port.call(port_name(pool, i), command, opts) end) end)
    |> Task.await_many(:infinity)
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
  Loads a version on every port (serving and training); the reply is the first
  serving port's. `opts` is the port's `load` map (`version`, `path`).
  """
  @spec load(pool(), String.t() | atom(), map(), keyword()) :: Port.reply()
  def load(pool, name, load_opts, opts \\ []) do
    training = Task.async(fn -> call_training(pool, {:load, name, load_opts}, opts) end)
    replies = call_serving(pool, {:load, name, load_opts}, opts)
    Task.await(training, :infinity)

    case replies do
      [{:ok, %{version: version}} = ok | _] ->
        :ets.insert(meta(pool).table, {{:loaded, :serving, to_string(name)}, version})
        ok

      [first | _] ->
        first
    end
  end

  @doc """
  `{observe, Name, Events, Opts}` on every serving port (each keeps its own copy
  of what users consumed); only the first stores the events in the database,
  the others get `store: false`. The reply is the first port's.
  """
  @spec observe(pool(), String.t() | atom(), list(), map(), keyword()) :: Port.reply()
  def observe(pool, name, events, observe_opts, opts \\ []) do
    others = Map.put(observe_opts, :store, false)

    1..size(pool)
    |> Enum.map(fn i ->
      o = if i == 1, do: observe_opts, else: others
      Task.async(fn -> Port.call(port_name(pool, i), {:observe, name, events, o}, opts) end)
    end)
    |> Task.await_many(:infinity)
    |> hd()
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
    call_training(pool, {:unload, name}, opts)
    [first | _] = call_serving(pool, {:unload, name}, opts)
    :ets.delete(meta(pool).table, {:loaded, :serving, to_string(name)})
    first
  end

  @doc false
  @spec swap(pool(), String.t(), pos_integer(), keyword()) :: :ok
  def swap(pool, name, version, opts) do
    # Recorded first, so that a serving port restarting right now reloads the new version.
    :ets.insert(meta(pool).table, {{:loaded, :serving, name}, version})

    pool
    |> call_serving({:load, name, %{version: version}}, opts)
    |> Enum.with_index(1)
    |> Enum.each(fn
      {{:ok, _}, _i} ->
        :ok

      {error, i} ->
        Logger.error(
          "uro_recommender: serving port #{i} did not load #{name} version #{version}: " <>
            inspect(error)
        )
    end)
  end

  @doc "The `{name, version}` pairs the serving ports are to have loaded."
  @spec loaded(pool()) :: [{String.t(), pos_integer()}]
  def loaded(pool), do: Port.store_get(meta(pool).table, :serving) |> Enum.sort()

  defp meta(pool) do
    :persistent_term.get({__MODULE__, pool})
  rescue
    ArgumentError ->
      raise ArgumentError, "no UroRecommender pool named #{inspect(pool)} is running"
  end
end
