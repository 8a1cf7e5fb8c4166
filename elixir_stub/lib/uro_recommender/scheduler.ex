defmodule UroRecommender.Scheduler do
  @schema [
    name: {:atom, UroRecommender.Scheduler, "the Scheduler's registered name"},
    pool: {:atom, UroRecommender, "the pool it trains on and keeps serving"},
    interval: {:pos_integer, 86_400_000, "ms between two cycles across the whole cluster (24 h)"},
    check_every:
      {:pos_integer, 60_000, "ms between two checks, on each node, whether a cycle is due"},
    poll:
      {:pos_integer, 30_000, "ms between two reads of `uro_rec_served` (what every node serves)"},
    lease: {:string, "`\"uro_recommender.scheduler\"`", "the lease row's name"},
    lease_ttl:
      {:pos_integer, 120_000, "ms a lease lasts unless renewed (renewed every third of it)"},
    models: {:map, %{}, "overrides of `UroRecommender.Models`' configurations"},
    enabled:
      {:boolean, true, "run cycles on this node; `false`: only serve what the others publish"},
    timeout: {:timeout, nil, "ms per training-port call (default: the pool's `train_timeout`)"}
  ]

  @moduledoc """
  Retrains uro's models on a schedule, on one node of the cluster at a time, and keeps every
  node serving the published versions. A GenServer in the style of uro's
  `Uro.VSekai.ShardJanitor` (`Process.send_after/3` to itself), for hosts without Oban:

      children = [
        Uro.Repo,
        {UroRecommender, model_dir: "/var/lib/uro/models"},
        UroRecommender.Interactions,
        UroRecommender.Scheduler
      ]

  Every node runs one. Every `check_every` each asks the database for the scheduler's lease
  (`lease`, a row of `uro_rec_leases`: CockroachDB has no advisory locks), which is only
  granted when no node holds it and the last cycle ended at least `interval` ago; so one node
  runs the cycle, once per interval, whichever nodes are up. A cycle runs
  `UroRecommender.Pipeline.run/2` for each configured model in turn, in a process of its own,
  while the Scheduler renews the lease every third of `lease_ttl`; a node that dies mid-cycle
  lets the lease expire, and another runs the cycle at its next check. At the end the lease is
  released with the time, which starts the next interval.

  On every node, every `poll` and at start, the Scheduler reads which versions are served and
  loads those its pool does not serve yet; the publishing node also tells the others at once
  when they are connected (`UroRecommender.Rollout`, which gives the bound).

  ## Options

  #{UroRecommender.Config.table(@schema)}

  Also from `config :uro_recommender, UroRecommender.Scheduler, [...]`; the child spec's
  options win. Unknown keys raise `ArgumentError`.
  """
  use GenServer
  require Logger

  alias UroRecommender.{Config, Models, Pipeline, Rollout}

  @doc "Child spec: `{UroRecommender.Scheduler, opts}`; raises on invalid options."
  def child_spec(opts) do
    opts = Config.resolve(__MODULE__, opts, @schema)
    %{id: opts[:name], start: {__MODULE__, :start_link, [opts]}}
  end

  @doc "Starts the Scheduler (see the options above)."
  def start_link(opts) do
    opts = Config.resolve(__MODULE__, opts, @schema)
    Models.all(opts[:models])
    GenServer.start_link(__MODULE__, opts, name: opts[:name])
  end

  @doc """
  Runs a cycle now, on this node, if it can take the lease (whatever the interval), and
  returns its runs: `{:ok, [run]}` (see `UroRecommender.Pipeline`), `{:error, :busy}` while a
  cycle runs here, `{:error, {:held_by, holder}}` while another node runs one. Waits at most
  `timeout` (default 6 hours: a cycle trains every model in turn, each bounded by the pool's
  `train_timeout`); the cycle goes on if the caller stops waiting.
  """
  @spec run_now(GenServer.server(), timeout()) :: {:ok, [map()]} | {:error, term()}
  def run_now(server \\ __MODULE__, timeout \\ :timer.hours(6)),
    do: GenServer.call(server, :run_now, timeout)

  @doc "Reads `uro_rec_served` now and loads what this node does not serve yet."
  @spec sync(GenServer.server()) :: {:ok, [{String.t(), pos_integer()}]} | {:error, term()}
  def sync(server \\ __MODULE__), do: GenServer.call(server, :sync, 120_000)

  @doc "The model configurations this Scheduler runs."
  @spec models(GenServer.server()) :: [Models.t()]
  def models(server \\ __MODULE__), do: GenServer.call(server, :models)

  @impl true
  def init(opts) do
    state = %{
      opts: Map.new(opts),
      models: Models.all(opts[:models]),
      holder: "#{node()}/#{System.pid()}/#{System.unique_integer([:positive])}",
      cycle: nil,
      waiting: []
    }

    Rollout.join(state.opts.pool)
    send(self(), :poll)
    if state.opts.enabled, do: Process.send_after(self(), :check, state.opts.check_every)
    {:ok, state}
  end

  @impl true
  def handle_call(:run_now, _from, %{cycle: {_, _}} = state), do: {:reply, {:error, :busy}, state}

  def handle_call(:run_now, from, state) do
    case lease(state, every_ms: 0) do
      {:ok, %{held: true}} -> {:noreply, start_cycle(%{state | waiting: [from]})}
      {:ok, %{holder: holder}} -> {:reply, {:error, {:held_by, holder}}, state}
      error -> {:reply, error, state}
    end
  end

  def handle_call(:sync, _from, state), do: {:reply, read_served(state), state}
  def handle_call(:models, _from, state), do: {:reply, state.models, state}

  @impl true
  def handle_info(:check, state) do
    Process.send_after(self(), :check, state.opts.check_every)

    case state.cycle == nil && lease(state, every_ms: state.opts.interval) do
      {:ok, %{held: true}} -> {:noreply, start_cycle(state)}
      _not_due_or_busy -> {:noreply, state}
    end
  end

  def handle_info(:poll, state) do
    Process.send_after(self(), :poll, state.opts.poll)
    read_served(state)
    {:noreply, state}
  end

  def handle_info({:uro_recommender_served, name, version}, state) do
    with %{} = config <- Enum.find(state.models, &(&1.name == name)),
         do: Rollout.ensure(state.opts.pool, config, version)

    {:noreply, state}
  end

  def handle_info({:renew, ref}, %{cycle: {_pid, ref}} = state) do
    case lease(state, []) do
      {:ok, %{held: true}} ->
        :ok

      other ->
        Logger.error(
          "uro_recommender: the scheduler's lease could not be renewed: #{inspect(other)}"
        )
    end

    Process.send_after(self(), {:renew, ref}, div(state.opts.lease_ttl, 3))
    {:noreply, state}
  end

  def handle_info({:DOWN, ref, :process, _pid, reason}, %{cycle: {_, ref}} = state) do
    runs =
      case reason do
        {:cycle, runs} -> {:ok, runs}
        other -> {:error, {:cycle_crashed, other}}
      end

    lease(state, release: true)
    Enum.each(state.waiting, &GenServer.reply(&1, runs))
    {:noreply, %{state | cycle: nil, waiting: []}}
  end

  def handle_info(_other, state), do: {:noreply, state}

  # ---- the cycle ------------------------------------------------------------------------------

  # Runs every model in a process of its own: the Scheduler keeps renewing the lease, polling
  # and answering while a training takes its hours.
  defp start_cycle(state) do
    %{pool: pool, timeout: timeout} = state.opts
    models = state.models
    still_held = fn -> match?({:ok, %{held: true}}, lease(state, [])) end
    run_opts = [pool: pool, lease: still_held] ++ if(timeout, do: [timeout: timeout], else: [])

    {pid, ref} =
      spawn_monitor(fn ->
        exit({:cycle, for(config <- models, do: elem(Pipeline.run(config, run_opts), 1))})
      end)

    Process.send_after(self(), {:renew, ref}, div(state.opts.lease_ttl, 3))
    %{state | cycle: {pid, ref}}
  end

  defp lease(state, opts) do
    spec = Map.new([{:ttl_ms, state.opts.lease_ttl} | opts])
    name = state.opts.lease || "uro_recommender.scheduler"
    UroRecommender.Pool.call(state.opts.pool, {:lease, name, state.holder, spec}, timeout: 15_000)
  end

  defp read_served(state) do
    case Rollout.sync(state.opts.pool, state.models, timeout: 120_000) do
      {:ok, loaded} ->
        {:ok, loaded}

      error ->
        Logger.warning("uro_recommender: could not read the served versions: #{inspect(error)}")
        error
    end
  end
end
