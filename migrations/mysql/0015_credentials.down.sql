DROP TABLE job_credentials;
DROP TABLE project_vault_credentials;
ALTER TABLE projects DROP FOREIGN KEY fk_projects_git_credential_id, DROP KEY ix_projects_git_credential_id, DROP COLUMN git_credential_id;
ALTER TABLE servers
    DROP FOREIGN KEY fk_servers_ssh_credential_id, DROP FOREIGN KEY fk_servers_become_credential_id,
    DROP KEY ix_servers_ssh_credential_id, DROP KEY ix_servers_become_credential_id,
    DROP COLUMN ssh_credential_id, DROP COLUMN become_credential_id;
DROP TABLE credentials;
