-- Commands run now (origin shell) are stored in `commands` too, mostly already final: the
-- queue's own indexes cover only the rows they serve (as on Postgres), so such a row costs no
-- insert into them.
DROP INDEX commands_next;
DROP INDEX commands_leases;
CREATE INDEX commands_next ON commands (priority DESC, seq) WHERE status = 'queued';
CREATE INDEX commands_leases ON commands (lease_until) WHERE status = 'running';
