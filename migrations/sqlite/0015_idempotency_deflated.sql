-- A stored answer is kept deflated (raw DEFLATE of its JSON) when that is smaller: JSON escapes
-- control bytes to six characters each, so a command's output could otherwise take many times
-- its cap. `body` holds the answers stored before, and small ones.
ALTER TABLE idempotency_keys ADD COLUMN body_deflated BLOB;
