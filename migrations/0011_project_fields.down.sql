ALTER TABLE projects
    DROP CONSTRAINT projects_status_check,
    DROP COLUMN status,
    DROP COLUMN github_repo,
    DROP COLUMN description;
