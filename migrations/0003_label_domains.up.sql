-- The label lists of jobs as domains instead of table CHECK constraints. Postgres re-reads a table's CHECK
-- constraints from their stored text on every INSERT and UPDATE (9-12% of its CPU per job in the bench: the
-- lists are long); a domain's check is read once per session, and only assigned columns are checked.
-- The lists are the domain's enums (`JobStatus`, `Tier`, `SandboxState`); a test checks that they agree.
CREATE DOMAIN job_status AS text
    CHECK (VALUE IN ('queued', 'starting', 'scaffold', 'code', 'deps', 'checks', 'ready', 'failed', 'scheduled'));
CREATE DOMAIN job_tier AS text
    CHECK (VALUE IN ('bootstrapper', 'partner', 'cto_scale'));
CREATE DOMAIN job_sandbox_state AS text
    CHECK (VALUE IN ('none', 'running', 'pausing', 'paused', 'resuming', 'pause_failed', 'expired', 'killed'));

ALTER TABLE jobs
    DROP CONSTRAINT jobs_status_check,
    DROP CONSTRAINT jobs_tier_check,
    DROP CONSTRAINT jobs_sandbox_state_check,
    ALTER COLUMN status TYPE job_status,
    ALTER COLUMN tier TYPE job_tier,
    ALTER COLUMN sandbox_state TYPE job_sandbox_state;
