-- The model registry: {publish, Name, Opts} stores a saved version here, {load, Name,
-- #{from => database}} fetches it on any node. Files are split into chunks of about 1 MiB
-- because CockroachDB discourages large values.
CREATE TABLE IF NOT EXISTS uro_rec_models (
    name        TEXT        NOT NULL,
    version     INT8        NOT NULL,
    algorithm   TEXT        NOT NULL,
    n_users     INT8        NOT NULL,
    n_items     INT8        NOT NULL,
    metrics     TEXT        NOT NULL DEFAULT '{}',
    checksum    TEXT        NOT NULL,
    total_bytes INT8        NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (name, version)
);
CREATE TABLE IF NOT EXISTS uro_rec_model_chunks (
    name     TEXT  NOT NULL,
    version  INT8  NOT NULL,
    path     TEXT  NOT NULL,
    chunk    INT8  NOT NULL,
    data     BYTEA NOT NULL,
    PRIMARY KEY (name, version, path, chunk)
);
