-- Commands run now (origin shell) are stored in `commands` too: only a queued row is work for
-- the queue workers, so only that wakes them.
DROP TRIGGER commands_enqueued ON commands;
CREATE TRIGGER commands_enqueued AFTER INSERT ON commands FOR EACH ROW WHEN (NEW.status = 'queued')
    EXECUTE FUNCTION rdev_commands_notify();
