DROP TRIGGER IF EXISTS jobs_sandbox_billing ON jobs;
DROP FUNCTION IF EXISTS jobs_sandbox_billing();
ALTER TABLE jobs
    DROP COLUMN IF EXISTS sandbox_billed_seconds,
    DROP COLUMN IF EXISTS sandbox_billing_since,
    DROP COLUMN IF EXISTS sandbox_visited_seconds;
