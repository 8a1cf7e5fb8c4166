defmodule UroRecommender.TelemetryTest do
  # The :telemetry events of calls and training, through a real port (the telemetry library
  # here is the fixture of test/fixtures/telemetry, with the real API's semantics).
  use ExUnit.Case, async: false

  import ExUnit.CaptureLog
  import UroRecommender.TestHelpers

  alias UroRecommender.Port

  @moduletag timeout: 300_000
  @events [
    [:uro_recommender, :call, :start],
    [:uro_recommender, :call, :stop],
    [:uro_recommender, :call, :exception],
    [:uro_recommender, :train, :epoch]
  ]

  setup do
    parent = self()
    id = "uro-rec-test-#{System.unique_integer([:positive])}"

    forward = fn event, measurements, meta, _ ->
      send(parent, {:telemetry, event, measurements, meta})
    end

    :ok = :telemetry.attach_many(id, @events, forward, nil)
    on_exit(fn -> :telemetry.detach(id) end)
    :ok
  end

  defp start_port(opts \\ []) do
    name = :"uro_rec_tel_#{System.unique_integer([:positive])}"
    base = [port_path: port_path(), model_dir: tmp_dir("telemetry"), name: name, id: {:tel, name}]
    start_supervised!({Port, Keyword.merge(base, opts)})
    name
  end

  test "a reply is a start and a stop, with command, model, port, duration and queue time" do
    name = start_port()
    os = Port.os_pid(name)
    assert {:error, {:unknown_model, _}} = Port.call(name, {:recommend, "nope", 1, 3, %{}})

    assert_received {:telemetry, [:uro_recommender, :call, :start],
                     %{system_time: _, monotonic_time: _},
                     %{
                       command: :recommend,
                       model: "nope",
                       slot: {:tel, ^name},
                       telemetry_span_context: ctx
                     }}

    assert_received {:telemetry, [:uro_recommender, :call, :stop], m,
                     %{command: :recommend, model: "nope", telemetry_span_context: ^ctx} = meta}

    assert %{result: :error, error: {:unknown_model, _}, port: port} = meta
    assert port == Port.os_pid(name) and is_integer(os)
    assert m.duration > 0 and m.queue_time >= 0 and m.queue_time <= m.duration

    assert {:ok, :pong} = Port.call(name, :ping)

    assert_received {:telemetry, [:uro_recommender, :call, :stop], _,
                     %{command: :ping, model: nil, result: :ok}}
  end

  test "a call waiting behind another: its queue time is the wait" do
    name = start_port(timeout: 120_000)

    capture_log(fn ->
      train = Task.async(fn -> Port.call(name, {:train, "q", tiny_spec()}) end)
      eventually(fn -> Port.in_flight(name) == 1 end)
      assert {:ok, 1} = Port.call(name, {:echo, 1})
      assert {:ok, %{version: 1}} = Task.await(train, 120_000)
    end)

    assert_received {:telemetry, [:uro_recommender, :call, :stop], train, %{command: :train}}
    assert_received {:telemetry, [:uro_recommender, :call, :stop], echo, %{command: :echo}}
    # The echo waited for the training to end: most of its time was queue time.
    assert echo.queue_time > echo.duration / 2
    assert echo.queue_time <= echo.duration
    assert train.queue_time < train.duration / 2
  end

  test "training epochs: [:uro_recommender, :train, :epoch] with the model" do
    name = start_port(timeout: 120_000)
    capture_log(fn -> assert {:ok, _} = Port.call(name, {:train, "epochs", tiny_spec(2)}) end)

    assert_received {:telemetry, [:uro_recommender, :train, :epoch], %{epoch: 1, seconds: s},
                     %{model: "epochs", slot: {:tel, ^name}, port: port}}

    assert is_float(s) and is_integer(port)
    assert_received {:telemetry, [:uro_recommender, :train, :epoch], %{epoch: 2}, _}
  end

  test "a call that gets no reply is an exception: unavailable, port exited" do
    name = start_port(port_path: Path.join(tmp_dir("none"), "uro_recommender"))

    capture_log(fn ->
      eventually(fn -> Port.status(name).state == :degraded end)
      assert {:error, :unavailable} = Port.call(name, :ping)
    end)

    assert_received {:telemetry, [:uro_recommender, :call, :exception], %{duration: _},
                     %{command: :ping, kind: :error, reason: :unavailable, stacktrace: []}}

    refute_received {:telemetry, [:uro_recommender, :call, :stop], _, _}

    faulty = start_port(env: [{"URO_REC_FAULTS", "1"}])

    capture_log(fn ->
      assert {:error, {:port_exited, _}} = Port.call(faulty, {:fault, :exit})
    end)

    assert_received {:telemetry, [:uro_recommender, :call, :exception], _,
                     %{command: :fault, reason: {:port_exited, 3}}}
  end
end
