if Code.ensure_loaded?(Membrane.Filter) do
  defmodule UroRecommender.Membrane.RecommendFilter do
    @moduledoc """
    A Membrane filter (compiled only when Membrane is present) that passes its
    buffers through unchanged and feeds the interaction events they carry to
    `UroRecommender.Observe`. A buffer's payload is one event
    `{user, item, label, time}` or a list of them. When a batch is sent and
    `:refresh` is set, the refreshed recommendations are sent to `:notify` (a
    pid) as `{:uro_recommender_recommendations, name, %{user => [item]}}`.
    """
    use Membrane.Filter

    alias UroRecommender.Observe

    def_input_pad(:input, accepted_format: _any, flow_control: :auto)
    def_output_pad(:output, accepted_format: _any, flow_control: :auto)

    def_options(
      model: [spec: String.t(), description: "Model name"],
      batch_size: [spec: pos_integer(), default: 100, description: "Events per observe call"],
      refresh: [spec: pos_integer() | nil, default: nil, description: "Top N to refetch"],
      notify: [spec: pid() | nil, default: nil, description: "Receives refreshed recommendations"],
      pool: [spec: atom(), default: UroRecommender, description: "Pool name"]
    )

    @impl true
    def handle_init(_ctx, opts) do
      batch =
        Observe.new(opts.model,
          batch_size: opts.batch_size,
          refresh: opts.refresh,
          pool: opts.pool
        )

      {[], %{batch: batch, notify: opts.notify, model: opts.model}}
    end

    @impl true
    def handle_buffer(:input, buffer, _ctx, state) do
      events = List.wrap(buffer.payload)
      {batch, outcomes} = Observe.add_all(state.batch, events)
      Enum.each(outcomes, &notify(&1, state))
      {[buffer: {:output, buffer}], %{state | batch: batch}}
    end

    @impl true
    def handle_end_of_stream(:input, _ctx, state) do
      {batch, outcome} = Observe.flush(state.batch)
      notify(outcome, state)
      {[end_of_stream: :output], %{state | batch: batch}}
    end

    defp notify({:ok, %{recommendations: recs}}, %{notify: pid, model: model})
         when is_pid(pid) and is_map(recs),
         do: send(pid, {:uro_recommender_recommendations, model, recs})

    defp notify(_outcome, _state), do: :ok
  end
end
