# The recorder's benchmark (make bench-interactions; results in bench/INTERACTIONS_BENCH.md):
# UroRecommender.Interactions.record/4 against a bare GenServer.cast to a process that only
# keeps what it gets, interleaved in the same run, and the rows written per second against
# the same rows sent to the port as bare record_interactions calls.
#
#   mix run bench/interactions_bench.exs
#
# Environment: URO_REC_PORT (the port executable), URO_REC_TEST_PG (the server; a database of
# its own is created and dropped), BENCH_CALLS (default 200000), BENCH_CALLERS (default 4).
Code.require_file("../elixir_stub/test/support/uro_fixture.ex", __DIR__)

defmodule Bench.Sink do
  # The baseline: a GenServer that keeps what it is cast, nothing else.
  use GenServer
  def start_link(_), do: GenServer.start_link(__MODULE__, 0, name: __MODULE__)
  def init(n), do: {:ok, n}
  def handle_cast({:record, _row}, n), do: {:noreply, n + 1}
  def handle_call(:count, _from, n), do: {:reply, n, n}
end

defmodule Bench.Interactions do
  alias UroRecommender.{Interactions, UroFixture}

  @recorder Bench.Recorder
  @pool Bench.Pool

  def main do
    calls = String.to_integer(System.get_env("BENCH_CALLS", "200000"))
    callers = String.to_integer(System.get_env("BENCH_CALLERS", "4"))
    db = UroFixture.create_database("bench")

    dir =
      Path.join(
        System.tmp_dir!(),
        "uro_rec_bench_#{System.pid()}_#{System.unique_integer([:positive])}"
      )

    try do
      uro = UroFixture.create_uro_schema(db, 200)
      setup(db, dir)
      ids = for u <- uro.users, w <- Enum.filter(uro.worlds, & &1.public), do: {u.id, w.id}
      ids = List.to_tuple(ids)
      IO.puts("load: #{String.trim(elem(System.cmd("uptime", []), 0))}")
      latency(ids, div(calls, 4))
      full(ids, div(calls, 4))
      throughput(ids, calls, callers)
      written(ids, calls)
    after
      UroFixture.drop_database(db)
      File.rm_rf(dir)
    end
  end

  defp setup(db, dir) do
    port = System.get_env("URO_REC_PORT") || Path.expand("../priv/uro_recommender", __DIR__)

    {:ok, _} =
      Supervisor.start_link(
        [
          {UroRecommender,
           name: @pool, port_path: port, model_dir: dir, pool_size: 1, database_url: db},
          {Interactions, name: @recorder, pool: @pool, observe: %{}, max_buffer: 1_000_000},
          # A recorder whose database is gone (its pool never starts): full after 1000 rows.
          Supervisor.child_spec(
            {Interactions,
             name: Bench.Stuck, pool: Bench.NoPool, observe: %{}, max_buffer: 1_000},
            id: Bench.Stuck
          ),
          Bench.Sink
        ],
        strategy: :one_for_one
      )

    {:ok, _} = UroRecommender.apply_schema(pool: @pool, schema: :uro)
  end

  defp record({user, world}), do: Interactions.record(user, :world, world, 1.0, server: @recorder)

  defp cast({user, world}),
    do: GenServer.cast(Bench.Sink, {:record, {user, :world, world, 1.0, 0.0}})

  # One caller, call by call: record, then the bare cast, alternating which goes first.
  defp latency(ids, n) do
    samples =
      for i <- 1..n do
        pair = elem(ids, rem(i, tuple_size(ids)))

        if rem(i, 2) == 0 do
          r = time(fn -> record(pair) end)
          {r, time(fn -> cast(pair) end)}
        else
          c = time(fn -> cast(pair) end)
          {time(fn -> record(pair) end), c}
        end
      end

    {rec, base} = Enum.unzip(samples)
    drain()
    IO.puts("\n== caller latency, one caller, #{n} calls each, interleaved (ns)")
    row("record/4", rec, base)
    row("GenServer.cast (baseline)", base, base)
  end

  # The same with a full buffer (the database is down): record/4 drops, and must not wait.
  defp full(ids, n) do
    stuck = fn {user, world} ->
      Interactions.record(user, :world, world, 1.0, server: Bench.Stuck)
    end

    for i <- 1..1_000, do: :ok = stuck.(elem(ids, i))

    samples =
      for i <- 1..n do
        pair = elem(ids, rem(i, tuple_size(ids)))
        c = time(fn -> cast(pair) end)
        {time(fn -> {:error, :full} = stuck.(pair) end), c}
      end

    {rec, base} = Enum.unzip(samples)
    drain()

    IO.puts(
      "\n== caller latency with the buffer full (database down: every call dropped), #{n} calls (ns)"
    )

    row("record/4 -> {:error, :full}", rec, base)
    row("GenServer.cast (baseline)", base, base)
    IO.puts("  dropped and counted: #{Interactions.stats(Bench.Stuck).dropped}")
  end

  defp time(fun) do
    t0 = System.monotonic_time(:nanosecond)
    fun.()
    System.monotonic_time(:nanosecond) - t0
  end

  defp row(label, xs, base) do
    s = Enum.sort(xs)
    b = Enum.sort(base)

    IO.puts(
      "  #{String.pad_trailing(label, 28)} p50 #{pct(s, 50)}  p99 #{pct(s, 99)}  p99.9 #{pct(s, 99.9)}" <>
        "   (p99 x#{Float.round(pct(s, 99) / max(pct(b, 99), 1), 2)} the baseline's)"
    )
  end

  defp pct(sorted, p),
    do: Enum.at(sorted, min(length(sorted) - 1, round(p / 100 * length(sorted))))

  # `callers` processes at once, as fast as they can; three rounds of each, alternating.
  defp throughput(ids, calls, callers) do
    IO.puts("\n== accepted per second, #{callers} callers at once, #{calls} calls a round")

    results =
      for round <- 1..3, {label, fun} <- order(round) do
        {label, burst(ids, calls, callers, fun)}
      end

    for label <- ["record/4", "GenServer.cast (baseline)"] do
      rates = for {^label, r} <- results, do: r

      IO.puts(
        "  #{String.pad_trailing(label, 28)} #{Enum.map_join(rates, "  ", &"#{round(&1)}/s")}"
      )
    end

    r = for({"record/4", x} <- results, do: x) |> Enum.sum()
    b = for({"GenServer.cast (baseline)", x} <- results, do: x) |> Enum.sum()
    IO.puts("  record/4 accepts x#{Float.round(r / b, 2)} the baseline's rate")
  end

  defp order(round) do
    pairs = [{"record/4", &record/1}, {"GenServer.cast (baseline)", &cast/1}]
    if rem(round, 2) == 0, do: Enum.reverse(pairs), else: pairs
  end

  defp burst(ids, calls, callers, fun) do
    per = div(calls, callers)
    t0 = System.monotonic_time(:microsecond)

    1..callers
    |> Enum.map(fn c ->
      Task.async(fn ->
        for i <- 1..per, do: fun.(elem(ids, rem(c * 7919 + i, tuple_size(ids))))
      end)
    end)
    |> Task.await_many(:infinity)

    rate = per * callers / ((System.monotonic_time(:microsecond) - t0) / 1_000_000)
    drain()
    rate
  end

  # Waits until the recorder has written everything and the sink read its mailbox.
  defp drain do
    {:ok, _} = Interactions.flush(@recorder, :infinity)
    GenServer.call(Bench.Sink, :count, :infinity)
  end

  # Rows written per second: record/4 bursts through the recorder (default flush settings,
  # users checked) until the table has them, against the same rows sent as bare
  # record_interactions calls of 500 rows, back to back, from one process.
  defp written(ids, calls) do
    n = min(calls, 100_000)
    IO.puts("\n== written per second, #{n} rows, three rounds each, alternating")

    results =
      for round <- 1..3,
          which <- if(rem(round, 2) == 1, do: [:recorder, :bare], else: [:bare, :recorder]) do
        {which, write_round(which, ids, n)}
      end

    for which <- [:recorder, :bare] do
      rates = for {^which, r} <- results, do: r

      IO.puts(
        "  #{String.pad_trailing(label(which), 42)} #{Enum.map_join(rates, "  ", &"#{round(&1)}/s")}"
      )
    end

    r = for({:recorder, x} <- results, do: x) |> Enum.sum()
    b = for({:bare, x} <- results, do: x) |> Enum.sum()
    IO.puts("  the recorder writes x#{Float.round(r / b, 2)} the bare calls' rate")
  end

  defp label(:recorder), do: "record/4 until written (flush_rows 500)"
  defp label(:bare), do: "record_interactions x 500 rows (baseline)"

  defp write_round(:recorder, ids, n) do
    before = Interactions.stats(@recorder).written
    t0 = System.monotonic_time(:microsecond)
    for i <- 1..n, do: record(elem(ids, rem(i, tuple_size(ids))))
    {:ok, %{written: w}} = Interactions.flush(@recorder, :infinity)
    true = w - before == n
    n / ((System.monotonic_time(:microsecond) - t0) / 1_000_000)
  end

  defp write_round(:bare, ids, n) do
    now = System.os_time(:microsecond) / 1_000_000
    t0 = System.monotonic_time(:microsecond)

    1..n
    |> Enum.chunk_every(500)
    |> Enum.each(fn chunk ->
      rows =
        for {i, id} <- Enum.zip(chunk, UroRecommender.UUID.generate(length(chunk))) do
          {user, world} = elem(ids, rem(i, tuple_size(ids)))
          {id, user, :world, world, 1.0, now}
        end

      {:ok, _} =
        UroRecommender.call({:record_interactions, rows, %{ids: :uuid, users: "users"}},
          pool: @pool
        )
    end)

    n / ((System.monotonic_time(:microsecond) - t0) / 1_000_000)
  end
end

Bench.Interactions.main()
