-- The chain head is looked up with a plan made for the table's size *now*.
--
-- 0004's seal() read the previous link with static SQL, which PL/pgSQL plans once per backend and
-- keeps. A gateway connection opened while the chain was small kept a sequential scan of it for
-- its whole life, under the chain's lock: with 100k links, commits queued behind each other and
-- a long-lived pool fell to a third of its throughput within a minute, while new connections (as
-- pgbench makes) were fine. Dynamic SQL is planned on every call (microseconds), so the
-- primary-key index is used as soon as the table outgrows a page.
SET LOCAL ROLE {owner};

CREATE OR REPLACE FUNCTION rowguard_audit.seal() RETURNS trigger
  LANGUAGE plpgsql SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
  previous bytea;
BEGIN
  PERFORM pg_advisory_xact_lock(hashtext('rowguard_audit.chain'));
  EXECUTE 'SELECT c.hash FROM rowguard_audit.chain c ORDER BY c.seq DESC LIMIT 1' INTO previous;
  previous := coalesce(previous, '\x00'::bytea);
  INSERT INTO rowguard_audit.chain (event_id, prev_hash, hash)
  VALUES (NEW.id, previous,
          sha256(previous || convert_to(rowguard_audit.canonical(NEW), 'UTF8')));
  RETURN NULL;
END
$fn$;

RESET ROLE;
