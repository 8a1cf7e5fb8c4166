defmodule UroRecommender.MixProject do
  use Mix.Project

  def project do
    [
      app: :uro_recommender,
      version: "0.1.0",
      elixir: "~> 1.14",
      start_permanent: Mix.env() == :prod,
      elixirc_options: [warnings_as_errors: true],
      elixirc_paths: elixirc_paths(Mix.env()),
      deps: []
    ]
  end

  defp elixirc_paths(:test), do: ["lib", "test/support"]
  defp elixirc_paths(_), do: ["lib"]

  # No application callback: the host application starts the pool with
  # `{UroRecommender, []}` in its own supervision tree.
  def application do
    [extra_applications: [:logger]]
  end
end
