defmodule UroRecommender.Port do
  @moduledoc ~S"""
  A GenServer that keeps one `uro_recommender` OS process (an Erlang port) serving: it starts
  it, proves it ready, sends it calls, and starts it again when it dies. It never stops because
  its port failed, so a broken executable cannot use up the restart intensity of the
  supervisor above it (and, through it, of the host).

  ## States

    * `:starting`: the OS process was just started and has not answered its first call yet.
      Calls wait for it (at most `:ready_timeout`).
    * `:ready`: calls go to the port.
    * `:degraded`: the last start failed, or the port died soon after starting. Calls answer
      `{:error, :unavailable}` at once. The next attempt comes after a backoff
      (`UroRecommender.Backoff`: 1 s doubling to 60 s by default); the attempt itself stays
      `:degraded` until the port is ready.

  A start fails when the executable is missing or not executable, exits before it is ready,
  gives no reply to its first call within `:ready_timeout` (it is killed), answers it with
  `{:error, _}` (Python did not start), or speaks another protocol version.
  `status/1` shows the state, the failures in a row and the last failure.

  ## The handshake

  The first call to every new OS process is `info` (with the Ref `handshake`), before any
  other. The port answers it
  once Python is up, with `protocol` in the map; it must equal
  `UroRecommender.PortProcess.protocol/0`. A port whose Python did not start answers
  `{:error, {:internal, "python did not start: ..."}}`. Then the models the previous process had
  loaded are loaded again (below), then the calls that waited are sent.

  ## Calls

  Every call gets the next integer as its `Ref` and is sent as
  `{call, Ref, Command, #{timeout_ms => T}}`. The port answers each call exactly once, in
  order, with `{reply, Ref, Reply}`; the caller gets `Reply` (`{:ok, value}` or
  `{:error, {kind, detail}}`). Each call is a `:telemetry` span (`UroRecommender.Telemetry`).

  With `:batch_size` above 1, a `recommend` that arrives while the port is answering at least 12 (`:batch_from`)
  callers is held, and the held calls of one model, `N` and options go out as one
  `recommend_many` when nothing is in flight any more, or one frame is and half a batch is held (or at once when `:batch_size` of them are held; fewer than 4 go as
  separate `recommend` frames); each caller gets its own list (`UroRecommender.Batch`). Any other call first sends what is held, so frames keep
  the order the calls arrived in. Held calls count in `in_flight`; when the OS process exits
  they get the same `{:error, {:port_exited, status}}` as the calls sent.

  ## Timeouts

  A call's timeout (option `:timeout`, default from the config) is sent to the port as
  `timeout_ms`: the port interrupts the call and replies `{:error, {:timeout, detail}}`, and
  stays up. If no reply has come `:grace` ms (default 2 s) after the timeout, the port is
  presumed stuck: the caller gets `{:error, :timeout}` and the OS process is killed with
  `kill -9`, and started again at once.

  ## Port exit

  When the OS process exits (crash, `kill`, OOM), every caller still waiting gets
  `{:error, {:port_exited, status}}` at once and a new OS process is started: at once when
  the old one had been ready for 5 seconds or more (or was killed by this server), else after
  the backoff. The models the old process had loaded (from `train` and `load` replies: name
  and version) are kept in a `UroRecommender.ModelStore` (option `:store`); the new process
  gets `{load, Name, #{version => V}}` for each before any other call, so a call made after
  the restart sees them loaded.

  ## Frames besides replies

    * `{log, Level, Message}` goes to `Logger` at that level, with metadata
      `port: os_pid` and `uro_recommender: id`.
    * `{event, Ref, Map}` (training progress) is sent to the caller's `:events` process as
      `{:uro_recommender_event, ref, map}` when the call asked for it, and to `:telemetry`
      (`UroRecommender.Telemetry`).

  ## Options (`start_link/1`)

    * `:port_path`, `:model_dir`, `:python_dir`, `:venv`, `:max_frame`, `:data_dir`,
      `:model_key_file`, `:allow_unsigned_models`, `:database_url`, `:env`, `:args`,
      `:cpu_affinity`: how to start the OS process (`UroRecommender.PortProcess.open/1`)
    * `:timeout` default per-call timeout (ms), `:grace` (ms), `:ready_timeout` (ms, default
      30 s), `:backoff` (`{first_ms, max_ms}`, default `{1_000, 60_000}`)
    * `:send_timeout_ms` (default `true`): put `timeout_ms` in the call options
    * `:batch_size` (default 1, off; the pool gives 32): `recommend` calls that arrive while
      the port is busy are held and sent as one `recommend_many` of at most this many
      callers, each answered with its own list (`UroRecommender.Batch`)
    * `:batch_from` (default 12): calls are held only while the port answers at least this
      many callers
    * `:name` to register the server; `:id` a term naming this port in logs, events and the
      store (default: `:name`, else the pid)
    * `:store` and `:store_key`: where the loaded models are kept across restarts
      (`UroRecommender.ModelStore`); default `:persistent_term` under `:id` when `:name` is
      given, none otherwise
    * `:busy` `{atomics, index}`: kept equal to the number of calls in flight; `:phase`
      `{atomics, index}`: kept equal to 2 (ready), 1 (starting) or 0 (degraded). Both are
      how `UroRecommender.Pool` routes without asking the server.
    * `:record` a file that every call and reply is appended to (`UroRecommender.Recorder`)
  """
  use GenServer
  require Logger

  alias UroRecommender.{Backoff, Batch, ModelStore, PortProcess, Recorder, Telemetry}

  @typedoc "A running port server."
  @type server :: GenServer.server()

  @typedoc "What a call returns."
  @type reply :: {:ok, term()} | {:error, term()}

  @typedoc "Options of one call."
  @type call_opt :: {:timeout, non_neg_integer() | :infinity} | {:events, pid()}

  @typedoc "A slot's state, see the module doc."
  @type phase :: :starting | :ready | :degraded

  @log_levels [:emergency, :alert, :critical, :error, :warning, :notice, :info, :debug]
  @phase_codes %{degraded: 0, starting: 1, ready: 2}
  # A port that served this long before dying is restarted at once: a crash, not a crash loop.
  @stable_ms 5_000
  @spawn_keys [
    :port_path,
    :model_dir,
    :python_dir,
    :venv,
    :max_frame,
    :data_dir,
    :model_key_file,
    :allow_unsigned_models,
    :database_url,
    :env,
    :args,
    :cpu_affinity
  ]

  defmodule Call do
    @moduledoc false
    defstruct [:from, :command, :call_opts, :timer, :events, :accepted, :sent]
  end

  # ---- API ------------------------------------------------------------------------------------

  @doc "Starts the server, which starts its OS process. See the module doc for options."
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

  Options: `:timeout` (ms or `:infinity`, default the server's), `:events` (a pid that
  receives `{:uro_recommender_event, ref, map}` for this call's events).
  """
  @spec call(server(), term(), [call_opt()]) :: reply()
  def call(server, command, opts \\ []) do
    span = Telemetry.start(slot_of(server), command)
    {reply, answered} = do_call(server, command, opts)
    Telemetry.stop(span, reply, answered)
    reply
  end

  defp do_call(server, command, opts) do
    # The server always answers by timeout + grace (or ready_timeout + timeout + grace for a
    # call that waits for a starting port); this bound only guards against a stuck server.
    wait =
      case Keyword.get(opts, :timeout) do
        t when is_integer(t) -> t + 90_000
        _ -> :infinity
      end

    GenServer.call(server, {:call, command, opts, System.monotonic_time()}, wait)
  catch
    :exit, {reason, {GenServer, :call, _}} -> {{:error, {:port_down, reason}}, nil}
  end

  defp slot_of(server) when is_atom(server),
    do: :persistent_term.get({__MODULE__, server}, server)

  defp slot_of(server), do: server

  @doc "The OS pid of the port process (`nil` while none runs)."
  @spec os_pid(server()) :: non_neg_integer() | nil
  def os_pid(server), do: GenServer.call(server, :os_pid)

  @doc "The `{name, version}` pairs this server has loaded (and will reload on restart)."
  @spec loaded(server()) :: [{String.t(), pos_integer()}]
  def loaded(server), do: GenServer.call(server, :loaded)

  @doc "Number of calls in flight (sent, or waiting for a starting port)."
  @spec in_flight(server()) :: non_neg_integer()
  def in_flight(server), do: GenServer.call(server, :in_flight)

  @doc """
  The slot's state: `%{id, state, os_pid, since, failures, last_failure, next_attempt_in_ms,
  in_flight}`. `state` is a `t:phase/0`, `since` when it entered it (`DateTime`), `failures`
  the failures in a row (reset once a port has served for 5 s), `last_failure` `nil` or
  `%{reason, message, at}`, `next_attempt_in_ms` `nil` unless an attempt is scheduled.
  """
  @spec status(server()) :: map()
  def status(server), do: GenServer.call(server, :status)

  # ---- GenServer: start, handshake, restart -----------------------------------------------

  @impl true
  def init(opts) do
    Process.flag(:trap_exit, true)
    id = Keyword.get_lazy(opts, :id, fn -> Keyword.get(opts, :name, self()) end)
    if name = opts[:name], do: :persistent_term.put({__MODULE__, name}, id)

    store =
      Keyword.get_lazy(opts, :store, fn ->
        if Keyword.has_key?(opts, :name), do: :persistent_term, else: nil
      end)

    store_key = Keyword.get(opts, :store_key, id)

    state = %{
      spawn: Keyword.take(opts, @spawn_keys),
      port: nil,
      os_pid: nil,
      id: id,
      phase: :starting,
      since: DateTime.utc_now(),
      next_ref: 1,
      calls: %{},
      waiting: :queue.new(),
      handshake: nil,
      failures: 0,
      last_failure: nil,
      retry_at: nil,
      ready_at: nil,
      last_reply_at: mono(),
      store: store,
      store_key: store_key,
      models: ModelStore.get(store, store_key),
      busy: Keyword.get(opts, :busy),
      phase_ref: Keyword.get(opts, :phase),
      timeout: Keyword.get(opts, :timeout, 30_000),
      grace: Keyword.get(opts, :grace, 2_000),
      ready_timeout: Keyword.get(opts, :ready_timeout, 30_000),
      backoff: Keyword.get(opts, :backoff, {1_000, 60_000}),
      send_timeout_ms: Keyword.get(opts, :send_timeout_ms, true),
      batch_size: Keyword.get(opts, :batch_size, 1),
      batch_from: Keyword.get(opts, :batch_from, 12),
      # recommend calls held for a batch, and the callers beyond the first of each batch frame
      # in flight (both counted in in_flight).
      held: Batch.new(),
      batched: 0,
      record: Recorder.open(Keyword.get(opts, :record)),
      killed: false
    }

    Logger.metadata(uro_recommender: id)
    {:ok, publish(state), {:continue, :spawn}}
  end

  @impl true
  def handle_continue(:spawn, state), do: {:noreply, spawn_port(state)}

  # Opens the OS process and sends the handshake; a failure to open is a failure like any.
  defp spawn_port(state) do
    case PortProcess.open(state.spawn) do
      {:ok, port, os_pid} ->
        Logger.metadata(port: os_pid)
        # Its own Ref, apart from the calls' integers (which keep counting across processes,
        # so that no timer of an old call can be mistaken for one of a new process).
        send_frame(port, :handshake, :info, %{})
        token = make_ref()
        timer = Process.send_after(self(), {:handshake_timeout, token}, state.ready_timeout)
        %{state | port: port, os_pid: os_pid, killed: false, handshake: {token, timer}}

      {:error, reason} ->
        fail(state, reason)
    end
  end

  defp handshake(state, reply) do
    {_ref, timer} = state.handshake
    Process.cancel_timer(timer)
    state = %{state | handshake: nil}
    protocol = PortProcess.protocol()

    case reply do
      {:ok, %{protocol: ^protocol}} -> ready(state)
      {:ok, %{protocol: other}} -> fail(state, {:protocol, other})
      {:error, {:internal, why}} when is_binary(why) -> fail(state, {:python_did_not_start, why})
      other -> fail(state, {:handshake, other})
    end
  end

  defp ready(state) do
    if state.failures > 0 do
      Logger.info(
        "uro_recommender #{inspect(state.id)}: port #{state.os_pid} ready after " <>
          "#{state.failures} failure(s)"
      )
    end

    Process.send_after(self(), {:stable, state.os_pid}, @stable_ms)

    state =
      %{state | phase: :ready, since: DateTime.utc_now(), ready_at: now(), retry_at: nil}
      |> publish()
      |> reload()

    {waiting, state} = {:queue.to_list(state.waiting), %{state | waiting: :queue.new()}}
    Enum.reduce(waiting, state, &submit(&2, &1))
  end

  # Loads again what the previous OS process had loaded, before any other call: as the store
  # has it (the pool's serving ports share theirs, so one that was down during a hot swap
  # gets the new version), else as this server remembers it.
  defp reload(state) do
    models = if state.store, do: ModelStore.get(state.store, state.store_key), else: state.models
    state = %{state | models: models}

    models
    |> Enum.sort()
    |> Enum.reduce(state, fn {name, version}, acc ->
      Logger.debug("uro_recommender: reloading #{name} version #{version}")

      {_ref, acc} =
        send_call(acc, {:load, name, %{version: version}}, {:reload, name}, [], mono())

      acc
    end)
  end

  # The slot cannot serve: kill what is left of the process, answer the calls that waited for
  # it, and try again after the backoff.
  defp fail(state, reason) do
    with {_ref, timer} <- state.handshake, do: Process.cancel_timer(timer)
    state = close_port(%{state | handshake: nil})
    failures = state.failures + 1
    delay = Backoff.delay(failures, state.backoff)
    message = PortProcess.describe(reason)

    Logger.error(
      "uro_recommender #{inspect(state.id)}: #{message} (#{failures} in a row; " <>
        "next attempt in #{delay} ms)"
    )

    Process.send_after(self(), :retry, delay)

    state =
      %{
        state
        | phase: :degraded,
          since: DateTime.utc_now(),
          failures: failures,
          last_failure: %{reason: reason, message: message, at: DateTime.utc_now()},
          retry_at: now() + delay,
          ready_at: nil
      }
      |> publish()

    answer_waiting(state, {:error, :unavailable})
  end

  defp exited(state, status) do
    Logger.error("uro_recommender: port process #{state.os_pid} exited with status #{status}")
    state = fail_all(state, {:port_exited, status}, "port exited")
    state = %{state | port: nil}

    healthy = state.killed or (state.ready_at != nil and now() - state.ready_at >= @stable_ms)

    if healthy do
      reason = {:port_exited, status}
      failure = %{reason: reason, message: PortProcess.describe(reason), at: DateTime.utc_now()}

      %{state | phase: :starting, since: DateTime.utc_now(), ready_at: nil, last_failure: failure}
      |> publish()
      |> spawn_port()
    else
      fail(state, {:port_exited, status})
    end
  end

  # ---- GenServer: calls -------------------------------------------------------------------

  @impl true
  def handle_call({:call, command, opts, accepted}, from, state) do
    case state.phase do
      :ready ->
        {:noreply, submit(state, {from, command, opts, accepted})}

      :starting ->
        waiting = :queue.in({from, command, opts, accepted}, state.waiting)
        {:noreply, set_busy(%{state | waiting: waiting})}

      :degraded ->
        {:reply, {{:error, :unavailable}, nil}, state}
    end
  end

  def handle_call(:os_pid, _from, state), do: {:reply, state.os_pid, state}
  def handle_call(:loaded, _from, state), do: {:reply, Enum.sort(state.models), state}
  def handle_call(:in_flight, _from, state), do: {:reply, in_flight_count(state), state}

  def handle_call(:status, _from, state) do
    next = if state.retry_at, do: max(0, state.retry_at - now())

    status = %{
      id: state.id,
      state: state.phase,
      os_pid: state.os_pid,
      since: state.since,
      failures: state.failures,
      last_failure: state.last_failure,
      next_attempt_in_ms: if(state.phase == :degraded and state.port == nil, do: next),
      in_flight: in_flight_count(state)
    }

    {:reply, status, state}
  end

  @impl true
  def handle_info({port, {:data, data}}, %{port: port} = state) do
    case decode(data) do
      {:ok, frame} -> {:noreply, handle_frame(frame, state)}
      # Not our port, or not speaking our framing: given up like any port that cannot serve.
      :error -> {:noreply, fail(state, {:bad_frame, byte_size(data)})}
    end
  end

  def handle_info({port, {:exit_status, status}}, %{port: port} = state) do
    case state.handshake do
      nil ->
        {:noreply, exited(state, status)}

      {_ref, timer} ->
        Process.cancel_timer(timer)
        {:noreply, fail(%{state | port: nil, handshake: nil}, {:exited, status})}
    end
  end

  def handle_info({:handshake_timeout, token}, %{handshake: {token, _}} = state) do
    {:noreply, fail(%{state | handshake: nil}, {:no_ready_reply, state.ready_timeout})}
  end

  def handle_info(:retry, %{phase: :degraded, port: nil} = state) do
    {:noreply, spawn_port(%{state | retry_at: nil})}
  end

  def handle_info({:stable, os_pid}, %{phase: :ready, os_pid: os_pid} = state) do
    {:noreply, %{state | failures: 0}}
  end

  def handle_info({:deadline, ref}, state) do
    case Map.pop(state.calls, ref) do
      {nil, _} ->
        {:noreply, state}

      {call, calls} ->
        Logger.error(
          "uro_recommender: call #{ref} #{short(call.command)} got no reply #{state.grace} ms " <>
            "after its timeout; killing port process #{state.os_pid}"
        )

        answer(call, {:error, :timeout}, nil)
        Recorder.comment(state.record, call.command, "timeout")
        state = set_busy(%{unbatch(state, call) | calls: calls})
        {:noreply, kill(state)}
    end
  end

  def handle_info({:EXIT, port, reason}, %{port: port} = state) do
    # The port closed without an exit status (it should not happen with :exit_status).
    handle_info({port, {:exit_status, reason}}, state)
  end

  def handle_info({:EXIT, pid, reason}, state) when is_pid(pid) do
    # Our parent (the supervisor) is going away.
    {:stop, reason, state}
  end

  # Messages of an OS process already given up, timers of a past state.
  def handle_info(_other, state), do: {:noreply, state}

  @impl true
  def terminate(_reason, state) do
    state = fail_all(state, :shutdown, "shutdown")
    answer_waiting(state, {:error, :shutdown})
    Recorder.close(state.record)

    if state.port do
      # Closing stdin makes the port exit (status 0) once its current call has replied; a
      # call that never finishes is cut short by kill -9.
      os_pid = state.os_pid

      try do
        Port.close(state.port)
      rescue
        ArgumentError -> :ok
      end

      spawn(fn ->
        Process.sleep(5_000)
        if os_pid && File.exists?("/proc/#{os_pid}"), do: PortProcess.kill(os_pid)
      end)
    end

    :ok
  end

  # ---- internals ------------------------------------------------------------------------------

  defp send_frame(port, ref, command, call_opts) do
    Port.command(port, :erlang.term_to_binary({:call, ref, command, call_opts}))
  rescue
    # The OS process is gone and its exit status is on its way: the call is answered then.
    ArgumentError -> false
  end

  defp decode(data) do
    {:ok, :erlang.binary_to_term(data)}
  rescue
    ArgumentError -> :error
  end

  # A call accepted while ready: held for a batch when the port is busy enough and the call
  # can be batched (UroRecommender.Batch), else sent, after whatever is held.
  defp submit(state, {_from, command, opts, _accepted} = member) do
    key = Batch.key(command, opts, state.batch_size)

    cond do
      key == nil ->
        state |> flush() |> send_members([member])

      state.held.count == 0 and
          not Batch.hold?(map_size(state.calls), state.batched, state.batch_from) ->
        send_members(state, [member])

      true ->
        case Batch.add(state.held, key, member, state.batch_size) do
          {:held, held} -> set_busy(%{state | held: held})
          {:full, members, held} -> send_members(%{state | held: held}, members)
        end
    end
  end

  defp flush(%{held: %{count: 0}} = state), do: state

  defp flush(state) do
    {frames, held} = Batch.take_all(state.held, state.batch_size)
    Enum.reduce(frames, %{state | held: held}, &send_members(&2, &1))
  end

  defp flush_when_due(state) do
    if Batch.flush?(map_size(state.calls), state.held.count, state.batch_size),
      do: flush(state),
      else: state
  end

  defp send_members(state, [{from, command, opts, accepted}]) do
    state |> send_call(command, from, opts, accepted) |> elem(1)
  end

  defp send_members(state, [{_, first, opts, accepted} | _] = members) do
    size = length(members)

    Telemetry.execute(
      [:uro_recommender, :batch],
      %{size: size},
      Map.merge(Telemetry.describe(first), %{slot: state.id, port: state.os_pid})
    )

    state = %{state | batched: state.batched + size - 1}
    state |> send_call(Batch.command(members), {:batch, members}, opts, accepted) |> elem(1)
  end

  defp unbatch(state, %Call{from: {:batch, members}}),
    do: %{state | batched: state.batched - length(members) + 1}

  defp unbatch(state, _call), do: state

  defp send_call(state, command, from, opts, accepted) do
    ref = state.next_ref
    timeout = Keyword.get(opts, :timeout) || state.timeout

    call_opts =
      if state.send_timeout_ms and is_integer(timeout), do: %{timeout_ms: timeout}, else: %{}

    send_frame(state.port, ref, command, call_opts)

    timer =
      if is_integer(timeout),
        do: Process.send_after(self(), {:deadline, ref}, timeout + state.grace)

    call = %Call{
      from: from,
      command: command,
      call_opts: call_opts,
      timer: timer,
      events: Keyword.get(opts, :events),
      accepted: accepted,
      sent: mono()
    }

    state = set_busy(%{state | next_ref: ref + 1, calls: Map.put(state.calls, ref, call)})
    {ref, state}
  end

  defp handle_frame({:reply, :handshake, reply}, %{handshake: {_, _}} = state) do
    handshake(%{state | last_reply_at: mono()}, reply)
  end

  # A frame the port could not read at all (too_large, bad_frame) is answered with Ref
  # undefined. The port answers frames one at a time, in the order they arrive, so that reply
  # belongs to the oldest call still waiting.
  defp handle_frame({:reply, :undefined, reply}, state) when map_size(state.calls) > 0 do
    handle_frame({:reply, Enum.min(Map.keys(state.calls)), reply}, state)
  end

  defp handle_frame({:reply, ref, reply}, state) do
    replied = mono()

    case Map.pop(state.calls, ref) do
      {nil, _} ->
        # A reply to a call already answered with a client-side timeout.
        Logger.warning(
          "uro_recommender: reply to no waiting call #{inspect(ref)}: #{short(reply)}"
        )

        %{state | last_reply_at: replied}

      {call, calls} ->
        if call.timer, do: Process.cancel_timer(call.timer)
        Recorder.record(state.record, call.command, call.call_opts, reply)
        # The port began on this call when it was sent or when the previous reply left.
        began = max(call.sent, state.last_reply_at)
        state = set_busy(%{unbatch(state, call) | calls: calls, last_reply_at: replied})
        state = track_models(state, call, reply)

        state =
          case call.from do
            {:batch, members} ->
              answer_batch(state, members, reply, began)

            _ ->
              answer(call, reply, %{port: state.os_pid, queue_time: began - call.accepted})
              state
          end

        flush_when_due(state)
    end
  end

  defp handle_frame({:log, level, message}, state) do
    level = if level in @log_levels, do: level, else: :info
    Logger.log(level, message, port: state.os_pid, uro_recommender: state.id)
    state
  end

  defp handle_frame({:event, ref, event}, state) do
    call = Map.get(state.calls, ref)

    if match?(%Call{events: pid} when is_pid(pid), call),
      do: send(call.events, {:uro_recommender_event, ref, event})

    meta = %{event: event, ref: ref, port: state.os_pid, id: state.id}
    Telemetry.execute([:uro_recommender, :event], %{}, meta)

    if call && match?(%{type: :epoch}, event) do
      Telemetry.epoch(event, Telemetry.describe(call.command).model, state.id, state.os_pid)
    end

    state
  end

  defp handle_frame(other, state) do
    Logger.warning("uro_recommender: unexpected frame #{short(other)}")
    state
  end

  defp answer(%Call{from: {:reload, name}}, reply, _answered) do
    case reply do
      {:ok, _} -> :ok
      error -> Logger.error("uro_recommender: reloading #{name} failed: #{short(error)}")
    end
  end

  defp answer(%Call{from: {:batch, members}}, reply, answered) do
    for {from, _command, _opts, _accepted} <- members,
        do: GenServer.reply(from, {reply, answered})
  end

  defp answer(%Call{from: from}, reply, answered), do: GenServer.reply(from, {reply, answered})

  # Each caller of a batch gets its own list; when the reply cannot be split so, each is sent
  # again alone (UroRecommender.Batch.split/2).
  defp answer_batch(state, members, reply, began) do
    case Batch.split(members, reply) do
      {:ok, replies} ->
        size = length(members)

        for {{from, _command, _opts, accepted}, own} <- replies do
          answered = %{port: state.os_pid, queue_time: began - accepted, batch: size}
          GenServer.reply(from, {own, answered})
        end

        state

      :resend ->
        Enum.reduce(members, state, &send_members(&2, [&1]))
    end
  end

  defp answer_waiting(state, reply) do
    for {from, _command, _opts, _accepted} <- :queue.to_list(state.waiting) do
      GenServer.reply(from, {reply, nil})
    end

    set_busy(%{state | waiting: :queue.new()})
  end

  # The models this process has loaded: train (when it saved a version) and load add or
  # replace, unload removes. A failed reload forgets the model on this port only: the store is
  # shared by the pool's ports, which may still serve it.
  defp track_models(state, %Call{command: command, from: from}, reply) do
    change =
      case {command, reply} do
        {{:train, _, _}, {:ok, %{name: name, version: v}}} when is_integer(v) ->
          {name, v}

        {{:load, _, _}, {:ok, %{name: name, version: v}}} when is_integer(v) ->
          {name, v}

        {{:load, name, _}, {:error, _}} when elem(from, 0) == :reload ->
          {:forget, to_string(name)}

        {{:unload, name}, {:ok, _}} ->
          {to_string(name), nil}

        _ ->
          nil
      end

    case change do
      nil ->
        state

      {:forget, name} ->
        %{state | models: Map.delete(state.models, name)}

      {name, nil} ->
        ModelStore.put(state.store, state.store_key, name, nil)
        %{state | models: Map.delete(state.models, name)}

      {name, version} ->
        ModelStore.put(state.store, state.store_key, name, version)
        %{state | models: Map.put(state.models, name, version)}
    end
  end

  defp fail_all(state, reason, why) do
    for {_ref, call} <- Enum.sort(state.calls) do
      if call.timer, do: Process.cancel_timer(call.timer)
      Recorder.comment(state.record, call.command, why)
      answer(call, {:error, reason}, nil)
    end

    {frames, held} = Batch.take_all(state.held, state.batch_size)

    for members <- frames,
        {from, _, _, _} <- members,
        do: GenServer.reply(from, {{:error, reason}, nil})

    set_busy(%{state | calls: %{}, held: held, batched: 0})
  end

  # Ends what is left of the OS process (a hung or wrong one) and forgets it.
  defp close_port(%{port: nil} = state), do: %{state | os_pid: nil}

  defp close_port(state) do
    PortProcess.kill(state.os_pid)

    try do
      Port.close(state.port)
    rescue
      ArgumentError -> :ok
    end

    state = fail_all(state, {:port_exited, :killed}, "port given up")
    %{state | port: nil, os_pid: nil}
  end

  defp kill(%{killed: true} = state), do: state

  defp kill(state) do
    PortProcess.kill(state.os_pid)
    %{state | killed: true}
  end

  defp in_flight_count(state),
    do: map_size(state.calls) + state.batched + state.held.count + :queue.len(state.waiting)

  defp set_busy(%{busy: nil} = state), do: state

  defp set_busy(%{busy: {ref, index}} = state) do
    :atomics.put(ref, index, in_flight_count(state))
    state
  end

  defp publish(%{phase_ref: nil} = state), do: state

  defp publish(%{phase_ref: {ref, index}} = state) do
    :atomics.put(ref, index, Map.fetch!(@phase_codes, state.phase))
    state
  end

  # Milliseconds for the slot's life (ready since, next attempt); native units for call timing.
  defp now, do: System.monotonic_time(:millisecond)
  defp mono, do: System.monotonic_time()

  defp short(term), do: inspect(term, limit: 10, printable_limit: 200)
end
