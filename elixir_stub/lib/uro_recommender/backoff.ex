defmodule UroRecommender.Backoff do
  @moduledoc """
  How long a port slot waits before its next attempt after `n` failures in a row: `first_ms`,
  doubling, never more than `max_ms` (the pool's `:backoff` option, default `{1_000, 60_000}`).

      iex> Enum.map(1..8, &UroRecommender.Backoff.delay(&1, {1_000, 60_000}))
      [1000, 2000, 4000, 8000, 16000, 32000, 60000, 60000]

  A slot waits instead of letting its supervisor restart it: a restart loop would use up the
  supervisor's restart intensity in seconds and take the host's supervision tree down with it.
  """

  @typedoc "`{first_ms, max_ms}`."
  @type t :: {pos_integer(), pos_integer()}

  @doc "The wait after `failures` (>= 1) failures in a row, in ms."
  @spec delay(pos_integer(), t) :: pos_integer()
  def delay(failures, {first, max}) when is_integer(failures) and failures >= 1 do
    # Capped before the power, so that a slot failing for days does not build a bignum.
    min(max, first * Integer.pow(2, min(failures - 1, 30)))
  end
end
