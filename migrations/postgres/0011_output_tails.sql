-- The latest tail of each stream of a running command, stored at most once a second while it
-- grows, so a replica that dies loses at most that second of its tail. Readers use it only
-- where the log itself does not reach as far (the command never stored its end).
CREATE TABLE command_output_tail (
    command_id  UUID NOT NULL,
    stream      TEXT NOT NULL,
    byte_offset BIGINT NOT NULL,
    data        BYTEA NOT NULL,
    PRIMARY KEY (command_id, stream)
);
