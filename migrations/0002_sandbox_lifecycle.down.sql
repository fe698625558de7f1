DROP INDEX IF EXISTS jobs_sandbox_id_idx;
DROP INDEX IF EXISTS jobs_sandbox_attention_idx;
ALTER TABLE jobs
    DROP CONSTRAINT IF EXISTS jobs_sandbox_paused_matches_state,
    DROP CONSTRAINT IF EXISTS jobs_sandbox_state_check,
    DROP COLUMN IF EXISTS last_activity_at,
    DROP COLUMN IF EXISTS resumed_at,
    DROP COLUMN IF EXISTS paused_at,
    DROP COLUMN IF EXISTS sandbox_state_version,
    DROP COLUMN IF EXISTS sandbox_state,
    DROP COLUMN IF EXISTS sandbox_paused;
