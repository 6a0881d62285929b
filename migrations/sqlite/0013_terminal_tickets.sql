-- Single-use tickets that open a terminal from a browser (which cannot set X-API-Key on a
-- WebSocket): only the SHA-256 of each is kept; using one deletes it, on whichever replica.
CREATE TABLE terminal_tickets (
    hash       TEXT PRIMARY KEY,
    api_key_id TEXT NOT NULL,
    project_id TEXT NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE INDEX terminal_tickets_expiry ON terminal_tickets (expires_at);
