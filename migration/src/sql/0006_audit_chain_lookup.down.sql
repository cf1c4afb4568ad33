-- Back to 0004's seal() (static lookup of the chain head).
SET LOCAL ROLE {owner};

CREATE OR REPLACE FUNCTION rowguard_audit.seal() RETURNS trigger
  LANGUAGE plpgsql SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
  previous bytea;
BEGIN
  PERFORM pg_advisory_xact_lock(hashtext('rowguard_audit.chain'));
  SELECT c.hash INTO previous FROM rowguard_audit.chain c ORDER BY c.seq DESC LIMIT 1;
  previous := coalesce(previous, '\x00'::bytea);
  INSERT INTO rowguard_audit.chain (event_id, prev_hash, hash)
  VALUES (NEW.id, previous,
          sha256(previous || convert_to(rowguard_audit.canonical(NEW), 'UTF8')));
  RETURN NULL;
END
$fn$;

RESET ROLE;
