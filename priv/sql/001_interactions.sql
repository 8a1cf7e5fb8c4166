-- Example interactions table: what uro records when a user visits a world, wears an avatar,
-- or spawns a prop. Train with {sql, <<"SELECT user_id, item_id, label, created_at FROM
-- uro_rec_interactions">>, []}. Valid on CockroachDB v23.2+ and PostgreSQL 13+.
CREATE TABLE IF NOT EXISTS uro_rec_interactions (
    id          UUID        NOT NULL DEFAULT gen_random_uuid(),
    user_id     TEXT        NOT NULL,
    item_id     TEXT        NOT NULL,
    item_kind   TEXT        NOT NULL DEFAULT 'world',
    label       FLOAT8      NOT NULL DEFAULT 1.0,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (id)
);
CREATE INDEX IF NOT EXISTS uro_rec_interactions_user ON uro_rec_interactions (user_id);
