defmodule UroRecommender.Telemetry do
  @moduledoc ~S"""
  The `:telemetry` events of uro_recommender. They are emitted when the host has `:telemetry`
  (uro has it through Phoenix; it is an optional dependency), and cost nothing otherwise.

  ## Calls: `[:uro_recommender, :call, :start | :stop | :exception]`

  A span around every call, emitted in the process that makes the call:

  | event | measurements | metadata |
  |---|---|---|
  | `:start` | `system_time`, `monotonic_time` | `command`, `model`, `slot`, `telemetry_span_context` |
  | `:stop` | `duration`, `queue_time`, `monotonic_time` | the same, plus `port`, `result` (`:ok` or `:error`), `batch` (how many callers the port's reply answered: 1, or the size of the `recommend_many` this call was batched into, `UroRecommender.Batch`) and, for an error reply, `error` (`{kind, detail}`) |
  | `:exception` | `duration`, `monotonic_time` | the same, plus `port`, `kind: :error`, `reason`, `stacktrace: []` |

  `:stop` is a reply from the port, an error reply included (`{:error, {:unknown_model, _}}`,
  `{:error, {:timeout, _}}` when the port interrupted the call). `:exception` is a call that got
  no reply from a port: `reason` is `:unavailable`, `{:port_exited, status}`, `:timeout` (killed
  after its timeout and grace), `{:port_down, _}` or `:shutdown`.

  Times are in `:native` units (`System.convert_time_unit/3`). `duration` runs from the call to
  its answer; `queue_time` is the part spent waiting before the port began on it (behind other
  calls of that port, or for a starting port to be ready). `command` is the command's name
  (`:recommend`), `model` the model name (a binary) or `nil`, `slot` the port's id
  (`{pool, 1}`, `{pool, :train}`), `port` its OS pid.

  A batched `recommend` still gets its own span, in its own process, answered with its own list.

  ## Batches: `[:uro_recommender, :batch]`

  Emitted by the port server each time it sends held `recommend` calls as one
  `recommend_many` (`UroRecommender.Batch`): measurement `size` (callers in the batch),
  metadata `command` (`:recommend`), `model`, `slot`, `port`.

  ## Training progress: `[:uro_recommender, :train, :epoch]`

  Measurements `epoch`, `seconds` (that epoch's time) and, when LibRecommender reports it,
  `loss`; metadata `model`, `slot`, `port`. An algorithm that reports the loss sends a second
  event for the same epoch with `loss` in it. (The raw progress map of every event also goes
  out as `[:uro_recommender, :event]`, metadata `event`.)

  ## A handler

      defmodule Uro.RecommenderMetrics do
        require Logger

        def attach do
          :telemetry.attach_many(
            "uro-recommender",
            [[:uro_recommender, :call, :stop], [:uro_recommender, :call, :exception],
             [:uro_recommender, :train, :epoch]],
            &__MODULE__.handle/4,
            nil
          )
        end

        def handle([:uro_recommender, :call, :stop], %{duration: d, queue_time: q}, meta, _) do
          Logger.debug(fn ->
            ms = &System.convert_time_unit(&1, :native, :microsecond) / 1000
            "recommender #{meta.command} #{meta.model}: #{ms.(d)} ms (queued #{ms.(q)} ms)"
          end)
        end

        def handle([:uro_recommender, :call, :exception], _measurements, meta, _) do
          Logger.warning("recommender #{meta.command} got no reply: #{inspect(meta.reason)}")
        end

        def handle([:uro_recommender, :train, :epoch], %{epoch: n} = m, meta, _) do
          Logger.info("training #{meta.model}: epoch #{n} #{inspect(Map.get(m, :loss))}")
        end
      end

  or, with `Telemetry.Metrics` (Phoenix's `UroWeb.Telemetry`):

      summary("uro_recommender.call.stop.duration",
        tags: [:command, :model], unit: {:native, :millisecond})
  """

  if Code.ensure_loaded?(:telemetry) do
    @doc false
    def execute(event, measurements, metadata),
      do: :telemetry.execute(event, measurements, metadata)
  else
    @doc false
    def execute(_event, _measurements, _metadata), do: :ok
  end

  # Commands whose second element is a model name.
  @model_commands [:train, :recommend, :recommend_many, :predict, :similar_items, :save, :load] ++
                    [:unload, :evaluate, :export, :publish, :observe]

  @doc """
  The `command` and `model` of a command, as call events carry them.

      iex> UroRecommender.Telemetry.describe({:recommend, "worlds", 7, 10, %{}})
      %{command: :recommend, model: "worlds"}
      iex> UroRecommender.Telemetry.describe(:info)
      %{command: :info, model: nil}
  """
  @spec describe(term()) :: %{command: atom() | nil, model: String.t() | nil}
  def describe(command) when is_atom(command), do: %{command: command, model: nil}

  def describe(command) when is_tuple(command) and tuple_size(command) >= 1 do
    name = command_name(elem(command, 0))

    model =
      if name in @model_commands and tuple_size(command) >= 2, do: model_name(elem(command, 1))

    %{command: name, model: model}
  end

  def describe(_command), do: %{command: nil, model: nil}

  defp command_name(name) when is_atom(name), do: name
  defp command_name(_), do: nil

  defp model_name(name) when is_binary(name), do: name
  defp model_name(name) when is_atom(name), do: Atom.to_string(name)
  defp model_name(_), do: nil

  @doc false
  # Emits :start; returns what stop/4 needs.
  def start(slot, command) do
    meta = Map.merge(describe(command), %{slot: slot, telemetry_span_context: make_ref()})
    now = System.monotonic_time()

    execute(
      [:uro_recommender, :call, :start],
      %{monotonic_time: now, system_time: System.system_time()},
      meta
    )

    {now, meta}
  end

  @doc false
  # `answered` is %{port: os_pid, queue_time: native} when the reply came from a port, nil when
  # the call got none.
  def stop({started, meta}, reply, answered) do
    now = System.monotonic_time()
    times = %{duration: now - started, monotonic_time: now}

    case {reply, answered} do
      {{:ok, _}, %{port: port, queue_time: q}} ->
        execute(
          [:uro_recommender, :call, :stop],
          Map.put(times, :queue_time, q),
          Map.merge(meta, %{port: port, result: :ok, batch: Map.get(answered, :batch, 1)})
        )

      {{:error, error}, %{port: port, queue_time: q}} ->
        execute(
          [:uro_recommender, :call, :stop],
          Map.put(times, :queue_time, q),
          Map.merge(meta, %{
            port: port,
            result: :error,
            error: error,
            batch: Map.get(answered, :batch, 1)
          })
        )

      {{:error, reason}, _} ->
        execute(
          [:uro_recommender, :call, :exception],
          times,
          Map.merge(meta, %{
            port: answered && answered[:port],
            kind: :error,
            reason: reason,
            stacktrace: []
          })
        )
    end
  end

  @doc false
  def epoch(%{epoch: epoch, seconds: seconds} = event, model, slot, os_pid)
      when is_integer(epoch) do
    measurements =
      %{epoch: epoch, seconds: seconds}
      |> then(fn m -> if loss = Map.get(event, :loss), do: Map.put(m, :loss, loss), else: m end)

    execute([:uro_recommender, :train, :epoch], measurements, %{
      model: model,
      slot: slot,
      port: os_pid
    })
  end

  def epoch(_event, _model, _slot, _os_pid), do: :ok
end
