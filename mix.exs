# The Mix project of uro_recommender, at the top of the repository so that a host can depend on
# a checkout (`path:`) or on the repository itself (`git:`) and get the C sources, the Makefile
# and python/ along with the Elixir client. The Elixir sources stay in elixir_stub/.
#
# `mix compile` runs `make` (elixir_stub/mix/compile.uro_recommender_make.exs, elixir_make's
# contract), which builds the port and lays it out in $MIX_APP_PATH/priv: the executable,
# python/uro_rec and sql/ (Makefile, "As a Mix dependency").
Code.require_file("elixir_stub/mix/compile.uro_recommender_make.exs", __DIR__)

defmodule UroRecommender.MixProject do
  use Mix.Project

  def project do
    [
      app: :uro_recommender,
      version: "0.1.0",
      elixir: "~> 1.14",
      start_permanent: Mix.env() == :prod,
      # Strict in this repository; a host's newer Elixir must not fail the dependency's build.
      elixirc_options: [warnings_as_errors: Mix.env() != :prod],
      elixirc_paths: elixirc_paths(Mix.env()),
      test_paths: ["elixir_stub/test"],
      config_path: "elixir_stub/config/config.exs",
      compilers: [:uro_recommender_make | Mix.compilers()],
      deps: deps(Mix.env()),
      docs: [main: "UroRecommender", extras: ["elixir_stub/README.md"]]
    ]
  end

  defp elixirc_paths(:test), do: ["elixir_stub/lib", "elixir_stub/test/support"]
  defp elixirc_paths(_), do: ["elixir_stub/lib"]

  # No application callback: the host starts the pool with `{UroRecommender, opts}` in its own
  # supervision tree.
  def application do
    [extra_applications: [:logger]]
  end

  # A host compiles its dependencies in :prod, so this is what uro sees: optional dependencies,
  # compiled before this project when the host has them (uro has telemetry through Phoenix), so
  # that the modules guarded by `Code.ensure_loaded?/1` are compiled.
  defp deps(:prod) do
    if Code.ensure_loaded?(Hex) do
      [
        {:telemetry, "~> 1.0", optional: true},
        {:oban, "~> 2.17", optional: true},
        {:membrane_core, "~> 1.0", optional: true}
      ]
    else
      # Without Hex (the machines this repository is built and tested on) a dependency cannot
      # even name a Hex package: the stand-ins are the optional dependencies, and a host that
      # has one names it with the same path (test/host/host_test.sh).
      [
        {:telemetry, path: "elixir_stub/test/fixtures/telemetry", optional: true},
        {:oban, path: "elixir_stub/test/fixtures/oban", optional: true}
      ]
    end
  end

  # In this repository (dev, test): the stand-ins, with the real APIs
  # (elixir_stub/test/fixtures/README.md).
  defp deps(_env) do
    [
      {:telemetry, path: "elixir_stub/test/fixtures/telemetry"},
      {:oban, path: "elixir_stub/test/fixtures/oban"}
    ]
  end
end
