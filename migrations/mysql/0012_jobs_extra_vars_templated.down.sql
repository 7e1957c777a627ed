ALTER TABLE jobs DROP COLUMN extra_vars_templated;
