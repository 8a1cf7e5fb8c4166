defmodule UroRecommender.ModelStore do
  @moduledoc """
  Where a port server keeps the models it has loaded, so that the server of a restarted OS
  process loads the same versions again (`UroRecommender.Port`, "Port exit").

  A store is one of:

    * `nil`: nothing is kept;
    * an ETS table (public, `:set`), one row per model, `{{:loaded, key, name}, version}`, so
      that servers sharing a key (the serving ports of a pool) each add and remove their own
      models without overwriting the others'. `UroRecommender.Pool` owns one per pool;
    * `:persistent_term`: one map per key, for a port started on its own with a `:name`.

  `key` says whose models they are: a port's id, or `:serving` for all of a pool's serving
  ports.

      iex> table = :ets.new(:doc_store, [:set, :public])
      iex> UroRecommender.ModelStore.put(table, :serving, "worlds", 3)
      :ok
      iex> UroRecommender.ModelStore.get(table, :serving)
      %{"worlds" => 3}
      iex> UroRecommender.ModelStore.put(table, :serving, "worlds", nil)
      :ok
      iex> UroRecommender.ModelStore.get(table, :serving)
      %{}
  """

  @typedoc "Where the models are kept."
  @type t :: nil | :persistent_term | :ets.tid() | atom()

  @doc "The `%{name => version}` kept under `key`."
  @spec get(t, term()) :: %{String.t() => pos_integer()}
  def get(nil, _key), do: %{}
  def get(:persistent_term, key), do: :persistent_term.get({__MODULE__, key}, %{})

  def get(table, key) do
    table
    |> :ets.match_object({{:loaded, key, :_}, :_})
    |> Map.new(fn {{:loaded, _, name}, version} -> {name, version} end)
  end

  @doc "Keeps `name` at `version` under `key`; a `nil` version forgets it."
  @spec put(t, term(), String.t(), pos_integer() | nil) :: :ok
  def put(nil, _key, _name, _version), do: :ok

  def put(:persistent_term, key, name, version) do
    old = get(:persistent_term, key)
    new = if version, do: Map.put(old, name, version), else: Map.delete(old, name)
    # persistent_term: a write costs a global scan, so only a change is written.
    if new != old, do: :persistent_term.put({__MODULE__, key}, new)
    :ok
  end

  def put(table, key, name, nil) do
    :ets.delete(table, {:loaded, key, name})
    :ok
  end

  def put(table, key, name, version) do
    :ets.insert(table, {{:loaded, key, name}, version})
    :ok
  end
end
