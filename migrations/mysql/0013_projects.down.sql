ALTER TABLE jobs DROP FOREIGN KEY fk_jobs_revision_id, DROP KEY ix_jobs_revision_id, DROP COLUMN revision_id;
ALTER TABLE playbooks DROP FOREIGN KEY fk_playbooks_project_id, DROP KEY ix_playbooks_project_id, DROP COLUMN project_id;
DROP TABLE project_revisions;
DROP TABLE projects;
