-- Output past a command's budget keeps its head and tail: the budget it ran with, and where
-- each stream's middle was dropped (NULL when nothing was).
-- Rows queued before this ran with the default budget, 1 MiB.
ALTER TABLE commands ADD COLUMN max_output_bytes BIGINT NOT NULL DEFAULT 1048576;
ALTER TABLE commands ADD COLUMN stdout_omitted_offset BIGINT;
ALTER TABLE commands ADD COLUMN stdout_omitted_bytes BIGINT;
ALTER TABLE commands ADD COLUMN stderr_omitted_offset BIGINT;
ALTER TABLE commands ADD COLUMN stderr_omitted_bytes BIGINT;
