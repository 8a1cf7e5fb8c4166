if Code.ensure_loaded?(Oban.Worker) do
  defmodule UroRecommender.Oban.TrainWorker do
    @moduledoc """
    An Oban worker for the nightly training (compiled only when Oban is present).

    Args (JSON): `"name"`, `"query"`, `"params"` (list), and optionally
    `"algorithm"`, `"task"`, `"model_params"`, `"fit"`, `"eval"`, `"timeout"`,
    `"publish"` (a map of publish options: publish after training),
    `"export"` (a map of export options).

        %{name: "items_als", query: "SELECT user_id AS user, item_id AS item, 1.0 AS label FROM plays"}
        |> UroRecommender.Oban.TrainWorker.new()
        |> Oban.insert()

    The job's return value is the `UroRecommender.Jobs` result map.
    """
    use Oban.Worker, queue: :recommender, max_attempts: 3

    alias UroRecommender.Jobs

    @impl Oban.Worker
    def perform(%Oban.Job{args: %{"name" => name, "query" => query} = args}) do
      opts =
        [
          algorithm: args["algorithm"],
          task: args["task"],
          model_params: args["model_params"],
          fit: args["fit"],
          eval: args["eval"],
          timeout: args["timeout"]
        ]
        |> Enum.reject(fn {_k, v} -> is_nil(v) end)

      with {:ok, trained} <- Jobs.train_from_sql(name, query, args["params"] || [], opts),
           {:ok, published} <- maybe(args["publish"], &Jobs.publish(name, keyword(&1))),
           {:ok, exported} <- maybe(args["export"], &Jobs.export(name, keyword(&1))) do
        {:ok, %{"train" => trained, "publish" => published, "export" => exported}}
      end
    end

    defp maybe(nil, _fun), do: {:ok, nil}
    defp maybe(opts, fun), do: fun.(opts)

    # JSON keys are strings; the port takes atom or string keys, so pass them as they are.
    defp keyword(map) when is_map(map), do: Enum.map(map, fn {k, v} -> {k, v} end)
  end
end
