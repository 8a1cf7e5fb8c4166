-- The scheduler's rows (UroRecommender.Scheduler, python/uro_rec/cluster.py): one lease per
-- cluster instead of an advisory lock (CockroachDB has none), the version of each model every
-- node is to serve, a row per run, and the users forget_user removed (so that a run that read
-- their rows before the removal cannot write their lists back, and a buffered visit recorded
-- before it is not inserted after it). Valid on CockroachDB v23.2+ and PostgreSQL 13+.
CREATE TABLE IF NOT EXISTS uro_rec_leases (
    name        TEXT        NOT NULL,
    holder      TEXT        NOT NULL,
    expires_at  TIMESTAMPTZ NOT NULL,
    done_at     TIMESTAMPTZ,
    PRIMARY KEY (name)
);
CREATE TABLE IF NOT EXISTS uro_rec_served (
    name        TEXT        NOT NULL,
    version     INT8        NOT NULL,
    run_id      UUID,
    served_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (name)
);
CREATE TABLE IF NOT EXISTS uro_rec_runs (
    id              UUID        NOT NULL DEFAULT gen_random_uuid(),
    model           TEXT        NOT NULL,
    version         INT8,
    current_version INT8,
    decision        TEXT        NOT NULL,
    reason          TEXT        NOT NULL DEFAULT '',
    metrics         TEXT        NOT NULL DEFAULT '{}',
    baseline        TEXT        NOT NULL DEFAULT '{}',
    current_metrics TEXT        NOT NULL DEFAULT '{}',
    train_ms        INT8,
    evaluate_ms     INT8,
    publish_ms      INT8,
    export_ms       INT8,
    error           TEXT,
    node            TEXT        NOT NULL DEFAULT '',
    started_at      TIMESTAMPTZ NOT NULL,
    finished_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (id)
);
CREATE INDEX IF NOT EXISTS uro_rec_runs_model_started_at_index ON uro_rec_runs (model, started_at);
CREATE TABLE IF NOT EXISTS uro_rec_forgotten (
    user_id      TEXT        NOT NULL,
    forgotten_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id)
);
