-- Finished builds' logs, one row per job: the lines as parallel arrays (one TOAST value each, compressed
-- with lz4), so that history survives Redis, the stream's TTL and its cap. Purged after the retention.
CREATE TABLE job_logs (
    job_id      uuid        PRIMARY KEY REFERENCES jobs (id) ON DELETE CASCADE,
    end_status  text        NOT NULL,
    line_count  int         NOT NULL,
    line_ids    text[]      NOT NULL,
    line_ts     timestamptz[] NOT NULL,
    sources     text[]      NOT NULL,
    texts       text[]      COMPRESSION lz4 NOT NULL,
    phases      text[]      COMPRESSION lz4 NOT NULL,
    archived_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX job_logs_archived_at_idx ON job_logs (archived_at);
