-- When an agent's last session ended, while it has not come back. Kept in the database so that
-- any controller sharing it settles the agent's jobs once the grace period has passed, even
-- after every controller restarted.
ALTER TABLE agents ADD COLUMN lost_at DATETIME NULL;
