-- The daily quota is counted with the jobs themselves: `counted_on` is the UTC day a job counts against
-- (the day it was queued: at submit, or at its promotion when it was scheduled), set in the same write that
-- creates or promotes it, so a refused submit counts nothing and a Redis loss resets nothing.
ALTER TABLE jobs ADD COLUMN counted_on date;
-- Jobs of the last day keep counting across the upgrade (the counters lived in Redis until now).
UPDATE jobs SET counted_on = (created_at AT TIME ZONE 'UTC')::date
 WHERE status <> 'scheduled' AND created_at >= now() - interval '1 day';
CREATE INDEX jobs_user_counted_on_idx ON jobs (user_id, counted_on) WHERE counted_on IS NOT NULL;
CREATE INDEX jobs_user_scheduled_idx ON jobs (user_id) WHERE status = 'scheduled';
