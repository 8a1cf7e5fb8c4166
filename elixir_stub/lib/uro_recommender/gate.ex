defmodule UroRecommender.Gate do
  @moduledoc """
  Whether a newly trained version may be served: the decision rule, apart from everything
  that measures (the port's `compare`: the candidate, the served version and the most-popular
  baseline, scored on the same held-out rows, see docs/PROTOCOL.md).

  With `m` the configuration's `metric` at `k` (ndcg@10 by default), the candidate is
  published when both hold:

    * `candidate[m] > baseline[m] * (1 + margin)`: it beats recommending the most popular
      items by `margin` (default 0.05, 5 %). Strictly: a candidate no better than popular is
      never served, even with `margin: 0`;
    * `candidate[m] >= current[m] * (1 + current_margin)` when a version is served and the
      two share held-out users: it does no worse than what is served (default
      `current_margin` 0.0). Ties pass on purpose: the new version knows the users and worlds
      that arrived since, which the comparison (on rows both know) cannot credit it for.

  Otherwise it is refused: saved on disk, recorded in the run, never served.

      iex> compare = %{candidate: %{metrics: %{ndcg: 0.21}, baseline: %{ndcg: 0.10}}, current: %{metrics: %{ndcg: 0.20}}}
      iex> UroRecommender.Gate.decide(compare, %{metric: :ndcg, margin: 0.05, current_margin: 0.0})
      {:publish, "ndcg 0.2100 > popular 0.1000 x 1.05 and >= served 0.2000 x 1.00"}
      iex> compare = put_in(compare.candidate.baseline.ndcg, 0.205)
      iex> UroRecommender.Gate.decide(compare, %{metric: :ndcg, margin: 0.05, current_margin: 0.0})
      {:refuse, "ndcg 0.2100 <= popular 0.2050 x 1.05"}
  """

  @typedoc "The decision and a sentence saying why (stored in the run's `reason`)."
  @type decision :: {:publish | :refuse, String.t()}

  @doc "The decision on a `compare` reply, for a configuration's `metric` and margins."
  @spec decide(map(), map()) :: decision()
  def decide(compare, config) do
    m = config.metric
    candidate = get_in(compare, [:candidate, :metrics, m])
    baseline = get_in(compare, [:candidate, :baseline, m])

    current =
      case compare[:current] do
        %{metrics: %{^m => value}} -> value
        _none -> nil
      end

    popular = baseline * (1 + config.margin)

    cond do
      not (candidate > popular) ->
        {:refuse, "#{m} #{f(candidate)} <= popular #{f(baseline)} x #{f2(1 + config.margin)}"}

      current != nil and candidate < current * (1 + config.current_margin) ->
        {:refuse,
         "#{m} #{f(candidate)} < served #{f(current)} x #{f2(1 + config.current_margin)}"}

      current == nil ->
        {:publish, "#{m} #{f(candidate)} > popular #{f(baseline)} x #{f2(1 + config.margin)}"}

      true ->
        {:publish,
         "#{m} #{f(candidate)} > popular #{f(baseline)} x #{f2(1 + config.margin)} and >= served " <>
           "#{f(current)} x #{f2(1 + config.current_margin)}"}
    end
  end

  defp f(x), do: :erlang.float_to_binary(x / 1, decimals: 4)
  defp f2(x), do: :erlang.float_to_binary(x / 1, decimals: 2)
end
