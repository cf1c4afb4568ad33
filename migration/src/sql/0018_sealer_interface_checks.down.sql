SET LOCAL ROLE {owner};
-- 0007's bodies.
CREATE OR REPLACE FUNCTION rowguard_audit.extend_chain(
  p_seq bigint[], p_event_id bigint[], p_event_txid bigint[], p_event_occurred_at timestamptz[],
  p_prev_hash text[], p_hash text[])
  RETURNS void
  LANGUAGE plpgsql SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
  head_seq bigint;
  head_hash bytea;
BEGIN
  SELECT c.seq, c.hash INTO head_seq, head_hash FROM rowguard_audit.chain c ORDER BY c.seq DESC LIMIT 1;
  IF p_seq[1] IS DISTINCT FROM coalesce(head_seq, 0) + 1
     OR decode(p_prev_hash[1], 'hex') IS DISTINCT FROM coalesce(head_hash, '\x00'::bytea) THEN
    RAISE EXCEPTION 'the chain moved on: another sealer is active' USING ERRCODE = 'serialization_failure';
  END IF;
  INSERT INTO rowguard_audit.chain (seq, event_id, event_txid, event_occurred_at, version, prev_hash, hash)
  SELECT s, e, t, o, 2, decode(p, 'hex'), decode(h, 'hex')
  FROM unnest(p_seq, p_event_id, p_event_txid, p_event_occurred_at, p_prev_hash, p_hash) AS u(s, e, t, o, p, h);
END
$fn$;

CREATE OR REPLACE FUNCTION rowguard_audit.ensure_partitions(p_from timestamptz, p_months_ahead integer)
  RETURNS integer
  LANGUAGE plpgsql SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
  month date := date_trunc('month', coalesce(p_from, now()) AT TIME ZONE 'UTC')::date;
  last date := (date_trunc('month', now() AT TIME ZONE 'UTC')
                + make_interval(months => least(greatest(coalesce(p_months_ahead, 0), 0), 24)))::date;
  name text;
  created integer := 0;
BEGIN
  WHILE month <= last LOOP
    name := format('events_%s', to_char(month, 'YYYY_MM'));
    IF to_regclass(format('rowguard_audit.%I', name)) IS NULL THEN
      BEGIN
        EXECUTE format(
          'CREATE TABLE rowguard_audit.%I PARTITION OF rowguard_audit.events FOR VALUES FROM (%L) TO (%L)',
          name, month::timestamp AT TIME ZONE 'UTC', (month + interval '1 month') AT TIME ZONE 'UTC');
        -- Reads go through the parent's policies; a partition read directly has no grants, and
        -- its own row level security is on as well, so it can never be a way around them.
        EXECUTE format('ALTER TABLE rowguard_audit.%I ENABLE ROW LEVEL SECURITY', name);
        created := created + 1;
      EXCEPTION WHEN others THEN
        -- E.g. the default partition already holds rows of that month: leave them there (they are
        -- sealed and verified all the same) rather than fail the caller.
        RAISE WARNING 'audit partition % not created: %', name, SQLERRM;
      END;
    END IF;
    month := (month + interval '1 month')::date;
  END LOOP;
  RETURN created;
END
$fn$;

CREATE OR REPLACE FUNCTION rowguard.review_emergency_access(p_grant bigint) RETURNS boolean
  LANGUAGE plpgsql SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
  me integer := (SELECT nullif(current_setting('app.current_user', true), '')::integer);
BEGIN
  IF me IS NULL THEN
    RAISE EXCEPTION 'no identity' USING ERRCODE = 'insufficient_privilege';
  END IF;
  IF EXISTS (SELECT 1 FROM rowguard.emergency_grants WHERE id = p_grant AND clinician_id = me) THEN
    RAISE EXCEPTION 'an emergency grant cannot be reviewed by its holder' USING ERRCODE = 'insufficient_privilege';
  END IF;
  UPDATE rowguard.emergency_grants SET reviewed_at = now(), reviewed_by = me
  WHERE id = p_grant AND reviewed_at IS NULL;
  RETURN FOUND;
END
$fn$;

-- The self-check's record of the functions it compares (0015) follows.
SELECT rowguard.record_policies();

RESET ROLE;
