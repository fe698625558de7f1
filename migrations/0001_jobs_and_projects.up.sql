-- The durable records: projects and their generation jobs.
CREATE TABLE projects (
    id         uuid PRIMARY KEY,
    user_id    text        NOT NULL,
    name       text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX projects_user_created_idx ON projects (user_id, created_at);

CREATE TABLE jobs (
    id               uuid PRIMARY KEY,
    project_id       uuid        NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    user_id          text        NOT NULL,
    tier             text        NOT NULL,
    goal             text        NOT NULL,
    status           text        NOT NULL,
    status_message   text,
    error_message    text,
    debug_id         text,
    attempts         int         NOT NULL DEFAULT 0,
    sandbox_id       text,
    preview_url      text,
    workspace_path   text,
    build_version    text,
    enqueued_at      timestamptz,
    started_at       timestamptz,
    completed_at     timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    duration_seconds int,
    CONSTRAINT jobs_status_check CHECK (status IN
        ('queued', 'starting', 'scaffold', 'code', 'deps', 'checks', 'ready', 'failed', 'scheduled')),
    CONSTRAINT jobs_tier_check CHECK (tier IN ('bootstrapper', 'partner', 'cto_scale'))
);
CREATE INDEX jobs_user_created_idx ON jobs (user_id, created_at);
CREATE INDEX jobs_project_status_idx ON jobs (project_id, status);
CREATE INDEX jobs_status_idx ON jobs (status);
CREATE UNIQUE INDEX jobs_project_build_version_key ON jobs (project_id, build_version)
    WHERE build_version IS NOT NULL;
