defmodule UroRecommender.Port do
  @moduledoc ~S"""
  A GenServer that owns one `uro_recommender` OS process (an Erlang port).

  ## Calls

  Every call gets the next integer as its `Ref` and is sent as
  `{call, Ref, Command, #{timeout_ms => T}}`. The port answers each call exactly
  once, in order, with `{reply, Ref, Reply}`; the caller gets `Reply`
  (`{:ok, value}` or `{:error, {kind, detail}}`).

  ## Timeouts

  A call's timeout (option `:timeout`, default from the config) is sent to the
  port as `timeout_ms`: the port interrupts the call and replies
  `{:error, {:timeout, detail}}`, and stays up. If no reply has come `:grace` ms
  (default 2 s) after the timeout, the port is presumed stuck: the caller gets
  `{:error, :timeout}` and the OS process is killed with `kill -9`, which ends
  this server like any port exit (below).

  ## Port exit

  When the OS process exits (crash, `kill`, OOM), every caller still waiting gets
  `{:error, {:port_exited, status}}` at once and the server stops with reason
  `{:port_exited, status}`, so its supervisor starts a new one. The models the
  old process had loaded (from `train` and `load` replies: name and version) are
  kept in a store that outlives the server (see `:store`); the new server sends
  `{load, Name, #{version => V}}` for each before any other call. The port
  serves calls strictly in order, so a call made after the restart sees them
  loaded.

  ## Frames besides replies

    * `{log, Level, Message}` goes to `Logger` at that level, with metadata
      `port: os_pid` and `uro_recommender: id`.
    * `{event, Ref, Map}` (training progress) is sent to the caller's `:events`
      process as `{:uro_recommender_event, ref, map}` when the call asked for it,
      and to `:telemetry.execute([:uro_recommender, :event], %{}, map)` when
      telemetry is loaded.

  ## Options (`start_link/1`)

    * `:port_path` (required), `:model_dir`, `:max_frame`, `:database_url`,
      `:env` (extra `[{name, value}]` environment), `:args` (extra arguments)
    * `:timeout` default per-call timeout (ms), `:grace` (ms)
    * `:send_timeout_ms` (default `true`): put `timeout_ms` in the call options
    * `:name` to register the server; `:id` a term naming this port in logs
      and in the store (default: `:name`, else the pid)
    * `:store` where the loaded models are kept across restarts: an ETS table
      (public, set) or `:persistent_term`; default `:persistent_term` when
      `:name` is given, none otherwise
    * `:store_key` the key in the store (default `:id`); ports that serve the
      same models share one key
    * `:busy` `{atomics_ref, index}`: a counter kept equal to the number of
      calls in flight (used by `UroRecommender.Pool` for least-busy routing)
    * `:record` a file that every call and reply is appended to
      (`UroRecommender.Recorder`)
  """
  use GenServer
  require Logger

  alias UroRecommender.Recorder

  @typedoc "A running port server."
  @type server :: GenServer.server()

  @typedoc "What a call returns."
  @type reply :: {:ok, term()} | {:error, term()}

  @typedoc "Options of one call."
  @type call_opt :: {:timeout, non_neg_integer() | :infinity} | {:events, pid()}

  @log_levels [:emergency, :alert, :critical, :error, :warning, :notice, :info, :debug]

  defmodule Call do
    @moduledoc false
    defstruct [:from, :command, :call_opts, :timer, :events, :started, :kind]
  end

  # ---- API ------------------------------------------------------------------------------------

  @doc "Starts the server and its OS process. See the module doc for options."
  @spec start_link(keyword()) :: GenServer.on_start()
  def start_link(opts) do
    case Keyword.fetch(opts, :name) do
      {:ok, name} -> GenServer.start_link(__MODULE__, opts, name: name)
      :error -> GenServer.start_link(__MODULE__, opts)
    end
  end

  @doc false
  def child_spec(opts) do
    %{
      id: Keyword.get(opts, :id, __MODULE__),
      start: {__MODULE__, :start_link, [opts]},
      # stop: close stdin, let the current call finish for up to 5 s, then kill.
      shutdown: 10_000
    }
  end

  @doc """
  Sends `command` and waits for its reply.

  Options: `:timeout` (ms or `:infinity`, default the server's), `:events` (a pid
  that receives `{:uro_recommender_event, ref, map}` for this call's events).
  """
  @spec call(server(), term(), [call_opt()]) :: reply()
  def call(server, command, opts \\ []) do
    timeout = Keyword.get(opts, :timeout)
    # The server always answers by timeout + grace; this bound only guards against
    # a server that is itself stuck.
    wait =
      case timeout do
        t when is_integer(t) -> t + 30_000
        _ -> :infinity
      end

    GenServer.call(server, {:call, command, opts}, wait)
  catch
    :exit, {reason, {GenServer, :call, _}} -> {:error, {:port_down, reason}}
  end

  @doc "The OS pid of the port process."
  @spec os_pid(server()) :: non_neg_integer() | nil
  def os_pid(server), do: GenServer.call(server, :os_pid)

  @doc "The `{name, version}` pairs this server has loaded (and will reload on restart)."
  @spec loaded(server()) :: [{String.t(), pos_integer()}]
  def loaded(server), do: GenServer.call(server, :loaded)

  @doc "Number of calls in flight."
  @spec in_flight(server()) :: non_neg_integer()
  def in_flight(server), do: GenServer.call(server, :in_flight)

  # ---- the store of loaded models ----------------------------------------------------------
  #
  # An ETS table holds one row per model, {{:loaded, key, name}, version}, so that ports
  # sharing a key (the serving ports of a pool) each add and remove their own models
  # without overwriting the others'. :persistent_term holds one map per key.

  @doc false
  @spec store_get(term(), term()) :: %{String.t() => pos_integer()}
  def store_get(nil, _key), do: %{}
  def store_get(:persistent_term, key), do: :persistent_term.get({__MODULE__, key}, %{})

  def store_get(tab, key) do
    tab
    |> :ets.match_object({{:loaded, key, :_}, :_})
    |> Map.new(fn {{:loaded, _, name}, version} -> {name, version} end)
  end

  @doc false
  @spec store_put(term(), term(), String.t(), pos_integer() | nil) :: :ok
  def store_put(nil, _key, _name, _version), do: :ok

  def store_put(:persistent_term, key, name, version) do
    old = store_get(:persistent_term, key)
    new = if version, do: Map.put(old, name, version), else: Map.delete(old, name)
    if new != old, do: :persistent_term.put({__MODULE__, key}, new)
    :ok
  end

  def store_put(tab, key, name, nil) do
    :ets.delete(tab, {:loaded, key, name})
    :ok
  end

  def store_put(tab, key, name, version) do
    :ets.insert(tab, {{:loaded, key, name}, version})
    :ok
  end

  # ---- GenServer ------------------------------------------------------------------------------

  @impl true
  def init(opts) do
    Process.flag(:trap_exit, true)
    path = Keyword.fetch!(opts, :port_path) || raise ArgumentError, "no :port_path"
    path = to_string(path)

    unless File.regular?(path) do
      raise ArgumentError, "uro_recommender port executable not found: #{path}"
    end

    port =
      Port.open({:spawn_executable, path}, [
        :binary,
        {:packet, 4},
        :exit_status,
        :use_stdio,
        args: port_args(opts),
        env: port_env(opts)
      ])

    {:os_pid, os_pid} = Port.info(port, :os_pid)
    id = Keyword.get_lazy(opts, :id, fn -> Keyword.get(opts, :name, self()) end)

    store =
      Keyword.get_lazy(opts, :store, fn ->
        if Keyword.has_key?(opts, :name), do: :persistent_term, else: nil
      end)

    store_key = Keyword.get(opts, :store_key, id)
    busy = Keyword.get(opts, :busy)
    set_busy(busy, 0)

    state = %{
      port: port,
      os_pid: os_pid,
      id: id,
      next_ref: 1,
      calls: %{},
      store: store,
      store_key: store_key,
      models: store_get(store, store_key),
      busy: busy,
      timeout: Keyword.get(opts, :timeout, 30_000),
      grace: Keyword.get(opts, :grace, 2_000),
      send_timeout_ms: Keyword.get(opts, :send_timeout_ms, true),
      record: Recorder.open(Keyword.get(opts, :record)),
      killed: false
    }

    Logger.metadata(port: os_pid, uro_recommender: id)
    {:ok, state, {:continue, :reload}}
  end

  @impl true
  def handle_continue(:reload, state) do
    state =
      state.models
      |> Enum.sort()
      |> Enum.reduce(state, fn {name, version}, acc ->
        Logger.info("uro_recommender: reloading #{name} version #{version}", port: acc.os_pid)
        {_ref, acc} = send_call(acc, {:load, name, %{version: version}}, {:reload, name}, [])
        acc
      end)

    {:noreply, state}
  end

  @impl true
  def handle_call({:call, command, opts}, from, state) do
    {_ref, state} = send_call(state, command, from, opts)
    {:noreply, state}
  end

  def handle_call(:os_pid, _from, state), do: {:reply, state.os_pid, state}
  def handle_call(:loaded, _from, state), do: {:reply, Enum.sort(state.models), state}
  def handle_call(:in_flight, _from, state), do: {:reply, map_size(state.calls), state}

  @impl true
  def handle_info({port, {:data, data}}, %{port: port} = state) do
    {:noreply, handle_frame(:erlang.binary_to_term(data), state)}
  end

  def handle_info({port, {:exit_status, status}}, %{port: port} = state) do
    Logger.error("uro_recommender: port process #{state.os_pid} exited with status #{status}",
      port: state.os_pid
    )

    state = fail_all(state, {:port_exited, status}, "port exited")
    {:stop, {:port_exited, status}, %{state | port: nil}}
  end

  def handle_info({:deadline, ref}, state) do
    case Map.pop(state.calls, ref) do
      {nil, _} ->
        {:noreply, state}

      {call, calls} ->
        Logger.error(
          "uro_recommender: call #{ref} #{short(call.command)} got no reply #{state.grace} ms " <>
            "after its timeout; killing port process #{state.os_pid}",
          port: state.os_pid
        )

        answer(call, {:error, :timeout})
        Recorder.comment(state.record, call.command, "timeout")
        state = %{state | calls: calls}
        set_busy(state.busy, map_size(calls))
        {:noreply, kill(state)}
    end
  end

  def handle_info({:EXIT, port, reason}, %{port: port} = state) do
    # The port closed without an exit status (it should not happen with :exit_status).
    state = fail_all(state, {:port_exited, reason}, "port closed")
    {:stop, {:port_exited, reason}, %{state | port: nil}}
  end

  def handle_info({:EXIT, _pid, reason}, state) do
    # Our parent (the supervisor) is going away.
    {:stop, reason, state}
  end

  def handle_info(_other, state), do: {:noreply, state}

  @impl true
  def terminate(_reason, state) do
    state = fail_all(state, :shutdown, "shutdown")
    Recorder.close(state.record)

    if state.port do
      # Closing stdin makes the port exit (status 0) once its current call has
      # replied; a call that never finishes is cut short by kill -9.
      os_pid = state.os_pid

      try do
        Port.close(state.port)
      rescue
        ArgumentError -> :ok
      end

      spawn(fn ->
        Process.sleep(5_000)
        if File.exists?("/proc/#{os_pid}"), do: kill_os_pid(os_pid)
      end)
    end

    :ok
  end

  # ---- internals ------------------------------------------------------------------------------

  defp port_args(opts) do
    dir = if d = opts[:model_dir], do: ["--model-dir", to_string(d)], else: []
    frame = if f = opts[:max_frame], do: ["--max-frame", Integer.to_string(f)], else: []
    dir ++ frame ++ Enum.map(Keyword.get(opts, :args, []), &to_string/1)
  end

  defp port_env(opts) do
    # DATABASE_URL rather than --database-url: the environment of a process is not shown
    # by ps. Without :database_url the port inherits the host's DATABASE_URL, if any.
    db = if u = opts[:database_url], do: [{"DATABASE_URL", u}], else: []

    for {k, v} <- db ++ Keyword.get(opts, :env, []) do
      {String.to_charlist(to_string(k)), if(v, do: String.to_charlist(to_string(v)), else: false)}
    end
  end

  defp send_call(state, command, from, opts) do
    ref = state.next_ref
    timeout = Keyword.get(opts, :timeout) || state.timeout

    call_opts =
      if state.send_timeout_ms and is_integer(timeout), do: %{timeout_ms: timeout}, else: %{}

    Port.command(state.port, :erlang.term_to_binary({:call, ref, command, call_opts}))

    timer =
      if is_integer(timeout),
        do: Process.send_after(self(), {:deadline, ref}, timeout + state.grace)

    call = %Call{
      from: from,
      command: command,
      call_opts: call_opts,
      timer: timer,
      events: Keyword.get(opts, :events),
      started: System.monotonic_time()
    }

    calls = Map.put(state.calls, ref, call)
    set_busy(state.busy, map_size(calls))
    {ref, %{state | next_ref: ref + 1, calls: calls}}
  end

  # A frame the port could not read at all (too_large, bad_frame) is answered with Ref
  # undefined. The port answers frames one at a time, in the order they arrive, so that
  # reply belongs to the oldest call still waiting.
  defp handle_frame({:reply, :undefined, reply}, state) when map_size(state.calls) > 0 do
    handle_frame({:reply, Enum.min(Map.keys(state.calls)), reply}, state)
  end

  defp handle_frame({:reply, ref, reply}, state) do
    case Map.pop(state.calls, ref) do
      {nil, _} ->
        # A reply to a call already answered with a client-side timeout, or a
        # protocol error with no Ref (bad_frame, too_large).
        Logger.warning(
          "uro_recommender: reply to no waiting call #{inspect(ref)}: #{short(reply)}",
          port: state.os_pid
        )

        state

      {call, calls} ->
        if call.timer, do: Process.cancel_timer(call.timer)
        Recorder.record(state.record, call.command, call.call_opts, reply)
        state = %{state | calls: calls}
        set_busy(state.busy, map_size(calls))
        state = track_models(state, call, reply)
        answer(call, reply)
        state
    end
  end

  defp handle_frame({:log, level, message}, state) do
    level = if level in @log_levels, do: level, else: :info
    Logger.log(level, message, port: state.os_pid, uro_recommender: state.id)
    state
  end

  defp handle_frame({:event, ref, event}, state) do
    case state.calls do
      %{^ref => %Call{events: pid}} when is_pid(pid) ->
        send(pid, {:uro_recommender_event, ref, event})

      _ ->
        :ok
    end

    if Code.ensure_loaded?(:telemetry) do
      # apply/3: this library compiles without telemetry.
      apply(:telemetry, :execute, [
        [:uro_recommender, :event],
        %{},
        %{event: event, ref: ref, port: state.os_pid, id: state.id}
      ])
    end

    state
  end

  defp handle_frame(other, state) do
    Logger.warning("uro_recommender: unexpected frame #{short(other)}", port: state.os_pid)
    state
  end

  defp answer(%Call{from: {:reload, name}}, reply) do
    case reply do
      {:ok, _} -> :ok
      error -> Logger.error("uro_recommender: reloading #{name} failed: #{short(error)}")
    end
  end

  defp answer(%Call{from: from}, reply), do: GenServer.reply(from, reply)

  # The models this process has loaded: train (when it saved a version) and load
  # add or replace, unload removes. A failed reload forgets the model on this port only:
  # the store is shared by the pool's ports, which may still serve it.
  defp track_models(state, %Call{command: command, from: from}, reply) do
    change =
      case {command, reply} do
        {{:train, _, _}, {:ok, %{name: name, version: v}}} when is_integer(v) -> {name, v}
        {{:load, _, _}, {:ok, %{name: name, version: v}}} when is_integer(v) -> {name, v}
        {{:load, name, _}, {:error, _}} when elem(from, 0) == :reload -> {:forget, to_string(name)}
        {{:unload, name}, {:ok, _}} -> {to_string(name), nil}
        _ -> nil
      end

    case change do
      nil ->
        state

      {:forget, name} ->
        %{state | models: Map.delete(state.models, name)}

      {name, nil} ->
        store_put(state.store, state.store_key, name, nil)
        %{state | models: Map.delete(state.models, name)}

      {name, version} ->
        store_put(state.store, state.store_key, name, version)
        %{state | models: Map.put(state.models, name, version)}
    end
  end

  defp fail_all(state, reason, why) do
    for {_ref, call} <- Enum.sort(state.calls) do
      if call.timer, do: Process.cancel_timer(call.timer)
      Recorder.comment(state.record, call.command, why)
      answer(call, {:error, reason})
    end

    set_busy(state.busy, 0)
    %{state | calls: %{}}
  end

  defp kill(%{killed: true} = state), do: state

  defp kill(state) do
    kill_os_pid(state.os_pid)
    %{state | killed: true}
  end

  defp kill_os_pid(os_pid) do
    System.cmd("kill", ["-9", Integer.to_string(os_pid)], stderr_to_stdout: true)
  end

  defp set_busy(nil, _n), do: :ok
  defp set_busy({ref, index}, n), do: :atomics.put(ref, index, n)

  defp short(term), do: inspect(term, limit: 10, printable_limit: 200)
end
