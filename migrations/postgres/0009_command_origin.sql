-- Every execution is a command: `queue` (POST /projects/{id}/commands) or `shell` (run now,
-- stored when it ends, or when it starts if it runs long enough to be followed).
ALTER TABLE commands ADD COLUMN origin TEXT NOT NULL DEFAULT 'queue';
