-- Why an entry ended as it did, in words: a refusal's error code and message, an execution's
-- error ("the client went away; command killed"). Null when there is nothing to say.
ALTER TABLE audit_log ADD COLUMN reason TEXT;
