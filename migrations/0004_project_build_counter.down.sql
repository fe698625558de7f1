ALTER TABLE projects DROP COLUMN last_build_version;
