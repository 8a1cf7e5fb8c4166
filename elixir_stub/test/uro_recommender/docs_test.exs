defmodule UroRecommender.DocsTest do
  # The examples in the documentation run as tests.
  use ExUnit.Case, async: true

  doctest UroRecommender
  doctest UroRecommender.Config
  doctest UroRecommender.Backoff
  doctest UroRecommender.Batch
  doctest UroRecommender.ModelStore
  doctest UroRecommender.PortProcess
  doctest UroRecommender.Telemetry
  doctest UroRecommender.Jobs
  doctest UroRecommender.Recorder
  doctest UroRecommender.UUID
  doctest UroRecommender.Gate
  doctest UroRecommender.Models
end
