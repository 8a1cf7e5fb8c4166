defmodule UroRecommender.UroFixture do
  @moduledoc """
  uro's shape in a database of its own, for the tests of the whole pipeline and for `make demo`:
  `users`, `maps`, `avatars` and `props` as uro's migrations make them (UUID keys, `uploader_id`,
  `is_public`, Ecto's timestamps), then people with a known taste.

  The taste structure: worlds come in themes (six of them, twenty worlds each), and each user
  has a home theme: 85 % of their visits go to worlds of that theme (mildly skewed towards its
  first worlds), the rest to any world by global popularity; their avatars come from the same
  theme. A recommender that learns the themes beats "most popular" by far on this; with
  `taste: false` every visit follows global popularity alone, and nothing beats most-popular.

  Plain Elixir (psql for SQL), no ExUnit: `bench/uro_demo.exs` requires this file too.
  """

  @themes [
    "Neon City",
    "Forest Shrine",
    "Space Station",
    "Beach Club",
    "Haunted Manor",
    "Racing Track"
  ]
  @worlds_per_theme 20
  @avatars_per_theme 6

  @uro_tables """
  CREATE TABLE users (
    id uuid PRIMARY KEY, email varchar(255) NOT NULL, password_hash varchar(255),
    username varchar(255), display_name varchar(255), email_notifications boolean DEFAULT false,
    icon varchar(255), banner varchar(255), biography varchar(255), status varchar(255),
    status_message varchar(255), email_confirmed_at timestamp(0), locked_at timestamp(0),
    created_at timestamp(0) NOT NULL, updated_at timestamp(0) NOT NULL);
  CREATE UNIQUE INDEX users_username_index ON users (username);
  CREATE UNIQUE INDEX users_email_index ON users (email);
  """

  @content_table """
  CREATE TABLE TABLE_NAME (
    id uuid PRIMARY KEY, name varchar(255), description text, user_content_data varchar(255),
    uploader_id uuid REFERENCES users(id), user_content_preview varchar(255),
    is_public boolean DEFAULT false NOT NULL,
    inserted_at timestamp(0) NOT NULL, updated_at timestamp(0) NOT NULL);
  """

  @doc "The server the tests use (`URO_REC_TEST_PG`, default the local one)."
  def server, do: System.get_env("URO_REC_TEST_PG", "postgresql://postgres@127.0.0.1:5432")

  @doc """
  Creates a database of its own on the server of `base` (a URL whose database the new one's
  `CREATE DATABASE` runs in; default the test server's `postgres`); returns the new one's URL
  (`base` with its database replaced, query parameters kept).
  """
  def create_database(tag, base \\ server() <> "/postgres") do
    name = "uro_rec_#{tag}_#{System.unique_integer([:positive])}_#{System.pid()}"
    psql!(base, "CREATE DATABASE #{name}")
    URI.to_string(%{URI.parse(base) | path: "/" <> name})
  end

  @doc "Drops a database `create_database/2` made (its connections first), from `base`."
  def drop_database(url, base \\ server() <> "/postgres") do
    name = String.trim_leading(URI.parse(url).path, "/")

    psql!(
      base,
      "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '#{name}'"
    )

    psql!(base, "DROP DATABASE IF EXISTS #{name}")
  end

  @doc "Runs SQL with psql; the rows as lists of strings."
  def psql!(url, sql) do
    case System.cmd("psql", [url, "-qAt", "-F", "\t", "-v", "ON_ERROR_STOP=1", "-c", sql],
           stderr_to_stdout: true
         ) do
      {out, 0} -> for line <- String.split(out, "\n", trim: true), do: String.split(line, "\t")
      {out, status} -> raise "psql exited with #{status}: #{out}\n#{sql}"
    end
  end

  @doc """
  uro's tables with `n_users` users, the themed worlds (one private world per theme, which
  must never be recommended) and avatars. Returns `%{users, worlds, avatars}`: each a list of
  `%{id, name, theme}` (users: `%{id, name, theme}` with their home theme).
  """
  def create_uro_schema(url, n_users, seed \\ 1) do
    :rand.seed(:exsss, {seed, 7, 11})
    psql!(url, @uro_tables)

    for t <- ["maps", "avatars", "props"],
        do: psql!(url, String.replace(@content_table, "TABLE_NAME", t))

    users =
      for u <- 1..n_users,
          do: %{
            id: UroRecommender.UUID.generate(),
            name: "player#{u}",
            theme: rem(u, length(@themes))
          }

    worlds = content(@worlds_per_theme, fn t, i -> "#{Enum.at(@themes, t)} #{i}" end)

    avatars =
      content(@avatars_per_theme, fn t, i ->
        "#{hd(String.split(Enum.at(@themes, t)))} Avatar #{i}"
      end)

    owner = hd(users).id

    insert!(
      url,
      "users",
      "id, email, username, created_at, updated_at",
      for(u <- users, do: "'#{u.id}', '#{u.name}@example.org', '#{u.name}', now(), now()")
    )

    for {table, rows} <- [{"maps", worlds}, {"avatars", avatars}] do
      insert!(
        url,
        table,
        "id, name, uploader_id, is_public, inserted_at, updated_at",
        for(r <- rows, do: "'#{r.id}', '#{r.name}', '#{owner}', #{r.public}, now(), now()")
      )
    end

    %{users: users, worlds: worlds, avatars: avatars}
  end

  # Per theme: `per` public items, then one private one (named "... (private)").
  defp content(per, name) do
    for t <- 0..(length(@themes) - 1), i <- 1..(per + 1) do
      private = i == per + 1
      label = if private, do: name.(t, 1) <> " (private)", else: name.(t, i)
      %{id: UroRecommender.UUID.generate(), name: label, theme: t, rank: i, public: not private}
    end
  end

  defp insert!(url, table, cols, values) do
    values
    |> Enum.chunk_every(500)
    |> Enum.each(fn chunk ->
      psql!(url, "INSERT INTO #{table} (#{cols}) VALUES (" <> Enum.join(chunk, "), (") <> ")")
    end)
  end

  @doc """
  Each user's world visits and avatar selections, in the order they happen: round by round,
  every user makes their next visit, so each user's visits are spread over the whole
  timeline. `[{user, :world | :avatar, item}]`. Options: `:taste` (default true, see the
  moduledoc), `:visits` (`{min, max}` distinct worlds per user, default `{6, 14}`),
  `:revisits` (share of visits that return to a world already visited, default 0.2), `:seed`.
  """
  def visits(%{users: users, worlds: worlds, avatars: avatars}, opts \\ []) do
    :rand.seed(:exsss, {Keyword.get(opts, :seed, 1), 3, 5})
    taste = Keyword.get(opts, :taste, true)
    {lo, hi} = Keyword.get(opts, :visits, {6, 14})
    public = Enum.filter(worlds, & &1.public)
    global = weights(public, fn w -> 1 / w.rank end)

    plans =
      for user <- users do
        home = Enum.filter(public, &(&1.theme == user.theme))
        home_w = weights(home, fn w -> 1 / :math.sqrt(w.rank) end)
        n = lo + :rand.uniform(hi - lo + 1) - 1

        seen =
          distinct(n, fn ->
            if taste and :rand.uniform() < 0.85, do: pick(home_w), else: pick(global)
          end)

        picks = revisit(seen, Keyword.get(opts, :revisits, 0.2))
        mine = Enum.filter(avatars, &(&1.public and &1.theme == user.theme))
        chosen = Enum.take_random(mine, 3)
        {user, Enum.map(picks, &{:world, &1}) ++ Enum.map(chosen, &{:avatar, &1})}
      end

    rounds = plans |> Enum.map(fn {_, p} -> length(p) end) |> Enum.max()

    for r <- 0..(rounds - 1), {user, picks} <- plans, r < length(picks) do
      {kind, item} = Enum.at(picks, r)
      {user, kind, item}
    end
  end

  defp weights(items, w) do
    total = items |> Enum.map(w) |> Enum.sum()

    {cdf, _} =
      Enum.map_reduce(items, 0.0, fn i, acc -> {{acc + w.(i) / total, i}, acc + w.(i) / total} end)

    cdf
  end

  defp pick(cdf) do
    x = :rand.uniform()
    Enum.find_value(cdf, elem(List.last(cdf), 1), fn {c, item} -> if c >= x, do: item end)
  end

  defp distinct(n, draw, acc \\ []) do
    cond do
      length(acc) == n ->
        Enum.reverse(acc)

      true ->
        item = draw.()
        if item in acc, do: distinct(n, draw, acc), else: distinct(n, draw, [item | acc])
    end
  end

  # Some visits go back to a world already visited (after its first visit).
  defp revisit(seen, share) do
    Enum.flat_map(Enum.with_index(seen), fn {w, i} ->
      if i > 0 and :rand.uniform() < share,
        do: [w, Enum.at(seen, :rand.uniform(i) - 1)],
        else: [w]
    end)
  end

  @doc "Themes by index, for printing."
  def theme(i), do: Enum.at(@themes, i)
end
