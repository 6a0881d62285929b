-- A key's own quotas ({"terminals","sessions","commands","followers"}, each null for the server
-- default), set like its rate limit.
ALTER TABLE api_keys ADD COLUMN quotas JSONB NOT NULL DEFAULT '{}';
-- The `commands` quota counts a key's queued and running commands at each enqueue.
CREATE INDEX commands_active_by_key ON commands (api_key_id) WHERE status IN ('queued', 'running');
