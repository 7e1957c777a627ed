DROP INDEX ix_jobs_revision_id;
ALTER TABLE jobs DROP COLUMN revision_id;
DROP INDEX ix_playbooks_project_id;
ALTER TABLE playbooks DROP COLUMN project_id;
DROP TABLE project_revisions;
DROP TABLE projects;
