-- ansible-playbook's run options chosen at launch (tags, skip_tags, check, diff, verbosity),
-- as a JSON object; NULL means none.
ALTER TABLE jobs ADD COLUMN run_options JSON NULL;
