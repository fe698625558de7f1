DROP INDEX jobs_status_created_idx;
CREATE INDEX jobs_status_idx ON jobs (status);
