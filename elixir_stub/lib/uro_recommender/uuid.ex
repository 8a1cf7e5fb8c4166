defmodule UroRecommender.UUID do
  @moduledoc """
  UUIDs as uro's Ecto schemas show them: 36 characters, lowercase hex, dashes at 8-13-18-23.
  Without Ecto (uro's Repo is not ours to depend on): a check that costs no allocation on the
  caller's path (`UroRecommender.Interactions.record/4`), and random version 4 ids for rows
  and runs.

      iex> UroRecommender.UUID.cast("0D7F5D8E-1B2C-4D3E-8F40-0123456789AB")
      {:ok, "0d7f5d8e-1b2c-4d3e-8f40-0123456789ab"}
      iex> UroRecommender.UUID.cast("not-a-uuid")
      :error
      iex> UroRecommender.UUID.cast("0d7f5d8e-1b2c-4d3e-8f40-0123456789-b")
      :error
      iex> UroRecommender.UUID.generate() |> UroRecommender.UUID.cast() |> elem(0)
      :ok
  """

  @doc "The canonical (lowercase) form of a UUID string, or `:error`."
  @spec cast(term()) :: {:ok, String.t()} | :error
  def cast(
        <<_::binary-8, ?-, _::binary-4, ?-, _::binary-4, ?-, _::binary-4, ?-, _::binary-12>> = s
      ) do
    # One pass over the binary (a match context, no sub-binary): the pattern above put the
    # four dashes in place; any other dash leaves fewer than 32 hex digits.
    case hex(s, 0, :lower) do
      {32, :lower} -> {:ok, s}
      {32, :upper} -> {:ok, String.downcase(s)}
      _ -> :error
    end
  end

  def cast(_), do: :error

  defp hex(<<c, rest::binary>>, n, seen) when c in ?0..?9 or c in ?a..?f,
    do: hex(rest, n + 1, seen)

  defp hex(<<c, rest::binary>>, n, _seen) when c in ?A..?F, do: hex(rest, n + 1, :upper)
  defp hex(<<?-, rest::binary>>, n, seen), do: hex(rest, n, seen)
  defp hex(<<>>, n, seen), do: {n, seen}
  defp hex(_, _n, _seen), do: {0, :error}

  @doc "A random (version 4) UUID."
  @spec generate() :: String.t()
  def generate, do: 1 |> generate() |> hd()

  @doc "`n` random (version 4) UUIDs, from one call to the random source."
  @spec generate(non_neg_integer()) :: [String.t()]
  def generate(0), do: []

  def generate(n) do
    for <<a::48, _::4, b::12, _::2, c::62 <- :crypto.strong_rand_bytes(16 * n)>> do
      <<a::48, 4::4, b::12, 2::2, c::62>> |> Base.encode16(case: :lower) |> dashes()
    end
  end

  defp dashes(<<a::binary-8, b::binary-4, c::binary-4, d::binary-4, e::binary-12>>),
    do: <<a::binary, ?-, b::binary, ?-, c::binary, ?-, d::binary, ?-, e::binary>>
end
