defmodule UroRecommender do
  @moduledoc ~S"""
  Recommendations for uro from LibRecommender models, served by a pool of
  `uro_recommender` port processes (C embedding CPython).

  Add the pool to the application's supervision tree:

      children = [
        # ...
        {UroRecommender, model_dir: "/var/lib/uro/models"}
      ]

  and call it:

      {:ok, items} = UroRecommender.recommend("items_als", user_id, 10, filter_consumed: true)

  The options (`UroRecommender.Config`) are checked when the pool starts: an unknown key
  raises `ArgumentError` naming it.

  Every function returns `{:ok, value}` or `{:error, reason}`, where `reason` is

    * `{kind, detail}` from the port: `:badarg`, `:unknown_command`,
      `:unknown_model`, `:unsupported`, `:python` (detail
      `%{type:, message:, traceback:}`), `:database`, `:internal`, `:too_large`,
      `:timeout` (the port interrupted the call), `:untrusted_model` (a model version
      whose signature is missing or wrong: docs/OPERATIONS.md);
    * `:unavailable`: no port can serve the call now (its slot is degraded: see
      `status/1`); answered at once;
    * `:not_started`: no pool of that name is running;
    * `:timeout`: no reply within the timeout plus a grace period: the port
      process was killed and is being restarted;
    * `{:port_exited, status}`: the port process died during the call; it is
      being restarted and reloads its models;
    * `{:port_down, reason}`: the port server itself was not running.

  Common options of every function: `:pool` (default `UroRecommender`),
  `:timeout` (ms). `train/3` also takes `:events` (a pid that receives
  `{:uro_recommender_event, ref, map}` progress messages).

  Calls and training epochs are `:telemetry` events: see `UroRecommender.Telemetry`.

  Without a running pool:

      iex> UroRecommender.recommend("worlds", "a-user", 10, pool: NoSuchPool)
      {:error, :not_started}
  """

  alias UroRecommender.Pool

  @typedoc "A model name: letters, digits, `_`, `-`, `.`."
  @type model :: String.t() | atom()
  @typedoc "A user or item id as given at training."
  @type id :: integer() | String.t()
  @typedoc "What every function returns."
  @type result(value) :: {:ok, value} | {:error, term()}

  @call_keys [:pool, :timeout, :events]

  @doc """
  Child spec for the host's supervisor: `{UroRecommender, opts}`, where `opts`
  override the application environment (see `UroRecommender.Config`) and may
  give `:name` (default `UroRecommender`) to run more than one pool. Raises
  `ArgumentError` on an unknown option or a value of the wrong type.
  """
  @spec child_spec(keyword()) :: Supervisor.child_spec()
  def child_spec(opts), do: Pool.child_spec(opts)

  @doc "Starts a pool (see `child_spec/1`)."
  @spec start_link(keyword()) :: Supervisor.on_start()
  def start_link(opts \\ []), do: Pool.start_link(opts)

  @doc """
  The top `n` items for `user`.

  Options (besides `:pool`, `:timeout`): `filter_consumed: boolean`,
  `cold_start: :popular | ...`, `exclude: [item]`, `scores: true` (items come as
  `{item, score}`).
  """
  @spec recommend(model(), id(), non_neg_integer(), keyword()) :: result([id() | {id(), float()}])
  def recommend(name, user, n, opts \\ []) do
    {call, cmd} = split(opts)
    Pool.call(pool(call), {:recommend, name, user, n, Map.new(cmd)}, call)
  end

  @doc "`recommend/4` for many users in one call: `%{user => [item]}`."
  @spec recommend_many(model(), [id()], non_neg_integer(), keyword()) ::
          result(%{id() => [id() | {id(), float()}]})
  def recommend_many(name, users, n, opts \\ []) do
    {call, cmd} = split(opts)
    Pool.call(pool(call), {:recommend_many, name, users, n, Map.new(cmd)}, call)
  end

  @doc """
  Scores of `items` for `user`, in the order given. Options `user_feats:
  %{column => value}` (the user's features, for a user the model never saw too) and
  `item_feats:` (for an item the model never saw) on models trained with features.
  """
  @spec predict(model(), id(), [id()], keyword()) :: result([float()])
  def predict(name, user, items, opts \\ []) do
    case split(opts) do
      {call, []} -> Pool.call(pool(call), {:predict, name, user, items}, call)
      {call, cmd} -> Pool.call(pool(call), {:predict, name, user, items, Map.new(cmd)}, call)
    end
  end

  @doc """
  Replaces stored user and/or item features without retraining (`sources`:
  `%{users: source, items: source}`, feature sources as in `train/3`'s
  `features`): on the training port, saved as a new version there and hot-swapped
  into every serving port like `train/3`. The reply: `%{users | items => matched,
  version: v}`.
  """
  @spec update_features(model(), map(), keyword()) :: result(map())
  def update_features(name, sources, opts \\ []) do
    {call, _} = split(opts)
    Pool.update_features(pool(call), name, sources, call)
  end

  @doc "The `n` items most similar to `item`, as `{item, score}`."
  @spec similar_items(model(), id(), pos_integer(), keyword()) :: result([{id(), float()}])
  def similar_items(name, item, n, opts \\ []) do
    {call, _} = split(opts)
    Pool.call(pool(call), {:similar_items, name, item, n}, call)
  end

  @doc ~S"""
  Trains `name` on the training port and hot-swaps the saved version into every
  serving port.

  `spec` is the port's map: `%{algorithm: "ALS", data: {:rows, [{user, item,
  label}]} | {:csv, path}, task: "ranking" | "rating", params: %{...},
  fit: %{...}, eval: %{test_size:, metrics:, k:}, save: true, features: %{user:, item:,
  users:, items:}}` (features for the feature models: column kinds and sources, see
  docs/PROTOCOL.md); with `from_version: v | :latest` and the new `data`, it retrains that
  saved version on the new data instead (LibRecommender's own retraining path). The reply:
  `%{name, version, algorithm, n_users, n_items, n_interactions, seconds, metrics,
  baseline, lift}` (with `eval`, `metrics`, `baseline` and `lift` are what `evaluate/3`
  answers for the held-out split).
  Options: `:pool`, `:timeout` (default the pool's `train_timeout`), `:events`.
  """
  @spec train(model(), map(), keyword()) :: result(map())
  def train(name, spec, opts \\ []) do
    {call, _} = split(opts)
    Pool.train(pool(call), name, spec, call)
  end

  @doc """
  Loads a saved version on every port: options `version: integer | :latest`
  (default `:latest`), `path: dir`, plus `:pool`, `:timeout`.
  Returns `%{name, version, algorithm}`.
  """
  @spec load(model(), keyword()) :: result(map())
  def load(name, opts \\ []) do
    {call, cmd} = split(opts)
    Pool.load(pool(call), name, Map.new(cmd), call)
  end

  @doc "Unloads a model from every port."
  @spec unload(model(), keyword()) :: result(:ok)
  def unload(name, opts \\ []) do
    {call, _} = split(opts)
    Pool.unload(pool(call), name, call)
  end

  @doc "Saves the training port's copy of `name` as a new version: `%{version, path}`."
  @spec save(model(), keyword()) :: result(map())
  def save(name, opts \\ []) do
    {call, _} = split(opts)
    Pool.call_training(pool(call), {:save, name}, call)
  end

  @doc """
  The models a serving port has loaded: `[%{name, version, algorithm, n_users,
  n_items}]`; with `from: :database`, the versions published to the database
  registry.
  """
  @spec models(keyword()) :: result([map()])
  def models(opts \\ []) do
    {call, cmd} = split(opts)
    command = if cmd == [], do: :models, else: {:models, Map.new(cmd)}
    Pool.call(pool(call), command, call)
  end

  @doc """
  Creates the database tables the port uses (`{apply_schema}`: `priv/sql/*.sql`); runs on the
  training port. With `schema: :uro`, uro's interactions table (UUID ids, the user a foreign
  key to `users`: `priv/sql/uro/*.sql`) is created first, so the generic one is not; the same
  tables as the Ecto migration in `elixir_stub/priv/repo/migrations/`. Returns the files
  applied.
  """
  @spec apply_schema(keyword()) :: result([String.t()])
  def apply_schema(opts \\ []) do
    {call, cmd} = split(opts)
    pool = pool(call)

    case Keyword.get(cmd, :schema, :generic) do
      :generic ->
        Pool.call_training(pool, :apply_schema, call)

      :uro ->
        dir = Path.join(List.to_string(:code.priv_dir(:uro_recommender)), "sql/uro")

        with {:ok, uro} <- Pool.call_training(pool, {:apply_schema, dir}, call),
             {:ok, rest} <- Pool.call_training(pool, :apply_schema, call),
             do: {:ok, Enum.map(uro, &("uro/" <> &1)) ++ rest}
    end
  end

  @doc """
  The state of every port slot: `{:ok, %{training: slot, serving: [slot]}}`, each slot a
  map with `state` (`:ready`, `:starting` or `:degraded`), `os_pid`, `failures` (in a row),
  `last_failure` (`nil` or `%{reason, message, at}`), `next_attempt_in_ms` and `in_flight`
  (see `UroRecommender.Port.status/1`). Answers at once, whatever the ports are doing.
  """
  @spec status(keyword()) :: result(%{training: map(), serving: [map()]})
  def status(opts \\ []) do
    {call, _} = split(opts)
    Pool.status(pool(call))
  end

  @doc """
  The `info` map of every port: `%{training: map, serving: [map]}`, each with
  version, protocol, OS pid, uptime, models, request and error counts, latency, and
  `slot`, the slot's `status/1`. A slot that cannot serve has only `slot`.
  """
  @spec info(keyword()) :: result(%{training: map(), serving: [map()]})
  def info(opts \\ []) do
    {call, _} = split(opts)
    pool = pool(call)

    with {:ok, status} <- Pool.status(pool) do
      training = Task.async(fn -> Pool.call_training(pool, :info, call) end)
      serving = Pool.call_serving(pool, :info, call)

      {:ok,
       %{
         training: with_slot(Task.await(training, :infinity), status.training),
         serving: Enum.zip_with(serving, status.serving, &with_slot/2)
       }}
    end
  end

  defp with_slot({:ok, info}, slot), do: Map.put(info, :slot, slot)
  defp with_slot({:error, _}, slot), do: %{slot: slot}

  @doc """
  Is the model worth serving? Its metrics on `source` (`{:rows, rows}` | `{:csv, path}` |
  ...), computed on the training port, next to the most-popular baseline's on the same rows
  and users: `%{metrics: %{metric => float}, baseline: %{metric => float}, lift: %{metric =>
  float | nil}}`; a lift above 1.0 means better than recommending what is popular (see
  docs/PROTOCOL.md). Options: `metrics: [..]`, `k: n`.
  """
  @spec evaluate(model(), term(), keyword()) :: result(map())
  def evaluate(name, source, opts \\ []) do
    {call, cmd} = split(opts)
    Pool.call_training(pool(call), {:evaluate, name, source, Map.new(cmd)}, call)
  end

  @doc """
  Writes top-N lists into the database's recommendations table; runs on the
  training port. Options: `users` (`:all` or a list), `n`, `table`,
  `batch_size`, `method` (`:copy` or `:insert`), `writers` (connections writing
  at once, 1..4, default 2). Returns `%{rows, batches, retries, seconds}`.
  """
  @spec export(model(), keyword()) :: result(term())
  def export(name, opts \\ []) do
    {call, cmd} = split(opts)
    Pool.call_training(pool(call), {:export, name, Map.new(cmd)}, call)
  end

  @doc """
  Stores the training port's version of a model in the database registry, so
  that any port can `load(name, from: :database)` it; runs on the training port.
  Returns `%{name, version, checksum, bytes}`. Only signed versions are published
  and loaded: the pool needs a model key (`:model_key_file`, or `URO_REC_MODEL_KEY`
  in `:env`), else `{:error, {:untrusted_model, message}}` (docs/OPERATIONS.md).
  """
  @spec publish(model(), keyword()) :: result(term())
  def publish(name, opts \\ []) do
    {call, cmd} = split(opts)
    Pool.call_training(pool(call), {:publish, name, Map.new(cmd)}, call)
  end

  @doc """
  Sends interaction events `[{user, item, label, time}]` to a model
  (`{observe, Name, Events, Opts}`): every serving port applies them (so that
  `recommend` stops returning what a user just consumed, whichever port
  answers), and one of them also stores them in the database (unless
  `store: false`). Options: `store`, `table`, plus `:pool`, `:timeout`. See
  `UroRecommender.Observe` for batching.
  """
  @spec observe(model(), [tuple()], keyword()) :: result(term())
  def observe(name, events, opts \\ []) do
    {call, cmd} = split(opts)
    Pool.observe(pool(call), name, events, Map.new(cmd), call)
  end

  @doc "Sends any command to the least-busy serving port (for commands not wrapped here)."
  @spec call(term(), keyword()) :: result(term())
  def call(command, opts \\ []) do
    {call, _} = split(opts)
    Pool.call(pool(call), command, call)
  end

  defp split(opts) when is_list(opts), do: Keyword.split(opts, @call_keys)

  defp pool(call), do: Keyword.get(call, :pool, __MODULE__)
end
