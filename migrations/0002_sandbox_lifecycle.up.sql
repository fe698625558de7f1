-- The sandbox lifecycle after READY: whether it is paused, its state (compare-and-set by version) and the
-- timestamps the idle re-pause and the reconciler need. sandbox_paused is true exactly when the state is
-- 'paused'; both are always written in one statement.
ALTER TABLE jobs
    ADD COLUMN sandbox_paused        boolean     NOT NULL DEFAULT false,
    ADD COLUMN sandbox_state         text        NOT NULL DEFAULT 'none',
    ADD COLUMN sandbox_state_version bigint      NOT NULL DEFAULT 0,
    ADD COLUMN paused_at             timestamptz,
    ADD COLUMN resumed_at            timestamptz,
    ADD COLUMN last_activity_at      timestamptz,
    ADD CONSTRAINT jobs_sandbox_state_check CHECK (sandbox_state IN
        ('none', 'running', 'pausing', 'paused', 'resuming', 'pause_failed', 'expired', 'killed')),
    ADD CONSTRAINT jobs_sandbox_paused_matches_state CHECK (sandbox_paused = (sandbox_state = 'paused'));

-- The reconciler's work list: READY jobs whose sandbox is live but not paused, failed jobs whose sandbox
-- is still live.
CREATE INDEX jobs_sandbox_attention_idx ON jobs (updated_at)
    WHERE sandbox_id IS NOT NULL
      AND sandbox_state IN ('running', 'pausing', 'pause_failed', 'resuming');
CREATE INDEX jobs_sandbox_id_idx ON jobs (sandbox_id) WHERE sandbox_id IS NOT NULL;
