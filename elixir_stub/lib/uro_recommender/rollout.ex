defmodule UroRecommender.Rollout do
  @moduledoc """
  Makes every node's pool serve the version the cluster published (`uro_rec_served`).

  uro runs several nodes, each with its own pool of ports. After a publish
  (`UroRecommender.Pipeline`), the node that trained swaps the version into its own pool at
  once (from its model directory); every other node loads it from the database registry:

    * at once when the nodes are connected (`Node.list/0`): the publishing node sends
      `{:uro_recommender_served, name, version}` to each node's `UroRecommender.Scheduler`,
      found through `:pg` (scope `:uro_recommender`; it needs no Phoenix, and works beside
      uro's own `Phoenix.PubSub`, which sits on `:pg` too);
    * otherwise at the Scheduler's next poll of `uro_rec_served` (`:poll`, 30 s by default).

  So a node serves the new version within the poll interval plus one load (a fetch of the
  version's files from the database, checked against their sha256, and a load in each serving
  port: well under a second for an embedding model, `bench/` and the two-node test measure
  it), and at once plus one load when connected. A node that starts later loads the served
  versions on its first poll, at start. A load is a hot swap (`UroRecommender.Pool`): calls
  sent before it are answered by the old version, after it by the new one, none is dropped.

  The version is fetched by one serving port, then loaded from disk by every serving port: two
  ports fetching into the same model directory at once could replace files under each other.
  After a load, each serving port is told the held-out rows of the model's configuration
  (`observe_source`): the version was trained without each user's latest pairs, and must not
  recommend a world a user just visited.
  """
  require Logger

  alias UroRecommender.{Models, Pool}

  @scope :uro_recommender

  @doc "Joins this node's group for `pool` (the caller, a Scheduler, receives the broadcasts)."
  @spec join(atom()) :: :ok
  def join(pool) do
    case :pg.start(@scope) do
      {:ok, _} -> :ok
      {:error, {:already_started, _}} -> :ok
    end

    :pg.join(@scope, group(pool), self())
  end

  @doc "Tells every node's Scheduler of `pool` that `name` is now served at `version`."
  @spec broadcast(atom(), String.t(), pos_integer()) :: :ok
  def broadcast(pool, name, version) do
    for pid <- members(pool), do: send(pid, {:uro_recommender_served, name, version})
    :ok
  end

  defp members(pool) do
    :pg.get_members(@scope, group(pool))
  catch
    # No scope: no Scheduler runs on this node, nobody to tell.
    _, _ -> []
  end

  defp group(pool), do: {:uro_recommender_scheduler, pool}

  @doc """
  Loads, for each configuration in `configs` that the database says is served at another
  version than this node's pool has, that version. Returns `{:ok, [{name, version}]}`, the
  ones it loaded, or the error of the `served` call.
  """
  @spec sync(atom(), [Models.t()], keyword()) ::
          {:ok, [{String.t(), pos_integer()}]} | {:error, term()}
  def sync(pool, configs, opts \\ []) do
    with {:ok, served} <- Pool.call(pool, :served, opts) do
      loaded =
        for config <- configs,
            version = served[config.name],
            version != nil,
            ensure(pool, config, version, opts) == {:ok, :loaded},
            do: {config.name, version}

      {:ok, loaded}
    end
  end

  @doc "Loads `version` of `config` from the database unless this node's pool serves it."
  @spec ensure(atom(), Models.t(), pos_integer(), keyword()) ::
          {:ok, :unchanged | :loaded} | {:error, term()}
  def ensure(pool, config, version, opts \\ []) do
    name = config.name

    if Map.new(Pool.loaded(pool))[name] == version do
      {:ok, :unchanged}
    else
      case Pool.call(pool, {:load, name, %{from: :database, version: version}}, opts) do
        {:ok, _} ->
          swap_local(pool, config, version, opts)
          Logger.info("uro_recommender: serving #{name} version #{version} (from the database)")
          {:ok, :loaded}

        error ->
          Logger.error(
            "uro_recommender: could not load #{name} version #{version}: #{inspect(error)}"
          )

          error
      end
    end
  end

  @doc """
  Hot-swaps `version` (in this node's model directory) into every serving port of `pool`,
  then tells them the held-out rows.
  """
  @spec swap_local(atom(), Models.t(), pos_integer(), keyword()) :: :ok
  def swap_local(pool, config, version, opts \\ []) do
    Pool.swap(pool, config.name, version, opts)

    case Models.split(config) do
      {_train, nil} ->
        :ok

      {_train, held_out} ->
        pool
        |> Pool.call_serving({:observe_source, config.name, held_out, %{}}, opts)
        |> Enum.each(&observed(&1, config.name))
    end
  end

  defp observed({:ok, _}, _name), do: :ok

  defp observed(error, name),
    do:
      Logger.warning("uro_recommender: held-out rows of #{name} not observed: #{inspect(error)}")
end
