DROP INDEX jobs_user_scheduled_idx;
DROP INDEX jobs_user_counted_on_idx;
ALTER TABLE jobs DROP COLUMN counted_on;
