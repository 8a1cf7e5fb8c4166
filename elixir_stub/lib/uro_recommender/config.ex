defmodule UroRecommender.Config do
  # The table below is built from @schema, so the documentation and the checks are one list.
  @schema [
    name: {:atom, UroRecommender, "the pool's registered name; more than one pool may run"},
    port_path:
      {:path, "`priv/uro_recommender` of this application, else env `URO_REC_PORT`",
       "the port executable"},
    python_dir:
      {:path,
       "`priv/python` when the executable is the one in `priv/`, else the port's own lookup",
       "the directory holding `uro_rec` (`--python-dir`)"},
    venv: {:path, "the port's own lookup", "the Python virtualenv (`--venv`)"},
    model_dir:
      {:path, "the port's default, `~/.local/share/uro_recommender/models`",
       "where models are saved (`--model-dir`)"},
    database_url:
      {:string, "`nil`: the port inherits `DATABASE_URL`",
       "set as the port's `DATABASE_URL` (not on its command line, which `ps` shows)"},
    pool_size: {:pos_integer, "`System.schedulers_online()`", "serving ports"},
    batch_size:
      {:pos_integer, 32,
       "most `recommend` calls a serving port answers with one `recommend_many` when they " <>
         "arrive while it is busy; `1` turns batching off (`UroRecommender.Batch`)"},
    batch_from:
      {:pos_integer, 12,
       "callers in flight on a serving port from which its `recommend` calls are held for " <>
         "a batch (`UroRecommender.Batch`: below it, pipelined calls are cheaper)"},
    timeout: {:pos_integer, 30_000, "ms per call, unless the call gives `:timeout`"},
    train_timeout:
      {:timeout, :timer.hours(2), "ms per call on the training port (`train`, `export`, ...)"},
    grace:
      {:non_neg_integer, 2_000,
       "ms after a call's timeout before its OS process is presumed stuck and killed"},
    ready_timeout:
      {:pos_integer, 30_000,
       "ms for a new port to answer its first call (`info`, the handshake) before it is killed"},
    backoff:
      {:backoff, {1_000, 60_000},
       "`{first_ms, max_ms}`: a slot that fails waits `first_ms`, doubling up to `max_ms`"},
    max_frame: {:pos_integer, "the port's default (64 MiB)", "request frame limit in bytes"},
    data_dir:
      {:path, "none: `{csv, Path}` may name any file the port can read",
       "`{csv, Path}` sources are confined to this directory (`--data-dir`)"},
    model_key_file:
      {:path, "none: the port's `URO_REC_MODEL_KEY`, if set",
       "the keys that sign and verify saved models, one per line, the first signing " <>
         "(`--model-key-file`; docs/OPERATIONS.md)"},
    allow_unsigned_models:
      {:boolean, false, "load model versions that carry no signature (`--allow-unsigned-models`)"},
    env: {:env, [], "extra environment for the port process, `[{name, value}]`"},
    args: {:args, [], "extra command-line arguments for the port"},
    cpu_affinity:
      {:cpu_list, nil,
       "CPUs every port of the pool runs on, a list such as `\"1\"` or `\"0,2-3\"` (started " <>
         "through `taskset -c`; docs/OPERATIONS.md, \"CPU placement\")"},
    record:
      {:path, nil, "a file every request and reply is appended to (`UroRecommender.Recorder`)"},
    send_timeout_ms: {:boolean, true, "send each call's timeout to the port as `timeout_ms`"}
  ]

  @moduledoc """
  The pool's options: their defaults, then the application environment
  (`config :uro_recommender, ...`), then the options of the child spec
  `{UroRecommender, opts}`; the child spec wins.

  | key | default | what |
  |---|---|---|
  #{Enum.map_join(@schema, "\n", fn {key, {_type, default, doc}} -> "| `#{inspect(key)}` | #{if is_binary(default), do: default, else: "`#{inspect(default)}`"} | #{doc} |" end)}

  Unknown keys and values of the wrong type raise `ArgumentError` when the pool starts (in
  the child spec too), so that a typo such as `pool_sise: 7` stops the host at boot with a
  message naming it, instead of a pool of another size:

      iex> UroRecommender.Config.validate!(pool_sise: 7)
      ** (ArgumentError) unknown options [:pool_sise], valid options are: [:name, :port_path, :python_dir, :venv, :model_dir, :database_url, :pool_size, :batch_size, :batch_from, :timeout, :train_timeout, :grace, :ready_timeout, :backoff, :max_frame, :data_dir, :model_key_file, :allow_unsigned_models, :env, :args, :cpu_affinity, :record, :send_timeout_ms]

      iex> UroRecommender.Config.validate!(pool_size: 0)
      ** (ArgumentError) invalid value for :pool_size option: expected positive integer, got: 0

      iex> UroRecommender.Config.validate!(pool_size: 2, model_dir: "/var/lib/uro/models")
      [pool_size: 2, model_dir: "/var/lib/uro/models"]
  """

  @app :uro_recommender
  @keys Keyword.keys(@schema)

  @doc "The option names, in the order of the table above."
  @spec keys() :: [atom()]
  def keys, do: @keys

  @doc """
  Checks `opts` against the table above and returns them; raises `ArgumentError` on an unknown
  key or a value of the wrong type (messages in NimbleOptions' words).
  """
  @spec validate!(keyword()) :: keyword()
  def validate!(opts), do: check!(opts, @schema)

  @doc """
  Checks `opts` against `schema`, a keyword list of `{type, default, doc}` as above (the
  options of `UroRecommender.Interactions` and `UroRecommender.Scheduler` are checked with
  it too); raises `ArgumentError` as `validate!/1` does. Types: `:atom`, `:string`, `:path`,
  `:boolean`, `:pos_integer`, `:non_neg_integer`, `:timeout`, `:number` (>= 0), `:map`,
  `:args`, `:backoff`, `:env`, `:cpu_list`, `{:in, values}`.
  """
  @spec check!(keyword(), keyword()) :: keyword()
  def check!(opts, schema) when is_list(opts) do
    unless Keyword.keyword?(opts) do
      raise ArgumentError, "expected a keyword list of options, got: #{inspect(opts)}"
    end

    keys = Keyword.keys(schema)

    case Keyword.keys(opts) -- keys do
      [] ->
        :ok

      unknown ->
        raise ArgumentError,
              "unknown options #{inspect(Enum.uniq(unknown))}, valid options are: #{inspect(keys)}"
    end

    for {key, value} <- opts,
        type = elem(Keyword.fetch!(schema, key), 0),
        value != nil,
        not valid?(type, value) do
      raise ArgumentError,
            "invalid value for #{inspect(key)} option: expected #{expected(type)}, " <>
              "got: #{inspect(value)}"
    end

    opts
  end

  def check!(other, _schema),
    do: raise(ArgumentError, "expected a keyword list of options, got: #{inspect(other)}")

  @doc """
  The application environment of `module` (`config :uro_recommender, module, [...]`) merged
  with `opts` (which win), both checked against `schema`, defaults filled in.
  """
  @spec resolve(module(), keyword(), keyword()) :: keyword()
  def resolve(module, opts, schema) do
    from_env = Application.get_env(@app, module, [])

    try do
      check!(from_env, schema)
    rescue
      e in ArgumentError ->
        reraise ArgumentError,
                "in config :uro_recommender, #{inspect(module)}: " <> e.message,
                __STACKTRACE__
    end

    merged = Keyword.merge(from_env, check!(opts, schema))

    for {key, {_type, default, _doc}} <- schema,
        do: {key, Keyword.get(merged, key, if(is_binary(default), do: nil, else: default))}
  end

  @doc "The table of a schema's options, for a moduledoc."
  @spec table(keyword()) :: String.t()
  def table(schema) do
    rows =
      Enum.map_join(schema, "\n", fn {key, {_type, default, doc}} ->
        shown = if is_binary(default), do: default, else: "`#{inspect(default)}`"
        "| `#{inspect(key)}` | #{shown} | #{doc} |"
      end)

    "| key | default | what |\n|---|---|---|\n" <> rows
  end

  @doc """
  Validates the application environment and `opts`, merges them (`opts` win) and fills in the
  defaults. The result has every key.
  """
  @spec resolve(keyword()) :: keyword()
  def resolve(opts) when is_list(opts) do
    # Keys that are module names configure that module (UroRecommender.Scheduler, ...).
    from_env =
      Application.get_all_env(@app)
      |> Keyword.drop([:included_applications])
      |> Enum.reject(fn {key, _} -> module_key?(key) end)

    try do
      validate!(from_env)
    rescue
      e in ArgumentError ->
        reraise ArgumentError, "in config :uro_recommender: " <> e.message, __STACKTRACE__
    end

    merged = Keyword.merge(from_env, validate!(opts))
    port_path = Keyword.get_lazy(merged, :port_path, &default_port_path/0)

    Enum.map(@keys, fn key ->
      {key, Keyword.get_lazy(merged, key, fn -> default(key, port_path) end)}
    end)
  end

  defp default(:port_path, port_path), do: port_path
  defp default(:python_dir, port_path), do: default_python_dir(port_path)
  defp default(:pool_size, _), do: System.schedulers_online()

  defp default(key, _) do
    case Keyword.fetch!(@schema, key) do
      {_type, default, _doc} when is_binary(default) -> nil
      {_type, default, _doc} -> default
    end
  end

  @doc """
  The port executable: `priv/uro_recommender` inside this application when it exists there,
  else the environment variable `URO_REC_PORT`.
  """
  @spec default_port_path() :: String.t() | nil
  def default_port_path do
    in_priv = priv_path("uro_recommender")

    cond do
      in_priv && File.exists?(in_priv) -> in_priv
      env = System.get_env("URO_REC_PORT") -> env
      true -> in_priv
    end
  end

  # priv/python holds uro_rec beside priv/uro_recommender (the Makefile's Mix layout, which a
  # release copies): said explicitly, so the port needs no lookup of its own for it.
  defp default_python_dir(port_path) do
    dir = priv_path("python")

    if port_path && dir && Path.dirname(Path.expand(port_path)) == Path.dirname(dir) &&
         File.dir?(Path.join(dir, "uro_rec")),
       do: dir
  end

  defp priv_path(name) do
    case :code.priv_dir(@app) do
      {:error, _} -> nil
      dir -> Path.join(List.to_string(dir), name)
    end
  end

  defp module_key?(key), do: match?("Elixir." <> _, Atom.to_string(key))

  defp valid?(:atom, v), do: is_atom(v)
  defp valid?(:string, v), do: is_binary(v)
  defp valid?(:path, v), do: is_binary(v) or (is_list(v) and List.ascii_printable?(v))
  defp valid?(:boolean, v), do: is_boolean(v)
  defp valid?(:pos_integer, v), do: is_integer(v) and v > 0
  defp valid?(:non_neg_integer, v), do: is_integer(v) and v >= 0
  defp valid?(:timeout, v), do: v == :infinity or (is_integer(v) and v > 0)
  defp valid?(:args, v), do: is_list(v) and Enum.all?(v, &(is_binary(&1) or is_atom(&1)))

  defp valid?(:number, v), do: is_number(v) and v >= 0
  defp valid?(:map, v), do: is_map(v)
  defp valid?({:in, values}, v), do: v in values

  defp valid?(:backoff, v),
    do: match?({a, b} when is_integer(a) and is_integer(b) and a > 0 and b >= a, v)

  defp valid?(:env, v), do: is_list(v) and Enum.all?(v, &env_pair?/1)
  defp valid?(:cpu_list, v), do: is_binary(v) and v =~ ~r/^\d+(-\d+)?(,\d+(-\d+)?)*$/

  defp env_pair?({k, v}) when is_binary(k) or is_atom(k), do: is_binary(v) or is_nil(v)
  defp env_pair?(_), do: false

  defp expected(:atom), do: "atom"
  defp expected(:string), do: "string"
  defp expected(:path), do: "a path (string)"
  defp expected(:boolean), do: "boolean"
  defp expected(:pos_integer), do: "positive integer"
  defp expected(:non_neg_integer), do: "non negative integer"
  defp expected(:timeout), do: "positive integer or :infinity"
  defp expected(:args), do: "list of strings"
  defp expected(:backoff), do: "{first_ms, max_ms} with 0 < first_ms <= max_ms"
  defp expected(:env), do: "list of {name, value | nil} with string values"
  defp expected(:cpu_list), do: "a CPU list such as \"1\" or \"0,2-3\""
  defp expected(:number), do: "a number >= 0"
  defp expected(:map), do: "a map"
  defp expected({:in, values}), do: "one of #{inspect(values)}"
end
