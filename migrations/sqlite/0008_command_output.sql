-- The output log of queued commands: head pieces as they were written, then per stream the
-- gap (`gap_bytes`, where output was dropped) and the tail. `seq` orders both streams;
-- `byte_offset` is the piece's place in its own stream. Written in batches while the command
-- runs; readers on any replica fetch by seq, woken by an in-process signal.
CREATE TABLE command_output (
    command_id  TEXT NOT NULL,
    seq         BIGINT NOT NULL,
    stream      TEXT NOT NULL,
    byte_offset BIGINT NOT NULL,
    data        BLOB,
    gap_bytes   BIGINT,
    PRIMARY KEY (command_id, seq)
);
