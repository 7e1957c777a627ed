ALTER TABLE agents DROP COLUMN lost_at;
