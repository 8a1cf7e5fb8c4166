defmodule UroRecommender.TestHelpers do
  @moduledoc "Shared by the tests: data, temp dirs, waiting."

  @doc "The port executable under test."
  def port_path, do: System.fetch_env!("URO_REC_PORT")

  @doc "A fresh temporary directory."
  def tmp_dir(tag) do
    dir =
      Path.join(System.tmp_dir!(), "uro_rec_test_#{tag}_#{System.unique_integer([:positive])}")

    File.rm_rf!(dir)
    File.mkdir_p!(dir)
    dir
  end

  @doc """
  A model key file for pools that publish or load from the database (only signed versions
  travel through the registry): one fixed test key, the same on every node of a test.
  """
  def model_key_file do
    file = Path.join(System.tmp_dir!(), "uro_rec_test_model.key")
    File.write!(file, "# test key\n" <> String.duplicate("k3y", 16) <> "\n")
    file
  end

  @doc "A tiny implicit-feedback data set: 50 users x 40 items."
  def tiny_rows do
    for u <- 1..50, i <- 1..40, rem(u * 7 + i * 3, 5) == 0, do: {u, i, 1}
  end

  @doc "A tiny ALS training spec."
  def tiny_spec(epochs \\ 2) do
    %{algorithm: "ALS", data: {:rows, tiny_rows()}, params: %{n_epochs: epochs, embed_size: 8}}
  end

  @doc "A training spec that takes several seconds (about 0.25 s an epoch on 2 cores)."
  def slow_spec(epochs \\ 30) do
    rows = for u <- 1..3000, i <- 1..300, rem(u * 7 + i * 13, 11) == 0, do: {u, i, 1}
    %{algorithm: "ALS", data: {:rows, rows}, params: %{n_epochs: epochs, embed_size: 64}}
  end

  @doc "Polls `fun` every 50 ms until it returns a truthy value, for up to `ms`."
  def eventually(fun, ms \\ 30_000) do
    deadline = System.monotonic_time(:millisecond) + ms
    do_eventually(fun, deadline)
  end

  defp do_eventually(fun, deadline) do
    case fun.() do
      falsy when falsy in [nil, false] ->
        if System.monotonic_time(:millisecond) > deadline do
          raise "condition not met in time"
        else
          Process.sleep(50)
          do_eventually(fun, deadline)
        end

      value ->
        value
    end
  end

  @doc "True when the OS process is gone."
  def os_process_gone?(os_pid), do: not File.exists?("/proc/#{os_pid}")

  @doc """
  The OS pid of a port server's process once it is a new one, ready (after the server started
  a new OS process: the server itself stays the same).
  """
  def new_os_pid(server, old_os, ms \\ 30_000) do
    eventually(
      fn ->
        case UroRecommender.Port.status(server) do
          %{state: :ready, os_pid: os} when is_integer(os) and os != old_os -> os
          _ -> nil
        end
      end,
      ms
    )
  end

  @doc "The pid of a registered process once it is a new one (after a restart)."
  def new_pid(name, old) do
    eventually(fn ->
      case Process.whereis(name) do
        pid when is_pid(pid) and pid != old -> pid
        _ -> nil
      end
    end)
  end
end
