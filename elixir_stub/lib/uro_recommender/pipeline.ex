defmodule UroRecommender.Pipeline do
  @moduledoc """
  One scheduled run of one model configuration (`UroRecommender.Models`): train on the
  training port from SQL, gate, publish, hot-swap, export; every run a row in `uro_rec_runs`.
  `UroRecommender.Scheduler` calls it for each configured model in turn, and so does
  `UroRecommender.Oban.PipelineWorker` when the host runs Oban.

  1. **current**: the version the cluster serves now (`served`), if any.
  2. **train** the candidate on the training port, from the configuration's SQL less each
     user's latest pairs (`UroRecommender.Models.split/1`), saved as the next version.
  3. **gate**: the port's `compare` scores the candidate, the served version and the
     most-popular baseline on the held-out pairs; `UroRecommender.Gate.decide/2` decides.
     A refused version stays on disk and is never served; the run ends there.
  4. **publish**: if this node still holds the scheduler's lease (a run that outlived its
     lease must not publish), the version goes into the registry, becomes the served one
     (`serve`), is swapped into this node's serving ports and broadcast to the other nodes
     (`UroRecommender.Rollout`).
  5. **export** (when configured): the training port is told the held-out pairs (so no list
     holds a world the user visited last), exports the top-N lists, then deletes the lists of
     users forgotten since the run began (`purge_forgotten`).

  The run map (also returned) has the row's columns: `id, model, version, current_version,
  decision` (`"published"`, `"refused"`, `"skipped"`, `"failed"`), `reason, metrics, baseline,
  current_metrics, train_ms, evaluate_ms, publish_ms, export_ms, error, node, started_at`.
  """
  require Logger

  alias UroRecommender.{Gate, Models, Pool, Rollout, UUID}

  @doc """
  Runs `config`. Options: `:pool` (default `UroRecommender`), `:timeout` (per training-port
  call; the pool's `train_timeout` by default), `:lease` (a 0-arity function answering whether
  this node may still publish; default always). Returns `{:ok, run}` when the run got to a
  decision (published, refused or skipped), `{:error, run}` when a step failed.
  """
  @spec run(Models.t(), keyword()) :: {:ok, map()} | {:error, map()}
  def run(config, opts \\ []) do
    ctx = %{
      pool: Keyword.get(opts, :pool, UroRecommender),
      config: config,
      lease: Keyword.get(opts, :lease, fn -> true end),
      call: Keyword.take(opts, [:timeout])
    }

    run = %{
      id: UUID.generate(),
      model: config.name,
      node: to_string(node()),
      started_at: System.os_time(:microsecond) / 1_000_000,
      decision: "failed",
      reason: ""
    }

    result =
      with {:ok, run} <- current(ctx, run),
           {:ok, run} <- train(ctx, run),
           {:ok, run} <- gate(ctx, run),
           {:ok, run} <- publish(ctx, run) do
        export(ctx, run)
      end

    {status, run} = finish(result)
    record(ctx, run)
    {status, run}
  end

  defp current(ctx, run) do
    case Pool.call(ctx.pool, :served) do
      {:ok, served} -> {:ok, Map.put(run, :current_version, served[ctx.config.name])}
      error -> failed(run, "served", error)
    end
  end

  defp train(%{config: config} = ctx, run) do
    {data, _held_out} = Models.split(config)
    spec = %{algorithm: config.algorithm, data: data, params: config.params, save: true}

    timed(run, :train_ms, fn ->
      case Pool.call_training(ctx.pool, {:train, config.name, spec}, ctx.call) do
        {:ok, %{version: version}} -> {:ok, Map.put(run, :version, version)}
        error -> failed(run, "train", error)
      end
    end)
  end

  defp gate(%{config: %{gate: false}}, run),
    do: {:ok, %{run | reason: "not gated (the baseline model)"}}

  defp gate(%{config: config} = ctx, run) do
    {_train, held_out} = Models.split(config)
    metrics = Enum.uniq([config.metric, :ndcg, :precision, :recall])

    command =
      {:compare, config.name, run.current_version, held_out, %{metrics: metrics, k: config.k}}

    timed(run, :evaluate_ms, fn ->
      case Pool.call_training(ctx.pool, command, ctx.call) do
        {:ok, compare} -> decided(run, compare, Gate.decide(compare, config))
        error -> failed(run, "compare", error)
      end
    end)
  end

  defp decided(run, compare, {verdict, reason}) do
    run =
      Map.merge(run, %{
        reason: reason,
        metrics: compare.candidate.metrics,
        baseline: compare.candidate.baseline,
        current_metrics: (compare.current || %{})[:metrics] || %{}
      })

    case verdict do
      :publish -> {:ok, run}
      :refuse -> {:stop, %{run | decision: "refused"}}
    end
  end

  defp publish(%{config: config, pool: pool} = ctx, run) do
    if ctx.lease.() do
      timed(run, :publish_ms, fn ->
        with {:ok, _} <- Pool.call_training(pool, {:publish, config.name, %{}}, ctx.call),
             {:ok, _} <- Pool.call(pool, {:serve, config.name, run.version, %{run: run.id}}) do
          Rollout.swap_local(pool, config, run.version)
          Rollout.broadcast(pool, config.name, run.version)
          {:ok, %{run | decision: "published"}}
        else
          error -> failed(run, "publish", error)
        end
      end)
    else
      {:stop,
       %{run | decision: "skipped", reason: "the scheduler's lease was lost before publishing"}}
    end
  end

  defp export(%{config: %{export: false}}, run), do: {:ok, run}

  defp export(%{config: config, pool: pool} = ctx, run) do
    timed(run, :export_ms, fn ->
      with :ok <- observe_held_out(pool, config, ctx.call),
           {:ok, _} <- Pool.call_training(pool, {:export, config.name, config.export}, ctx.call),
           {:ok, _} <- Pool.call(pool, {:purge_forgotten, config.name, run.started_at, %{}}) do
        {:ok, run}
      else
        error -> failed(run, "export", error)
      end
    end)
  end

  defp observe_held_out(pool, config, call) do
    case Models.split(config) do
      {_, nil} ->
        :ok

      {_, held_out} ->
        case Pool.call_training(pool, {:observe_source, config.name, held_out, %{}}, call) do
          {:ok, _} -> :ok
          # No held-out rows (every user below min_items): nothing to tell.
          {:error, {:badarg, _}} -> :ok
          error -> error
        end
    end
  end

  defp timed(_run, key, fun) do
    started = System.monotonic_time(:millisecond)
    {status, run} = fun.()
    {status, Map.put(run, key, System.monotonic_time(:millisecond) - started)}
  end

  defp failed(run, step, error) do
    {:error,
     Map.merge(run, %{decision: "failed", error: "#{step}: #{inspect(error, limit: 50)}"})}
  end

  defp finish({:ok, run}), do: {:ok, run}
  defp finish({:stop, run}), do: {:ok, run}
  defp finish({:error, run}), do: {:error, run}

  defp record(ctx, run) do
    row = Map.reject(run, fn {_k, v} -> is_nil(v) end)

    case Pool.call(ctx.pool, {:record_run, row}) do
      {:ok, _} ->
        :ok

      error ->
        Logger.error("uro_recommender: run of #{run.model} not recorded: #{inspect(error)}")
    end

    Logger.info(
      "uro_recommender: #{run.model} version #{run[:version]}: #{run.decision} #{run.reason}#{if run[:error], do: " " <> run.error}"
    )
  end
end
