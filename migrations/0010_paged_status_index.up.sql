-- The reconciler pages through every job of a status in (created_at, id) order: the status index carries
-- that order, so each page is an index range instead of a sort of every row with the status.
DROP INDEX jobs_status_idx;
CREATE INDEX jobs_status_created_idx ON jobs (status, created_at, id);
