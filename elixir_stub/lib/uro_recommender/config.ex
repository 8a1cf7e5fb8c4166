defmodule UroRecommender.Config do
  @moduledoc """
  Resolves the pool's configuration: defaults, then the application environment
  (`config :uro_recommender, ...`), then the options given to the child spec.

  | key             | default                                                         |
  |-----------------|-----------------------------------------------------------------|
  | `:port_path`    | `priv/uro_recommender` of this application, else env `URO_REC_PORT` |
  | `:model_dir`    | the port's default (`~/.local/share/uro_recommender/models`)    |
  | `:database_url` | `nil`: the port inherits `DATABASE_URL` (given: set as its `DATABASE_URL`)      |
  | `:pool_size`    | `System.schedulers_online()` serving ports                      |
  | `:timeout`      | `30_000` ms per call                                            |
  | `:train_timeout`| `:timer.hours(2)` for calls on the training port                |
  | `:grace`        | `2_000` ms after a timeout before the OS process is killed      |
  | `:max_frame`    | the port's default                                              |
  | `:env`          | `[]` extra environment for the port process                     |
  | `:record`       | `nil`, or a file to append every request and reply to           |
  """

  @app :uro_recommender
  @keys [
    :port_path,
    :model_dir,
    :database_url,
    :pool_size,
    :timeout,
    :train_timeout,
    :grace,
    :max_frame,
    :env,
    :record,
    :send_timeout_ms
  ]

  @doc "The keys read from the application environment."
  @spec keys() :: [atom()]
  def keys, do: @keys

  @doc """
  Merges the application environment under `opts` (a keyword list); `opts` win.
  Fills in `:port_path`, `:pool_size`, `:timeout` and `:grace` when neither gives them.
  """
  @spec resolve(keyword()) :: keyword()
  def resolve(opts) when is_list(opts) do
    from_env = for k <- @keys, (v = Application.get_env(@app, k)) != nil, do: {k, v}

    from_env
    |> Keyword.merge(opts)
    |> Keyword.put_new_lazy(:port_path, &default_port_path/0)
    |> Keyword.put_new_lazy(:pool_size, &System.schedulers_online/0)
    |> Keyword.put_new(:timeout, 30_000)
    |> Keyword.put_new(:train_timeout, :timer.hours(2))
    |> Keyword.put_new(:grace, 2_000)
  end

  @doc """
  The port executable: `priv/uro_recommender` inside this application when it
  exists there, else the environment variable `URO_REC_PORT`.
  """
  @spec default_port_path() :: String.t() | nil
  def default_port_path do
    in_priv =
      case :code.priv_dir(@app) do
        {:error, _} -> nil
        dir -> Path.join(List.to_string(dir), "uro_recommender")
      end

    cond do
      in_priv && File.exists?(in_priv) -> in_priv
      env = System.get_env("URO_REC_PORT") -> env
      true -> in_priv
    end
  end
end
