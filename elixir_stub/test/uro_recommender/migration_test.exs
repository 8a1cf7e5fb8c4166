defmodule UroRecommender.MigrationTest do
  # The Ecto migration uro copies and the SQL files apply_schema runs must make the same
  # tables. Each is applied to a fresh database holding uro's `users` table (the migration as
  # the SQL ecto_sql would send, UroRecommender.MigrationDDL; the files through the port's
  # apply_schema, schema: :uro), and the two catalogs are compared: columns with their types,
  # nullability and defaults, constraints (keys, the foreign key, the check), indexes.
  use ExUnit.Case, async: false

  import ExUnit.CaptureLog
  import UroRecommender.TestHelpers

  alias UroRecommender.{MigrationDDL, UroFixture}

  @moduletag timeout: 300_000
  @migration Path.expand(
               "../../priv/repo/migrations/20261128000000_create_uro_rec_tables.exs",
               __DIR__
             )
  @users "CREATE TABLE users (id uuid PRIMARY KEY, email varchar(255) NOT NULL)"

  test "the migration and priv/sql (uro's variant first) make the same tables" do
    {disabled, statements} = MigrationDDL.statements(@migration)
    assert disabled, "the migration must say @disable_ddl_transaction true (CockroachDB)"

    from_migration = UroFixture.create_database("migration")
    from_files = UroFixture.create_database("sqlfiles")

    try do
      UroFixture.psql!(from_migration, @users)
      # Statement by statement, outside a transaction, as Ecto runs it with the DDL
      # transaction disabled.
      for statement <- statements, do: UroFixture.psql!(from_migration, statement)

      UroFixture.psql!(from_files, @users)
      pool = UroRecommender.MigrationPool

      start_supervised!(
        {UroRecommender,
         name: pool,
         port_path: port_path(),
         model_dir: tmp_dir("migration"),
         pool_size: 1,
         database_url: from_files}
      )

      capture_log(fn -> send(self(), UroRecommender.apply_schema(pool: pool, schema: :uro)) end)
      assert_received {:ok, ["uro/001_interactions.sql" | _]}
      stop_supervised!(pool)

      migration = catalog(from_migration)
      files = catalog(from_files)
      assert migration.columns != []
      assert migration.columns == files.columns
      assert migration.constraints == files.constraints
      assert migration.indexes == files.indexes

      # What uro needs of it: the user a foreign key that deletes with the user.
      assert [
               "uro_rec_interactions",
               "uro_rec_interactions_user_id_fkey",
               "f",
               "FOREIGN KEY (user_id) REFERENCES users(id) ON DELETE CASCADE"
             ] in files.constraints
    after
      UroFixture.drop_database(from_migration)
      UroFixture.drop_database(from_files)
    end
  end

  test "the generic files keep working without uro's users table" do
    db = UroFixture.create_database("generic")

    try do
      pool = UroRecommender.GenericSchemaPool

      start_supervised!(
        {UroRecommender,
         name: pool,
         port_path: port_path(),
         model_dir: tmp_dir("generic"),
         pool_size: 1,
         database_url: db}
      )

      capture_log(fn -> send(self(), UroRecommender.apply_schema(pool: pool)) end)
      assert_received {:ok, ["001_interactions.sql", _, _, "004_scheduler.sql"]}

      assert [["text"]] =
               UroFixture.psql!(
                 db,
                 "SELECT data_type FROM information_schema.columns WHERE table_name = " <>
                   "'uro_rec_interactions' AND column_name = 'user_id'"
               )

      stop_supervised!(pool)
    after
      UroFixture.drop_database(db)
    end
  end

  defp catalog(db) do
    %{
      columns:
        UroFixture.psql!(db, """
        SELECT table_name, column_name, data_type, is_nullable, coalesce(column_default, '')
        FROM information_schema.columns WHERE table_name LIKE 'uro_rec%' ORDER BY 1, 2
        """),
      constraints:
        UroFixture.psql!(db, """
        SELECT t.relname, c.conname, c.contype, pg_get_constraintdef(c.oid)
        FROM pg_constraint AS c JOIN pg_class AS t ON t.oid = c.conrelid
        WHERE t.relname LIKE 'uro_rec%' ORDER BY 1, 2
        """),
      indexes:
        UroFixture.psql!(db, """
        SELECT tablename, indexname, indexdef FROM pg_indexes
        WHERE tablename LIKE 'uro_rec%' ORDER BY 1, 2
        """)
    }
  end
end
