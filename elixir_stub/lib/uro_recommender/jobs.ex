defmodule UroRecommender.Jobs do
  @moduledoc """
  The nightly work as plain functions, for an Oban worker (see
  `UroRecommender.Oban.TrainWorker`), a Quantum job or iex.

  Each returns `{:ok, map}` or `{:error, map}` where the map has string keys and
  JSON values only, so a job can store it (Oban job meta, a database row, logs).

  Common options: `:pool`, `:timeout`.
  """

  @typedoc "A JSON-storable result."
  @type result :: {:ok, map()} | {:error, map()}

  @doc ~S"""
  Trains `name` on the rows a SQL query returns (columns `user, item, label[,
  time]`), in the port (data source `{:sql, query, params}`;
  the port connects with the pool's `database_url`), then hot-swaps the new
  version into the serving ports.

  Options: `algorithm` (default `"ALS"`), `task`, `model_params` (the model's
  constructor params), `fit`, `eval` (e.g. `%{test_size: 0.2, k: 10}`), `save`
  (default true), `pool`, `timeout`, `events`.
  """
  @spec train_from_sql(UroRecommender.model(), String.t(), list(), keyword()) :: result()
  def train_from_sql(name, query, params \\ [], opts \\ []) do
    train(name, {:sql, query, params}, opts)
  end

  @doc """
  Trains `name` on any data source the port takes (`{:rows, rows}`,
  `{:csv, path}`, `{:sql, ...}`); options as `train_from_sql/4`.
  """
  @spec train(UroRecommender.model(), term(), keyword()) :: result()
  def train(name, source, opts \\ []) do
    spec =
      %{
        algorithm: Keyword.get(opts, :algorithm, "ALS"),
        data: source,
        task: Keyword.get(opts, :task),
        params: Keyword.get(opts, :model_params),
        fit: Keyword.get(opts, :fit),
        eval: Keyword.get(opts, :eval),
        save: Keyword.get(opts, :save)
      }
      |> Map.reject(fn {_k, v} -> is_nil(v) end)

    started = System.monotonic_time(:millisecond)

    name
    |> UroRecommender.train(spec, Keyword.take(opts, [:pool, :timeout, :events]))
    |> wrap(%{"job" => "train", "name" => to_string(name)}, started)
  end

  @doc "Evaluates a loaded model on `source`; options `metrics`, `k`, `pool`, `timeout`."
  @spec evaluate(UroRecommender.model(), term(), keyword()) :: result()
  def evaluate(name, source, opts \\ []) do
    started = System.monotonic_time(:millisecond)

    name
    |> UroRecommender.evaluate(source, opts)
    |> wrap(%{"job" => "evaluate", "name" => to_string(name)}, started)
  end

  @doc "Publishes a model (`{publish, Name, Opts}`); options go to the port."
  @spec publish(UroRecommender.model(), keyword()) :: result()
  def publish(name, opts \\ []) do
    started = System.monotonic_time(:millisecond)

    name
    |> UroRecommender.publish(opts)
    |> wrap(%{"job" => "publish", "name" => to_string(name)}, started)
  end

  @doc "Exports a model (`{export, Name, Opts}`); options go to the port."
  @spec export(UroRecommender.model(), keyword()) :: result()
  def export(name, opts \\ []) do
    started = System.monotonic_time(:millisecond)

    name
    |> UroRecommender.export(opts)
    |> wrap(%{"job" => "export", "name" => to_string(name)}, started)
  end

  defp wrap(reply, base, started) do
    base = Map.put(base, "elapsed_ms", System.monotonic_time(:millisecond) - started)

    case reply do
      {:ok, value} -> {:ok, Map.merge(base, %{"ok" => true, "result" => jsonable(value)})}
      {:error, reason} -> {:error, Map.merge(base, %{"ok" => false, "error" => jsonable(reason)})}
    end
  end

  @doc """
  A term as JSON-storable data: atoms (but `true`, `false`, `nil`) become
  strings, map keys strings, tuples lists; anything else unknown is inspected.

      iex> UroRecommender.Jobs.jsonable(%{version: 2, error: {:database, %{sqlstate: "42P01"}}})
      %{"error" => ["database", %{"sqlstate" => "42P01"}], "version" => 2}
  """
  @spec jsonable(term()) :: term()
  def jsonable(v) when is_boolean(v) or is_nil(v) or is_number(v), do: v
  def jsonable(v) when is_atom(v), do: Atom.to_string(v)

  def jsonable(v) when is_binary(v) do
    if String.valid?(v), do: v, else: Base.encode64(v)
  end

  def jsonable(v) when is_list(v), do: Enum.map(v, &jsonable/1)
  def jsonable(v) when is_tuple(v), do: v |> Tuple.to_list() |> jsonable()

  def jsonable(v) when is_map(v) do
    Map.new(v, fn {k, val} -> {key(k), jsonable(val)} end)
  end

  def jsonable(v), do: inspect(v)

  defp key(k) when is_binary(k), do: k
  defp key(k) when is_atom(k), do: Atom.to_string(k)
  defp key(k) when is_integer(k), do: Integer.to_string(k)
  defp key(k), do: inspect(k)
end
