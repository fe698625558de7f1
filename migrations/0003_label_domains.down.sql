ALTER TABLE jobs
    ALTER COLUMN status TYPE text,
    ALTER COLUMN tier TYPE text,
    ALTER COLUMN sandbox_state TYPE text,
    ADD CONSTRAINT jobs_status_check CHECK (status IN
        ('queued', 'starting', 'scaffold', 'code', 'deps', 'checks', 'ready', 'failed', 'scheduled')),
    ADD CONSTRAINT jobs_tier_check CHECK (tier IN ('bootstrapper', 'partner', 'cto_scale')),
    ADD CONSTRAINT jobs_sandbox_state_check CHECK (sandbox_state IN
        ('none', 'running', 'pausing', 'paused', 'resuming', 'pause_failed', 'expired', 'killed'));
DROP DOMAIN job_sandbox_state;
DROP DOMAIN job_tier;
DROP DOMAIN job_status;
