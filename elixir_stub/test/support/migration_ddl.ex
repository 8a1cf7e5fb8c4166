defmodule UroRecommender.MigrationDDL do
  @moduledoc """
  The SQL that ecto_sql's Postgres adapter runs for our Ecto migration
  (elixir_stub/priv/repo/migrations/), read from the migration's source without Ecto (Hex is
  out of reach here), for the test that compares it with priv/sql on a real server.

  Only the calls the migration makes are understood: `create`/`create_if_not_exists` of
  `table/2` with `add/3` (types, `primary_key`, `null`, `default` and `fragment/1`,
  `references/2` with `type` and `on_delete: :delete_all`), of `index/2` and of
  `constraint/3` with `check`. Anything else raises, so the test cannot silently skip a part
  of the migration. Types follow ecto_sql's `Ecto.Adapters.Postgres.Connection`: an atom is
  its own name (`:uuid`, `:text`, `:bigint`, `:timestamptz`, `:float`, which PostgreSQL
  reads as double precision) but `:binary` (`bytea`) and the datetime types (`timestamp`,
  without time zone); names are quoted, index names are `<table>_<columns>_index`, foreign
  keys `<table>_<column>_fkey`.
  """

  @doc "`{disable_ddl_transaction?, [statement]}` of the migration file at `path`."
  def statements(path) do
    {:defmodule, _, [_name, [do: body]]} = path |> File.read!() |> Code.string_to_quoted!()
    forms = block(body)

    disabled = Enum.any?(forms, &match?({:@, _, [{:disable_ddl_transaction, _, [true]}]}, &1))

    [change] = for {:def, _, [{:change, _, _}, [do: change]]} <- forms, do: change
    {disabled, Enum.flat_map(block(change), &statement/1)}
  end

  defp block({:__block__, _, forms}), do: forms
  defp block(form), do: [form]

  defp statement({create, _, [{:table, _, [name | opts]}, [do: body]]})
       when create in [:create, :create_if_not_exists] do
    opts = List.first(opts, [])
    false = Keyword.get(opts, :primary_key, true)
    columns = Enum.map(block(body), &column(name, &1))
    keys = for {{col, _}, true} <- columns, do: quote_name(col)
    defs = Enum.map(columns, fn {{_, sql}, _} -> sql end)
    defs = if keys == [], do: defs, else: defs ++ ["PRIMARY KEY (#{Enum.join(keys, ", ")})"]
    ["CREATE TABLE #{exists(create)}#{quote_name(name)} (#{Enum.join(defs, ", ")})"]
  end

  defp statement({create, _, [{:index, _, [table, cols]}]})
       when create in [:create, :create_if_not_exists] do
    index = Enum.join([table | cols], "_") <> "_index"
    quoted = Enum.map_join(cols, ", ", &quote_name/1)
    ["CREATE INDEX #{exists(create)}#{quote_name(index)} ON #{quote_name(table)} (#{quoted})"]
  end

  defp statement({:create, _, [{:constraint, _, [table, name, [check: check]]}]}),
    do: ["ALTER TABLE #{quote_name(table)} ADD CONSTRAINT #{quote_name(name)} CHECK (#{check})"]

  defp statement(other), do: raise("not understood in the migration: #{Macro.to_string(other)}")

  defp quote_name(name), do: "\"#{name}\""

  defp exists(:create_if_not_exists), do: "IF NOT EXISTS "
  defp exists(:create), do: ""

  defp column(table, {:add, _, [name, type | opts]}) do
    opts = List.first(opts, [])

    parts =
      [quote_name(name), type(table, name, type)] ++
        if(Keyword.has_key?(opts, :default), do: ["DEFAULT " <> default(opts[:default])], else: []) ++
        if(opts[:null] == false, do: ["NOT NULL"], else: [])

    {{name, Enum.join(parts, " ")}, Keyword.get(opts, :primary_key, false)}
  end

  defp type(table, column, {:references, _, [to, opts]}) do
    [type: type, on_delete: :delete_all] = opts

    "#{type(table, column, type)} CONSTRAINT #{quote_name("#{table}_#{column}_fkey")} " <>
      "REFERENCES #{quote_name(to)}(\"id\") ON DELETE CASCADE"
  end

  defp type(_table, _column, :binary), do: "bytea"

  defp type(_table, _column, t)
       when t in [:utc_datetime, :utc_datetime_usec, :naive_datetime, :naive_datetime_usec],
       do: "timestamp"

  defp type(_table, _column, t) when is_atom(t), do: Atom.to_string(t)

  defp default({:fragment, _, [sql]}), do: sql
  defp default(s) when is_binary(s), do: "'" <> String.replace(s, "'", "''") <> "'"
  defp default(n) when is_number(n), do: to_string(n)
end
