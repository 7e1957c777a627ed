-- Which session holds the agent, so a session that ended late cannot mark a newer one offline.
ALTER TABLE agents ADD COLUMN session_id VARCHAR(36) NULL;
