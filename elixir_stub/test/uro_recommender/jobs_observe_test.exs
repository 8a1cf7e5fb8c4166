defmodule UroRecommender.JobsObserveTest do
  # The nightly jobs (what UroRecommender.Oban.TrainWorker delegates to) and the event
  # batcher (what UroRecommender.Membrane.RecommendFilter delegates to), through a pool
  # whose ports use the local PostgreSQL server.
  use ExUnit.Case, async: false

  import ExUnit.CaptureLog
  import UroRecommender.TestHelpers

  alias UroRecommender.{Jobs, Observe}

  @pool UroRecommender.JobsPool
  @moduletag timeout: 300_000
  @db System.get_env("URO_REC_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
  @query "SELECT 'u' || (g % 40), 'i' || ((g * 7) % 30), 1.0::FLOAT8 FROM generate_series(1, 1200) g"

  setup_all do
    # publish ships signed versions only: the ports get a model key through the option.
    key_file = model_key_file()

    start_supervised!(
      {UroRecommender,
       name: @pool,
       port_path: port_path(),
       model_dir: tmp_dir("jobs"),
       pool_size: 1,
       timeout: 120_000,
       database_url: @db,
       model_key_file: key_file}
    )

    assert {:ok, _files} = UroRecommender.apply_schema(pool: @pool)
    name = "jobs_als_#{System.unique_integer([:positive])}"

    capture_log(fn ->
      send(
        self(),
        Jobs.train_from_sql(name, @query, [],
          pool: @pool,
          model_params: %{n_epochs: 2, embed_size: 8}
        )
      )
    end)

    assert_received {:ok, trained}
    %{name: name, trained: trained}
  end

  test "train_from_sql returns a JSON-storable result", %{trained: trained} do
    assert %{"job" => "train", "ok" => true, "elapsed_ms" => ms, "result" => result} = trained
    assert is_integer(ms)
    assert %{"version" => 1, "algorithm" => "ALS", "n_users" => 40, "n_items" => 30} = result
    assert storable?(trained)
  end

  test "evaluate, publish and export as jobs", %{name: name} do
    assert {:ok, %{"ok" => true, "result" => result} = ev} =
             Jobs.evaluate(name, {:sql, @query, []}, pool: @pool, metrics: [:precision], k: 5)

    assert %{
             "metrics" => %{"precision" => p},
             "baseline" => %{"precision" => b},
             "lift" => %{"precision" => lift}
           } = result

    assert is_float(p) and is_float(b)
    assert is_float(lift) or is_nil(lift)
    assert storable?(ev)

    assert {:ok, %{"result" => %{"version" => 1, "checksum" => sum}}} =
             Jobs.publish(name, pool: @pool)

    assert byte_size(sum) == 64

    assert {:ok, %{"result" => %{"rows" => 200, "retries" => _}} = ex} =
             Jobs.export(name, pool: @pool, n: 5)

    assert storable?(ex)
  end

  test "a failing job is {:error, map} with the port's reason" do
    assert {:error, %{"ok" => false, "error" => error}} =
             Jobs.train_from_sql("broken", "SELECT nonsense FROM nowhere", [], pool: @pool)

    assert ["database", %{"sqlstate" => "42P01"}] = error
  end

  test "Observe batches events and refreshes the users' recommendations", %{name: name} do
    {:ok, [first | _]} = UroRecommender.recommend(name, "u1", 5, pool: @pool)

    batch = Observe.new(name, batch_size: 2, refresh: 4, pool: @pool)
    {batch, nil} = Observe.add(batch, {"u1", first, 1.0, 1_700_000_000})

    assert {batch, {:ok, %{observed: observed, recommendations: recs}}} =
             Observe.add(batch, {"u2", "i3", 1.0, 1_700_000_001})

    assert %{events: 2, applied: 2} = observed
    assert [_, _, _, _] = recs["u1"]
    refute first in recs["u1"]
    assert {^batch, nil} = Observe.flush(batch)
  end

  defp storable?(v) when is_map(v),
    do: Enum.all?(v, fn {k, x} -> is_binary(k) and storable?(x) end)

  defp storable?(v) when is_list(v), do: Enum.all?(v, &storable?/1)
  defp storable?(v), do: is_binary(v) or is_number(v) or is_boolean(v) or is_nil(v)
end
