ALTER TABLE agents DROP COLUMN session_id;
