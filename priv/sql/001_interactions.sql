-- The interactions table for a database without uro's schema (the demo's, the tests', any host
-- whose users are not UUID rows of a `users` table): ids are TEXT and nothing references
-- `users`. uro's own table is priv/sql/uro/001_interactions.sql (the same columns and indexes,
-- UUID ids, the user a foreign key with ON DELETE CASCADE): UroRecommender.apply_schema(schema:
-- :uro) applies that file first, so this one finds the table there and leaves it alone.
-- Written by UroRecommender.Interactions (record_interactions) and by observe's store; trained
-- from by SQL such as SELECT user_id, item_id, label, created_at FROM uro_rec_interactions.
-- Valid on CockroachDB v23.2+ and PostgreSQL 13+.
CREATE TABLE IF NOT EXISTS uro_rec_interactions (
    id          UUID        NOT NULL DEFAULT gen_random_uuid(),
    user_id     TEXT        NOT NULL,
    item_id     TEXT        NOT NULL,
    item_kind   TEXT        NOT NULL DEFAULT 'world',
    label       FLOAT8      NOT NULL DEFAULT 1.0,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (id)
);
-- A user's rows (forget_user, each user's latest rows for the held-out split) and the training
-- scan (one kind of item over a time window).
CREATE INDEX IF NOT EXISTS uro_rec_interactions_user_id_created_at_index
    ON uro_rec_interactions (user_id, created_at);
CREATE INDEX IF NOT EXISTS uro_rec_interactions_item_kind_created_at_index
    ON uro_rec_interactions (item_kind, created_at);
