defmodule UroRecommender.ObanWorkerTest do
  # UroRecommender.Oban.TrainWorker is compiled because this project has an :oban dependency
  # (here the fixture of test/fixtures/oban; in uro the real Oban), and performs a job against
  # the default pool and the local PostgreSQL server.
  use ExUnit.Case, async: false

  import ExUnit.CaptureLog
  import UroRecommender.TestHelpers

  @moduletag timeout: 300_000
  @db System.get_env("URO_REC_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")

  test "the worker is compiled, and a job trains and publishes nothing it was not asked to" do
    assert Code.ensure_loaded?(UroRecommender.Oban.TrainWorker)

    start_supervised!(
      {UroRecommender,
       port_path: port_path(),
       model_dir: tmp_dir("oban"),
       pool_size: 1,
       database_url: @db,
       model_key_file: model_key_file()}
    )

    job =
      UroRecommender.Oban.TrainWorker.new(%{
        name: "oban_als",
        query: "SELECT g % 20, (g * 7) % 15, 1.0::FLOAT8 FROM generate_series(1, 300) g",
        model_params: %{n_epochs: 1, embed_size: 4}
      })

    assert %Oban.Job{args: %{"name" => "oban_als"}, queue: "recommender"} = job
    capture_log(fn -> send(self(), UroRecommender.Oban.TrainWorker.perform(job)) end)

    assert_received {:ok,
                     %{
                       "train" => %{"ok" => true, "result" => %{"version" => 1}},
                       "publish" => nil
                     }}

    assert {:ok, [_, _]} = UroRecommender.recommend("oban_als", 1, 2)
  end

  test "the pipeline worker runs the scheduler's pipeline: trained from SQL, gated, published" do
    assert Code.ensure_loaded?(UroRecommender.Oban.PipelineWorker)
    alias UroRecommender.UroFixture

    db = UroFixture.create_database("oban")
    on_exit(fn -> UroFixture.drop_database(db) end)
    uro = UroFixture.create_uro_schema(db, 120)
    pool = UroRecommender.ObanPipelinePool

    start_supervised!(
      {UroRecommender,
       name: pool,
       port_path: port_path(),
       model_dir: tmp_dir("oban_pipeline"),
       pool_size: 1,
       database_url: db,
       model_key_file: model_key_file()}
    )

    capture_log(fn -> send(self(), UroRecommender.apply_schema(pool: pool, schema: :uro)) end)
    assert_received {:ok, _}
    now = System.os_time(:microsecond) / 1_000_000

    rows =
      for {{user, kind, item}, i} <- Enum.with_index(UroFixture.visits(uro)),
          do: {UroRecommender.UUID.generate(), user.id, kind, item.id, 1.0, now + i / 1000}

    assert {:ok, %{written: n}} =
             UroRecommender.call({:record_interactions, rows, %{ids: :uuid}}, pool: pool)

    assert n == length(rows)

    job =
      UroRecommender.Oban.PipelineWorker.new(%{
        model: "worlds_you_may_like",
        pool: Atom.to_string(pool)
      })

    capture_log(fn -> send(self(), UroRecommender.Oban.PipelineWorker.perform(job)) end)

    assert_received {:ok,
                     %{
                       "runs" => [
                         %{
                           "model" => "worlds_you_may_like",
                           "decision" => "published",
                           "version" => 1
                         }
                       ]
                     }}

    assert {:ok, %{"worlds_you_may_like" => 1}} = UroRecommender.call(:served, pool: pool)
  end
end
