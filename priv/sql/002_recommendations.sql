-- Top-N lists written by {export, Name, Opts}: one row per (model, user, rank). Ids are
-- stored as text (UUIDs in canonical form, integers in decimal) so one table serves every
-- model. Re-running an export replaces a user's list in one transaction.
CREATE TABLE IF NOT EXISTS uro_rec_recommendations (
    model         TEXT        NOT NULL,
    user_id       TEXT        NOT NULL,
    rank          INT8        NOT NULL,
    item_id       TEXT        NOT NULL,
    score         FLOAT8      NOT NULL,
    model_version INT8        NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (model, user_id, rank)
);
