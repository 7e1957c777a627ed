ALTER TABLE servers DROP COLUMN host_vars;
