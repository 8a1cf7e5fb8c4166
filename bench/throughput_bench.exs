# Throughput under concurrency (make bench-throughput; results in bench/README.md,
# "Throughput"): 1, 8 and 64 client processes call UroRecommender.recommend/4 (N = 10, random
# known users) on a 10k-item ALS model as fast as they can, through pools of 1, 2 and 4
# serving ports, with batching off (batch_size: 1, every call its own frame, as before
# UroRecommender.Batch) and on (the default, 32). Both pools of a size run side by side and the
# measurements alternate between them, round by round, so that both see the same machine.
#
#   mix run bench/throughput_bench.exs
#
# Environment: URO_REC_PORT (the port executable), BENCH_PYTHON (the virtualenv's python, for
# uro_rec.datagen), BENCH_PLOT_PYTHONPATH (where matplotlib is: the test overlay), BENCH_SECONDS
# (per measurement, default 2), BENCH_ROUNDS (default 3), BENCH_POOLS (default "1,2,4"),
# BENCH_CLIENTS (default "1,8,64"), BENCH_USERS / BENCH_ITEMS / BENCH_INTERACTIONS
# (20000 / 10000 / 300000, bench/bench.escript's model), BENCH_PLOT (default
# bench/throughput.png), BENCH_CPU (a CPU list such as "1": every port of every pool is
# started with that `:cpu_affinity`; unset, the ports run where the OS puts them).

defmodule Bench.Throughput do
  @model "bench_tp"
  @n 10

  def main do
    # The ports' start-up and training lines: not the bench's business.
    Logger.configure(level: :warning)
    seconds = env_num("BENCH_SECONDS", 2.0)
    rounds = env_int("BENCH_ROUNDS", 3)
    pools = env_list("BENCH_POOLS", "1,2,4")
    clients = env_list("BENCH_CLIENTS", "1,8,64")

    {nu, ni, nx} =
      {env_int("BENCH_USERS", 20_000), env_int("BENCH_ITEMS", 10_000),
       env_int("BENCH_INTERACTIONS", 300_000)}

    dir = Path.join(System.tmp_dir!(), "uro_rec_tp_bench_#{System.unique_integer([:positive])}")
    File.mkdir_p!(dir)
    key = Path.join(dir, "model.key")
    File.write!(key, "# bench key\n" <> Base.encode16(:crypto.strong_rand_bytes(24)) <> "\n")
    File.chmod!(key, 0o600)
    base = [port_path: port_path(), model_dir: Path.join(dir, "models"), model_key_file: key]

    IO.puts(
      "machine: #{System.schedulers_online()} schedulers, #{cores()} cores, " <>
        "OTP #{System.otp_release()}; #{uptime()}"
    )

    try do
      users = train(base, dir, nu, ni, nx)

      IO.puts(
        "\n#{rounds} rounds x #{seconds} s per measurement (after 0.5 s of warm-up); " <>
          "N = #{@n}, #{users} users; off/on alternate"
      )

      results =
        Enum.reduce(pools, %{}, fn size, acc ->
          Map.merge(acc, measure_pools(base, size, clients, rounds, seconds, users))
        end)

      report(results, pools, clients)
      plot(results, pools, clients, dir)
      IO.puts("\nload at the end: #{uptime()}")
      if targets(results, Enum.min(pools), clients), do: :ok, else: System.halt(1)
    after
      File.rm_rf(dir)
    end
  end

  # ---- the model -----------------------------------------------------------------------------

  defp train(base, dir, nu, ni, nx) do
    csv = Path.join(dir, "tp.csv")
    python = System.get_env("BENCH_PYTHON") || raise "BENCH_PYTHON: the virtualenv's python"

    args =
      ~w(-m uro_rec.datagen --users #{nu} --items #{ni} --interactions #{nx} --seed 1 --out) ++
        [csv]

    {_, 0} =
      System.cmd(python, args, cd: Path.expand("../python", __DIR__), stderr_to_stdout: true)

    {:ok, sup} = start_pool(base, Bench.Train, 1, 1)

    spec = %{
      algorithm: "ALS",
      data: {:csv, csv},
      params: %{embed_size: 32, n_epochs: 3, n_threads: 2, seed: 1}
    }

    {:ok, %{n_users: users, n_items: items, seconds: fit}} =
      UroRecommender.train(@model, spec, pool: Bench.Train, timeout: 600_000)

    IO.puts(
      "model: ALS, #{users} users x #{items} items x #{nx} interactions, 32 dims " <>
        "(fit #{Float.round(fit, 1)} s)"
    )

    Supervisor.stop(sup)
    users
  end

  defp start_pool(base, name, size, batch) do
    opts = base ++ [name: name, pool_size: size, batch_size: batch, timeout: 60_000]

    opts =
      case System.get_env("BENCH_CPU", "") do
        "" -> opts
        cpus -> opts ++ [cpu_affinity: cpus]
      end

    Supervisor.start_link([{UroRecommender, opts}], strategy: :one_for_one)
  end

  # ---- measuring -----------------------------------------------------------------------------

  defp measure_pools(base, size, clients, rounds, seconds, users) do
    off = Module.concat(Bench, "Off#{size}")
    on = Module.concat(Bench, "On#{size}")
    {:ok, sup_off} = start_pool(base, off, size, 1)
    {:ok, sup_on} = start_pool(base, on, size, 32)

    for pool <- [off, on] do
      {:ok, _} = UroRecommender.load(@model, pool: pool, timeout: 120_000)
    end

    IO.puts("pool_size #{size}: ports #{Enum.join(placement(off) ++ placement(on), ", ")}")

    samples =
      for round <- 1..rounds, {c, i} <- Enum.with_index(clients), reduce: %{} do
        acc ->
          order =
            if rem(round + i, 2) == 0,
              do: [{:off, off}, {:on, on}],
              else: [{:on, on}, {:off, off}]

          Enum.reduce(order, acc, fn {mode, pool}, acc ->
            run(pool, c, 0.5, users)
            {calls, lat, wall} = run(pool, c, seconds, users)

            Map.update(acc, {size, mode, c}, {calls, [lat], wall}, fn {n, ls, w} ->
              {n + calls, [lat | ls], w + wall}
            end)
          end)
      end

    Supervisor.stop(sup_off)
    Supervisor.stop(sup_on)

    for {key, {calls, lats, wall}} <- samples, into: %{} do
      sorted = lats |> Enum.concat() |> Enum.sort() |> List.to_tuple()
      {key, %{rate: calls / wall, p50: pct(sorted, 50), p99: pct(sorted, 99), calls: calls}}
    end
  end

  # `clients` processes call for `seconds`; -> {calls, latencies in µs, wall seconds}.
  defp run(pool, clients, seconds, users) do
    parent = self()
    t0 = System.monotonic_time()
    stop = t0 + System.convert_time_unit(round(seconds * 1_000_000), :microsecond, :native)

    pids =
      for k <- 1..clients do
        spawn_link(fn ->
          :rand.seed(:exsss, {k, clients, System.unique_integer([:positive])})
          send(parent, {:done, self(), loop(pool, users, stop, [])})
        end)
      end

    lats = for pid <- pids, do: receive(do: ({:done, ^pid, l} -> l))
    wall = System.convert_time_unit(System.monotonic_time() - t0, :native, :microsecond) / 1.0e6
    all = Enum.concat(lats)
    {length(all), all, wall}
  end

  defp loop(pool, users, stop, acc) do
    t = System.monotonic_time()

    if t >= stop do
      acc
    else
      {:ok, [_ | _]} = UroRecommender.recommend(@model, :rand.uniform(users), @n, pool: pool)
      us = System.convert_time_unit(System.monotonic_time() - t, :native, :microsecond)
      loop(pool, users, stop, [us | acc])
    end
  end

  # Which CPU each serving port last ran on, and the CPUs it may run on.
  defp placement(pool) do
    {:ok, %{serving: slots}} = UroRecommender.status(pool: pool)

    for %{os_pid: os} <- slots do
      cpu =
        case File.read("/proc/#{os}/stat") do
          {:ok, stat} ->
            stat |> String.split(") ") |> List.last() |> String.split() |> Enum.at(36)

          _ ->
            "?"
        end

      allowed =
        case File.read("/proc/#{os}/status") do
          {:ok, s} -> Regex.run(~r/Cpus_allowed_list:\s*(\S+)/, s) |> List.last()
          _ -> "?"
        end

      "#{os} on cpu #{cpu} (may use #{allowed})"
    end
  end

  # ---- reporting -----------------------------------------------------------------------------

  defp report(results, pools, clients) do
    IO.puts("\ncalls/s and latency (µs) per pool size and clients; ratio = on / off")

    IO.puts(
      :io_lib.format("~-5s ~7s | ~9s ~7s ~7s | ~9s ~7s ~7s | ~6s ~6s ~6s", [
        "pool",
        "clients",
        "off c/s",
        "p50",
        "p99",
        "on c/s",
        "p50",
        "p99",
        "c/s x",
        "p50 x",
        "p99 x"
      ])
    )

    IO.puts(String.duplicate("-", 96))

    for size <- pools, c <- clients do
      off = results[{size, :off, c}]
      on = results[{size, :on, c}]

      IO.puts(
        :io_lib.format("~-5b ~7b | ~9b ~7b ~7b | ~9b ~7b ~7b | ~6.2f ~6.2f ~6.2f", [
          size,
          c,
          round(off.rate),
          off.p50,
          off.p99,
          round(on.rate),
          on.p50,
          on.p99,
          on.rate / off.rate,
          on.p50 / off.p50,
          on.p99 / off.p99
        ])
      )
    end

    least = Enum.min(pools)
    IO.puts("\nagainst #{least} port(s) without batching (pool #{least}, off), calls/s ratio:")

    for c <- clients do
      base = results[{least, :off, c}].rate

      row =
        for size <- pools,
            mode <- [:off, :on],
            do: "#{size}#{mode}=#{Float.round(results[{size, mode, c}].rate / base, 2)}"

      IO.puts("  #{c} clients: #{Enum.join(row, "  ")}")
    end
  end

  defp targets(results, size, clients) do
    IO.puts("\ntargets (pool of #{size} port(s), batching on against off, same run)")
    at = fn c, mode -> results[{size, mode, c}] end
    big = Enum.max(clients)

    checks =
      [
        check(
          "#{big} clients: throughput >= 1.8x",
          at.(big, :on).rate / at.(big, :off).rate,
          :ge,
          1.8
        ),
        check("#{big} clients: p99 <= 0.5x", at.(big, :on).p99 / at.(big, :off).p99, :le, 0.5)
      ] ++
        for c <- clients, c < big do
          check(
            "#{c} clients: p50 within 10 % (<= 1.10x)",
            at.(c, :on).p50 / at.(c, :off).p50,
            :le,
            1.10
          )
        end

    Enum.all?(checks)
  end

  defp check(text, ratio, op, limit) do
    ok = if op == :ge, do: ratio >= limit, else: ratio <= limit

    IO.puts(
      "  #{if ok, do: "PASS", else: "FAIL"} #{String.pad_trailing(text, 44)} measured #{Float.round(ratio, 2)}x"
    )

    ok
  end

  defp plot(results, pools, clients, dir) do
    csv = Path.join(dir, "throughput.csv")

    lines =
      for {{size, mode, c}, r} <- Enum.sort(results),
          do: "#{size},#{mode},#{c},#{r.rate},#{r.p50},#{r.p99}\n"

    File.write!(csv, ["pool_size,batching,clients,calls_per_s,p50_us,p99_us\n" | lines])
    out = System.get_env("BENCH_PLOT") || Path.expand("throughput.png", __DIR__)
    python = System.get_env("BENCH_PYTHON")
    env = [{"PYTHONPATH", System.get_env("BENCH_PLOT_PYTHONPATH", "")}, {"MPLBACKEND", "Agg"}]
    script = Path.expand("throughput_plot.py", __DIR__)

    case System.cmd(python, [script, csv, out], env: env, stderr_to_stdout: true) do
      {_, 0} ->
        IO.puts("\nplot: #{out} (#{length(pools)} pool sizes x #{length(clients)} client counts)")

      {text, _} ->
        IO.puts("\nplot failed: #{text}")
    end
  end

  # ---- small things --------------------------------------------------------------------------

  defp pct(sorted, p) do
    n = tuple_size(sorted)
    elem(sorted, max(0, min(n - 1, ceil(p / 100 * n) - 1)))
  end

  defp port_path,
    do: System.get_env("URO_REC_PORT") || Path.expand("../priv/uro_recommender", __DIR__)

  defp uptime, do: String.trim(elem(System.cmd("uptime", []), 0))
  defp cores, do: String.trim(elem(System.cmd("nproc", []), 0))
  defp env_int(name, default), do: String.to_integer(System.get_env(name, "#{default}"))

  defp env_num(name, default) do
    case Float.parse(System.get_env(name, "#{default}")) do
      {v, _} -> v
      :error -> default
    end
  end

  defp env_list(name, default),
    do:
      System.get_env(name, default)
      |> String.split(",", trim: true)
      |> Enum.map(&String.to_integer/1)
end

Bench.Throughput.main()
