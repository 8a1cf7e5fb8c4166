defmodule UroRecommender.Observe do
  @moduledoc """
  Batches interaction events `{user, item, label, time}` into
  `{observe, Name, Events}` calls, and optionally fetches refreshed
  recommendations for the users of each batch.

  A plain data structure, so it can live in any process's state (a GenServer, a
  Membrane element, a Broadway batcher):

      batch = UroRecommender.Observe.new("items_als", batch_size: 100, refresh: 10)
      {batch, flushed} = UroRecommender.Observe.add(batch, {user, item, 1.0, now})
      # flushed is nil, or {:ok, %{observed: reply, recommendations: %{user => [item]}}}
      # or {:error, reason} when this event filled the batch
      {batch, flushed} = UroRecommender.Observe.flush(batch)
  """

  @enforce_keys [:name]
  defstruct name: nil,
            events: [],
            count: 0,
            batch_size: 100,
            refresh: nil,
            opts: [],
            refresh_opts: []

  @typedoc "An event: user, item, label (weight), time (unix seconds)."
  @type event :: {UroRecommender.id(), UroRecommender.id(), number(), number()}

  @typedoc "A batch in progress."
  @type t :: %__MODULE__{
          name: UroRecommender.model(),
          events: [event()],
          count: non_neg_integer(),
          batch_size: pos_integer(),
          refresh: pos_integer() | nil,
          opts: keyword(),
          refresh_opts: keyword()
        }

  @typedoc "The outcome of sending one batch."
  @type flushed ::
          nil | {:ok, %{observed: term(), recommendations: map() | nil}} | {:error, term()}

  @doc """
  A new, empty batch. Options: `:batch_size` (default 100), `:refresh` (fetch the
  top `n` for the batch's users after each observe; default off),
  `:refresh_opts` (options of `UroRecommender.recommend_many/4`), `:pool`,
  `:timeout`.
  """
  @spec new(UroRecommender.model(), keyword()) :: t
  def new(name, opts \\ []) do
    %__MODULE__{
      name: name,
      batch_size: Keyword.get(opts, :batch_size, 100),
      refresh: Keyword.get(opts, :refresh),
      refresh_opts: Keyword.get(opts, :refresh_opts, []),
      opts: Keyword.take(opts, [:pool, :timeout])
    }
  end

  @doc "Adds one event; sends the batch when it is full."
  @spec add(t, event()) :: {t, flushed()}
  def add(%__MODULE__{} = batch, {_user, _item, _label, _time} = event) do
    batch = %{batch | events: [event | batch.events], count: batch.count + 1}
    if batch.count >= batch.batch_size, do: flush(batch), else: {batch, nil}
  end

  @doc "Adds many events, sending each batch that fills up; the outcomes in order."
  @spec add_all(t, Enumerable.t()) :: {t, [flushed()]}
  def add_all(batch, events) do
    {batch, outcomes} =
      Enum.reduce(events, {batch, []}, fn event, {b, acc} ->
        case add(b, event) do
          {b, nil} -> {b, acc}
          {b, outcome} -> {b, [outcome | acc]}
        end
      end)

    {batch, Enum.reverse(outcomes)}
  end

  @doc "Sends what is pending (nothing when empty)."
  @spec flush(t) :: {t, flushed()}
  def flush(%__MODULE__{count: 0} = batch), do: {batch, nil}

  def flush(%__MODULE__{} = batch) do
    events = Enum.reverse(batch.events)
    empty = %{batch | events: [], count: 0}

    case UroRecommender.observe(batch.name, events, batch.opts) do
      {:ok, observed} ->
        {empty, {:ok, %{observed: observed, recommendations: refresh(batch, events)}}}

      error ->
        {empty, error}
    end
  end

  defp refresh(%__MODULE__{refresh: nil}, _events), do: nil

  defp refresh(batch, events) do
    users = events |> Enum.map(&elem(&1, 0)) |> Enum.uniq()
    opts = batch.refresh_opts ++ batch.opts

    case UroRecommender.recommend_many(batch.name, users, batch.refresh, opts) do
      {:ok, recs} -> recs
      {:error, _} = error -> error
    end
  end
end
