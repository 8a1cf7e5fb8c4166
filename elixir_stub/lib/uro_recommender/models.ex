defmodule UroRecommender.Models do
  @moduledoc ~S"""
  The models uro serves, as named configurations with their SQL: what `UroRecommender.Scheduler`
  trains, gates and publishes, and what `UroRecommender.Oban.PipelineWorker` runs.

  | name | serves | trained from | gate |
  |---|---|---|---|
  | `"worlds_you_may_like"` | `UroRecommender.recommend/4` for a user; exported top-20 lists | world visits of the last 365 days on public worlds (`maps.is_public`) | ALS must beat most-popular by 5 % (ndcg@10) and do no worse than the served version |
  | `"avatars_like_this"` | `UroRecommender.similar_items/4` for an avatar | avatar selections of the last 365 days on public avatars | the same rule, on user lists from the same vectors (a proxy: there is no held-out "similar" truth) |
  | `"popular_now"` | `popular/2`: the worlds the most distinct users visited in the last 7 days | world visits of the last 7 days | none: it is the baseline |

  Each is a map; `config :uro_recommender, UroRecommender.Scheduler, models: %{...}` (or the
  Scheduler's `:models` option) overrides keys of a named one, adds a new name with a full
  map, or disables one with `false`:

      config :uro_recommender, UroRecommender.Scheduler,
        models: %{
          "worlds_you_may_like" => %{half_life_days: 30, params: %{embed_size: 64}},
          "avatars_like_this" => false
        }

  Keys: `serve` (`:recommend`, `:similar_items`, `:popular`), `kind` (`:world`, `:avatar`,
  `:prop`), `algorithm` and `params` (the port's `train` spec), `since_days` (the window),
  `half_life_days` (`nil`: every interaction weighs its `label`; a number: weighted by
  `2^(-age / half_life)`, so last month's visits count more than last year's), `public_only`
  (join the content table and keep `is_public` rows), `table` (the interactions table),
  `sql` (a query of your own returning `user, item, label, time`, one row per pair; replaces
  the generated one), `holdout` (each user's latest pairs held out for the gate) and
  `min_items` (only users with at least this many pairs have pairs held out), `gate`,
  `metric` (`:ndcg`, `:precision`, `:recall` or `:map`), `k`, `margin` (over most-popular),
  `current_margin` (over the served version), `export` (`false`, or the port's `export`
  options).

  The generated SQL for "worlds you may like" (`sql/1`), one row per (user, world): the
  summed weight, and the first visit's time, which is what the held-out split orders by
  (each user's latest *discoveries* are held out, not a revisit of a world they knew):

      SELECT i.user_id, i.item_id, CAST(sum(i.label * 1.0) AS FLOAT8) AS label, min(i.created_at) AS t
      FROM uro_rec_interactions AS i JOIN maps AS c ON c.id = i.item_id
      WHERE i.item_kind = 'world' AND i.created_at > now() - INTERVAL '365 days' AND c.is_public
      GROUP BY i.user_id, i.item_id

  With `half_life_days: 30` the label is `sum(i.label * exp(-ln 2 * age_seconds / 2592000))`.
  `split/1` wraps it into the held-out split by time:

      iex> config = UroRecommender.Models.get!("worlds_you_may_like", %{"worlds_you_may_like" => %{half_life_days: 30}})
      iex> UroRecommender.Models.sql(config) =~ "exp(-0.6931471805599453 * CAST(extract(epoch FROM (now() - i.created_at)) AS FLOAT8) / 2592000.0)"
      true
      iex> {{:sql, train, []}, {:sql, held_out, []}} = UroRecommender.Models.split(config)
      iex> {train =~ "WHERE NOT (uro_rec_pos <= 1 AND uro_rec_n >= 3)", held_out =~ "WHERE uro_rec_pos <= 1 AND uro_rec_n >= 3"}
      {true, true}
  """

  @typedoc "A model configuration (see the moduledoc)."
  @type t :: %{required(:name) => String.t(), optional(atom()) => term()}

  @common %{
    algorithm: "ALS",
    since_days: 365,
    half_life_days: nil,
    public_only: true,
    table: "uro_rec_interactions",
    sql: nil,
    holdout: 1,
    min_items: 3,
    gate: true,
    metric: :ndcg,
    k: 10,
    margin: 0.05,
    current_margin: 0.0,
    export: false
  }

  @als %{embed_size: 32, n_epochs: 15, reg: 0.5, alpha: 10, seed: 42}

  @defaults %{
    "worlds_you_may_like" =>
      Map.merge(@common, %{serve: :recommend, kind: :world, params: @als, export: %{n: 20}}),
    "avatars_like_this" =>
      Map.merge(@common, %{serve: :similar_items, kind: :avatar, params: @als}),
    "popular_now" =>
      Map.merge(@common, %{
        serve: :popular,
        kind: :world,
        since_days: 7,
        public_only: true,
        # Trained only for its popularity order (the cold-start list): the smallest ALS.
        params: %{embed_size: 2, n_epochs: 1, seed: 42},
        holdout: 0,
        gate: false,
        export: %{users: ["*"], n: 50}
      })
  }

  @keys Map.keys(@defaults["worlds_you_may_like"])
  @content %{world: "maps", avatar: "avatars", prop: "props"}

  @doc "The pseudo-user whose cold-start list is the popular list (`popular/2`, the export)."
  def anyone, do: "*"

  @doc "The configurations, with `overrides` applied (see the moduledoc), sorted by name."
  @spec all(map()) :: [t()]
  def all(overrides \\ %{}) do
    @defaults
    |> Map.merge(overrides, fn
      _name, _default, false -> false
      _name, default, over when is_map(over) -> Map.merge(default, over)
    end)
    |> Enum.reject(fn {_name, config} -> config == false end)
    |> Enum.map(fn {name, config} -> check!(name, Map.merge(@common, config)) end)
    |> Enum.sort_by(& &1.name)
  end

  @doc "One configuration by name (with `overrides`); raises `ArgumentError` if there is none."
  @spec get!(String.t(), map()) :: t()
  def get!(name, overrides \\ %{}) do
    Enum.find(all(overrides), &(&1.name == name)) ||
      raise ArgumentError, "no model configuration named #{inspect(name)}"
  end

  defp check!(name, config) do
    case Map.keys(config) -- @keys do
      [] -> :ok
      unknown -> raise ArgumentError, "model #{name}: unknown keys #{inspect(unknown)}"
    end

    unless config[:serve] in [:recommend, :similar_items, :popular] and
             Map.has_key?(@content, config[:kind]) and
             config.metric in [:ndcg, :precision, :recall, :map] do
      raise ArgumentError, "model #{name}: serve, kind or metric is not one of the known values"
    end

    Map.put(config, :name, name)
  end

  @doc "The training query of a configuration: `user, item, label, time`, one row per pair."
  @spec sql(t()) :: String.t()
  def sql(%{sql: sql}) when is_binary(sql), do: sql

  def sql(config) do
    decay =
      case config.half_life_days do
        nil ->
          "1.0"

        days ->
          seconds = :erlang.float_to_binary(days * 86_400.0, decimals: 1)

          "exp(-0.6931471805599453 * CAST(extract(epoch FROM (now() - i.created_at)) AS FLOAT8) / #{seconds})"
      end

    {join, public} =
      if config.public_only,
        do: {" JOIN #{@content[config.kind]} AS c ON c.id = i.item_id", " AND c.is_public"},
        else: {"", ""}

    """
    SELECT i.user_id, i.item_id, CAST(sum(i.label * #{decay}) AS FLOAT8) AS label, min(i.created_at) AS t
    FROM #{config.table} AS i#{join}
    WHERE i.item_kind = '#{config.kind}' AND i.created_at > now() - INTERVAL '#{config.since_days} days'#{public}
    GROUP BY i.user_id, i.item_id\
    """
  end

  @doc """
  The held-out split by time, as two sources: `{train, held_out}`. Each user with at least
  `min_items` pairs has their `holdout` latest pairs (by first visit; ties by item) in
  `held_out` and the rest in `train`; other users are all in `train`. With `holdout: 0`,
  `held_out` is `nil`.
  """
  @spec split(t()) :: {{:sql, String.t(), []}, {:sql, String.t(), []} | nil}
  def split(%{holdout: 0} = config), do: {{:sql, sql(config), []}, nil}

  def split(config) do
    ranked = """
    SELECT user_id, item_id, label, t FROM (
      SELECT q.user_id, q.item_id, q.label, q.t,
             row_number() OVER (PARTITION BY q.user_id ORDER BY q.t DESC, q.item_id) AS uro_rec_pos,
             count(*) OVER (PARTITION BY q.user_id) AS uro_rec_n
      FROM (#{sql(config)}) AS q (user_id, item_id, label, t)
    ) AS s
    """

    held = "uro_rec_pos <= #{config.holdout} AND uro_rec_n >= #{config.min_items}"
    {{:sql, ranked <> "WHERE NOT (#{held})", []}, {:sql, ranked <> "WHERE #{held}", []}}
  end

  @doc """
  The popular list of a `serve: :popular` model: the `n` items the most distinct users had in
  its window, most popular first, less `:exclude` (a user's visited worlds, say). Options:
  `:name` (default `"popular_now"`), `:exclude`, `:pool`, `:timeout`.
  """
  @spec popular(non_neg_integer(), keyword()) :: {:ok, [String.t()]} | {:error, term()}
  def popular(n, opts \\ []) do
    {name, opts} = Keyword.pop(opts, :name, "popular_now")
    UroRecommender.recommend(name, anyone(), n, opts)
  end
end
