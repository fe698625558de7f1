-- The project fields the web front end reads: what the founder wrote, a linked repository, and the
-- lifecycle status (soft delete: a deleted project is hidden from the list and takes no new builds).
ALTER TABLE projects
    ADD COLUMN description text NOT NULL DEFAULT '',
    ADD COLUMN github_repo text,
    ADD COLUMN status      text NOT NULL DEFAULT 'active',
    ADD CONSTRAINT projects_status_check CHECK (status IN ('active', 'parked', 'deleted'));
