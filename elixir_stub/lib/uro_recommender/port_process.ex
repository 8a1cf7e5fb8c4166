defmodule UroRecommender.PortProcess do
  @moduledoc """
  Starting and stopping one `uro_recommender` OS process, and the words for why one could not
  serve. `UroRecommender.Port` owns the process; this module only opens it (command line,
  environment) and kills it.

  A start that fails is a value, never an exception, so that the port server can wait and try
  again instead of crashing into its supervisor:

      iex> UroRecommender.PortProcess.open(port_path: "/nonexistent/uro_recommender")
      {:error, {:not_found, "/nonexistent/uro_recommender"}}
      iex> UroRecommender.PortProcess.describe({:not_found, "/x/uro_recommender"})
      "port executable not found: /x/uro_recommender"
  """

  # The protocol version this client speaks (docs/PROTOCOL.md); `info` says the port's.
  @protocol 1

  @doc "The protocol version this client speaks: the port's `info` must say the same."
  @spec protocol() :: pos_integer()
  def protocol, do: @protocol

  @typedoc "Why a port did not come up, or stopped serving."
  @type failure ::
          {:not_found, String.t() | nil}
          | {:not_executable, String.t()}
          | {:spawn_failed, term()}
          | {:exited, integer()}
          | {:no_ready_reply, pos_integer()}
          | {:python_did_not_start, String.t()}
          | {:protocol, term()}
          | {:handshake, term()}
          | {:port_exited, integer()}
          | {:bad_frame, non_neg_integer()}

  @doc """
  Opens the port executable `opts[:port_path]` as an Erlang port (`{:packet, 4}`, binary,
  `:exit_status`): `{:ok, port, os_pid}`, where `os_pid` is `nil` when the process has already
  exited (its `:exit_status` message follows), or `{:error, failure}`.

  Options: `:port_path`, `:model_dir`, `:max_frame`, `:python_dir`, `:venv`, `:data_dir`,
  `:model_key_file`, `:allow_unsigned_models`, `:args`, `:database_url`, `:env`,
  `:cpu_affinity` (a CPU list such as `"1"` or `"0,2-3"`: the process is started through
  `taskset -c LIST`, which execs it, so the OS pid is the port's and every thread it starts
  inherits the mask; docs/OPERATIONS.md, "CPU placement").
  """
  @spec open(keyword()) :: {:ok, port(), non_neg_integer() | nil} | {:error, failure()}
  def open(opts) do
    path = if p = opts[:port_path], do: to_string(p)

    with :ok <- check_executable(path),
         {:ok, exe, pinning} <- pinned(path, opts[:cpu_affinity]) do
      try do
        port =
          Port.open({:spawn_executable, exe}, [
            :binary,
            {:packet, 4},
            :exit_status,
            :use_stdio,
            args: pinning ++ args(opts),
            env: env(opts)
          ])

        # nil: the process is already gone (it exited at once); its exit status is on its way.
        os_pid =
          case Port.info(port, :os_pid) do
            {:os_pid, os_pid} -> os_pid
            nil -> nil
          end

        {:ok, port, os_pid}
      rescue
        e in ErlangError -> {:error, {:spawn_failed, e.original}}
      end
    end
  end

  # The executable to spawn and the arguments before the port's own.
  defp pinned(path, nil), do: {:ok, path, []}

  defp pinned(path, cpus) do
    case System.find_executable("taskset") do
      nil -> {:error, {:not_found, "taskset (for :cpu_affinity)"}}
      taskset -> {:ok, taskset, ["-c", to_string(cpus), path]}
    end
  end

  defp check_executable(nil), do: {:error, {:not_found, nil}}

  defp check_executable(path) do
    case File.stat(path) do
      {:ok, %File.Stat{type: :regular, mode: mode}} ->
        # Any execute bit; the kernel has the last word (EACCES from spawn_failed).
        if Bitwise.band(mode, 0o111) != 0, do: :ok, else: {:error, {:not_executable, path}}

      {:ok, %File.Stat{}} ->
        {:error, {:not_executable, path}}

      {:error, _} ->
        {:error, {:not_found, path}}
    end
  end

  defp args(opts) do
    flags = [
      model_dir: "--model-dir",
      python_dir: "--python-dir",
      venv: "--venv",
      data_dir: "--data-dir",
      model_key_file: "--model-key-file"
    ]

    paths = for {key, flag} <- flags, v = opts[key], do: [flag, to_string(v)]
    frame = if f = opts[:max_frame], do: [["--max-frame", Integer.to_string(f)]], else: []
    unsigned = if opts[:allow_unsigned_models], do: ["--allow-unsigned-models"], else: []

    List.flatten(paths ++ frame ++ unsigned) ++
      Enum.map(Keyword.get(opts, :args) || [], &to_string/1)
  end

  defp env(opts) do
    # DATABASE_URL rather than --database-url: the environment of a process is not shown by ps.
    # Without :database_url the port inherits the host's DATABASE_URL, if any.
    db = if u = opts[:database_url], do: [{"DATABASE_URL", u}], else: []

    for {k, v} <- db ++ (Keyword.get(opts, :env) || []) do
      {String.to_charlist(to_string(k)), if(v, do: String.to_charlist(to_string(v)), else: false)}
    end
  end

  @doc "Kills an OS process with SIGKILL (nothing when `nil` or already gone)."
  @spec kill(non_neg_integer() | nil) :: :ok
  def kill(nil), do: :ok

  def kill(os_pid) do
    System.cmd("kill", ["-9", Integer.to_string(os_pid)], stderr_to_stdout: true)
    :ok
  end

  @doc "A failure in words, for logs and `UroRecommender.status/1`."
  @spec describe(failure() | term()) :: String.t()
  def describe({:not_found, nil}), do: "no port executable configured (:port_path)"
  def describe({:not_found, path}), do: "port executable not found: #{path}"
  def describe({:not_executable, path}), do: "port executable is not executable: #{path}"
  def describe({:spawn_failed, why}), do: "the port executable could not start: #{inspect(why)}"
  def describe({:exited, status}), do: "the port exited with status #{status} before it was ready"

  def describe({:no_ready_reply, ms}),
    do: "the port did not answer its first call (info) within #{ms} ms; killed"

  def describe({:python_did_not_start, why}), do: why

  def describe({:protocol, got}),
    do: "the port speaks protocol #{inspect(got)}, this client protocol #{@protocol}; stopped"

  def describe({:handshake, reply}),
    do: "unexpected reply to the first call (info): #{inspect(reply)}"

  def describe({:port_exited, status}), do: "the port exited with status #{status}"

  def describe({:bad_frame, bytes}),
    do:
      "the port sent a frame of #{bytes} bytes that is not an Erlang term: not a uro_recommender port"

  def describe(other), do: inspect(other)
end
