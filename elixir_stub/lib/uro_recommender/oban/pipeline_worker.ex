if Code.ensure_loaded?(Oban.Worker) do
  defmodule UroRecommender.Oban.PipelineWorker do
    @moduledoc """
    The scheduled run as an Oban job, for hosts that have Oban (compiled only then): the same
    `UroRecommender.Pipeline.run/2` that `UroRecommender.Scheduler` calls, for one model
    (`"model"`) or, without it, each configured model in turn. The configurations are those of
    `config :uro_recommender, UroRecommender.Scheduler, models: ...`.

        # nightly, with Oban's Cron plugin:
        {Oban.Plugins.Cron, crontab: [{"0 3 * * *", UroRecommender.Oban.PipelineWorker}]}

        %{model: "worlds_you_may_like"} |> UroRecommender.Oban.PipelineWorker.new() |> Oban.insert()

    Oban runs each job once, so no lease is taken; run `UroRecommender.Scheduler` with
    `enabled: false` beside it, so that every node keeps loading what is published. The job
    returns `{:ok, %{"runs" => [run]}}` (JSON-storable: `UroRecommender.Jobs.jsonable/1`), or
    `{:error, ...}` when a run failed.
    """
    use Oban.Worker, queue: :recommender, max_attempts: 1

    alias UroRecommender.{Jobs, Models, Pipeline}

    @impl Oban.Worker
    def perform(%Oban.Job{args: args}) do
      overrides =
        Keyword.get(
          Application.get_env(:uro_recommender, UroRecommender.Scheduler, []),
          :models,
          %{}
        )

      configs =
        case args["model"] do
          nil -> Models.all(overrides)
          name -> [Models.get!(name, overrides)]
        end

      pool = String.to_existing_atom(args["pool"] || "Elixir.UroRecommender")
      results = Enum.map(configs, &Pipeline.run(&1, pool: pool))
      runs = Enum.map(results, &Jobs.jsonable(elem(&1, 1)))

      if Enum.all?(results, &match?({:ok, _}, &1)),
        do: {:ok, %{"runs" => runs}},
        else: {:error, %{"runs" => runs}}
    end
  end
end
