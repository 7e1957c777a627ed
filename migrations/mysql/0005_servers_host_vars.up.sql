-- Ansible host variables for the server's inventory entry (a JSON object or NULL).
ALTER TABLE servers ADD COLUMN host_vars JSON NULL;
