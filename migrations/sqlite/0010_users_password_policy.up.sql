-- Password rotation, which the seed asks the application to enforce: when each password was
-- set (for the maximum age) and whether it must be changed at the next login (after an admin
-- set it).
ALTER TABLE users ADD COLUMN password_changed_at DATETIME NULL;
ALTER TABLE users ADD COLUMN must_change_password BOOLEAN NOT NULL DEFAULT 0;
