-- The number of the project's latest build (build_v0_N), so that READY takes the next one in the same
-- statement, incrementing it under the project row's lock, instead of reading every READY version of the
-- project (linear in its builds, on every READY and every submit).
ALTER TABLE projects ADD COLUMN last_build_version int NOT NULL DEFAULT 0;
UPDATE projects p SET last_build_version = v.n
FROM (
    SELECT project_id, max(substring(build_version FROM '^build_v0_([0-9]+)$')::int) AS n
    FROM jobs
    WHERE status = 'ready' AND build_version IS NOT NULL
    GROUP BY project_id
) v
WHERE v.project_id = p.id AND v.n IS NOT NULL;
