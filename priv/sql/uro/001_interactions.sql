-- uro's interactions table: what UroRecommender.Interactions.record/4 writes when a user visits a
-- world (MapController.show), selects an avatar or spawns a prop. The same table, column for
-- column and index for index, as elixir_stub/priv/repo/migrations/ creates (a test compares
-- the two on a real server); apply it with UroRecommender.apply_schema(schema: :uro), which runs
-- this directory before priv/sql/. It needs uro's `users` table (UUID ids).
--   user_id:   the user, deleted with them (ON DELETE CASCADE)
--   item_kind: 'world' (maps.id), 'avatar' (avatars.id) or 'prop' (props.id)
--   item_id:   that row's id (no foreign key: one column names rows of three tables)
--   label:     the weight given to record/4 (1.0 a visit)
-- Valid on CockroachDB v23.2+ and PostgreSQL 13+.
CREATE TABLE IF NOT EXISTS uro_rec_interactions (
    id          UUID        NOT NULL DEFAULT gen_random_uuid(),
    user_id     UUID        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    item_id     UUID        NOT NULL,
    item_kind   TEXT        NOT NULL DEFAULT 'world',
    label       FLOAT8      NOT NULL DEFAULT 1.0,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (id),
    CONSTRAINT uro_rec_interactions_item_kind_check CHECK (item_kind IN ('world', 'avatar', 'prop'))
);
CREATE INDEX IF NOT EXISTS uro_rec_interactions_user_id_created_at_index
    ON uro_rec_interactions (user_id, created_at);
CREATE INDEX IF NOT EXISTS uro_rec_interactions_item_kind_created_at_index
    ON uro_rec_interactions (item_kind, created_at);
