-- Whether ansible may evaluate templates in the job's extra_vars: only when an admin launched
-- it with `admin_launch_vars_templates` on. Otherwise (the default, and every existing job)
-- the launch values reach ansible as data, marked !unsafe.
ALTER TABLE jobs ADD COLUMN extra_vars_templated BOOLEAN NOT NULL DEFAULT FALSE;
