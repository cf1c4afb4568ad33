-- The audit trail, sealed off the request path and anchored outside the database.
--
-- 0004 sealed every event into the hash chain at COMMIT under one advisory lock: every audited
-- request queued for it (two thirds of the database's read throughput), the chain forked when two
-- REPEATABLE READ transactions read the same head, and the proof lived wholly inside the database,
-- where its owner could rewrite events and re-hash the chain. From here on:
--
--  * a request appends with a plain INSERT and takes no lock;
--  * every event carries the id of the transaction that wrote it (`txid`). An event whose txid is
--    below the oldest transaction still running (`pg_snapshot_xmin(pg_current_snapshot())`) is
--    final: no transaction can still add an event with a smaller txid. The gateway's background
--    sealer chains final events in (txid, id) order, so the chain has one order whatever the
--    isolation level or commit timing;
--  * hashes are computed by the sealer in Rust from the rows, in a canonical form defined and
--    versioned there (no database function the owner could replace is trusted), and checkpoints
--    of the chain are signed with a key the database never sees and written outside it too;
--  * the events table is partitioned by month, so the trail stays index-driven as it grows and old
--    months can be exported and detached.
SET LOCAL ROLE {owner};

-- Sealing leaves the request path -----------------------------------------------------------------

DROP TRIGGER events_seal ON rowguard_audit.events;
DROP FUNCTION rowguard_audit.seal();
-- The verifier recomputes every hash in Rust; a canonical form the owner could redefine has no place
-- in the proof.
DROP FUNCTION rowguard_audit.canonical(rowguard_audit.events);

-- Monthly partitions ------------------------------------------------------------------------------

ALTER TABLE rowguard_audit.events RENAME TO events_0004;
-- Index names are per schema; the new table takes the old names.
ALTER INDEX rowguard_audit.events_pkey RENAME TO events_0004_pkey;
ALTER INDEX rowguard_audit.events_occurred_at_idx RENAME TO events_0004_occurred_at_idx;
ALTER INDEX rowguard_audit.events_clinician_idx RENAME TO events_0004_clinician_idx;
ALTER INDEX rowguard_audit.events_patient_ids_idx RENAME TO events_0004_patient_ids_idx;

-- Partitioned tables take no identity column on PostgreSQL 15; a sequence does the same job.
CREATE SEQUENCE rowguard_audit.event_ids AS bigint;

CREATE TABLE rowguard_audit.events (
  id bigint NOT NULL DEFAULT nextval('rowguard_audit.event_ids'),
  -- clock_timestamp(), not now(): events of one long transaction keep their real order in time.
  occurred_at timestamptz NOT NULL DEFAULT clock_timestamp(),
  -- The writing (top-level) transaction. Sealing order and the "final" test rest on it.
  txid bigint NOT NULL DEFAULT pg_current_xact_id()::text::bigint,
  request_id uuid,
  -- The client's own correlation id (X-Request-Id), length-limited by the gateway; never the key.
  correlation_id text CHECK (length(correlation_id) <= 64),
  -- The W3C trace the request belonged to, so an auditor can jump from an access to its trace.
  trace_id text CHECK (trace_id ~ '^[0-9a-f]{32}$'),
  clinician_id integer,
  issuer text,
  subject text,
  client_id text,
  app_role text NOT NULL,
  operation_name text,
  persisted_query_hash text,
  action text NOT NULL CHECK (action IN (
    'read', 'update', 'assign', 'unassign', 'enroll', 'emergency_access', 'review', 'audit_read')),
  outcome text NOT NULL CHECK (outcome IN (
    'success', 'not_visible', 'denied', 'conflict', 'not_found', 'invalid', 'rolled_back', 'error')),
  -- Ids and codes only, never PHI values.
  patient_ids uuid[] NOT NULL DEFAULT '{}',
  purpose text NOT NULL CHECK (purpose IN ('treatment', 'emergency', 'operations', 'audit')),
  -- A partitioned table's primary key must contain the partition key.
  PRIMARY KEY (id, occurred_at)
) PARTITION BY RANGE (occurred_at);
ALTER SEQUENCE rowguard_audit.event_ids OWNED BY rowguard_audit.events.id;

-- Auditors filter by time, person and patient; the sealer walks (txid, id).
CREATE INDEX events_occurred_at_idx ON rowguard_audit.events (occurred_at);
CREATE INDEX events_clinician_idx ON rowguard_audit.events (clinician_id, occurred_at);
CREATE INDEX events_patient_ids_idx ON rowguard_audit.events USING gin (patient_ids);
CREATE INDEX events_seal_order_idx ON rowguard_audit.events (txid, id);

-- Creates the monthly partitions from `p_from`'s month through `p_months_ahead` months after the
-- current one (UTC), skipping those that exist. The sealer calls it, so next month's partition is
-- there long before the first event needs it; the default partition only catches a clock that
-- jumped far ahead. Returns how many partitions it created.
CREATE FUNCTION rowguard_audit.ensure_partitions(p_from timestamptz, p_months_ahead integer)
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
REVOKE ALL ON FUNCTION rowguard_audit.ensure_partitions(timestamptz, integer) FROM PUBLIC;

CREATE TABLE rowguard_audit.events_default PARTITION OF rowguard_audit.events DEFAULT;
ALTER TABLE rowguard_audit.events_default ENABLE ROW LEVEL SECURITY;

SELECT rowguard_audit.ensure_partitions((SELECT min(occurred_at) FROM rowguard_audit.events_0004), 2);

-- Events written before this migration keep their content and their links (chain version 1);
-- they had no transaction id, and 0 sorts them before every later event.
INSERT INTO rowguard_audit.events (id, occurred_at, txid, request_id, clinician_id, issuer, subject,
    client_id, app_role, operation_name, persisted_query_hash, action, outcome, patient_ids, purpose)
  SELECT id, occurred_at, 0, request_id, clinician_id, issuer, subject, client_id, app_role,
         operation_name, persisted_query_hash, action, outcome, patient_ids, purpose
  FROM rowguard_audit.events_0004;
SELECT setval('rowguard_audit.event_ids',
              coalesce((SELECT max(id) FROM rowguard_audit.events_0004), 0) + 1, false);
-- Each link also names when its event happened, so that once a month's partition has been
-- archived (exported, signed for and detached), the links of its events are known to be archived
-- rather than deleted. Filled in here for the links 0004 made.
ALTER TABLE rowguard_audit.chain ADD COLUMN event_occurred_at timestamptz;
ALTER TABLE rowguard_audit.chain DISABLE TRIGGER chain_append_only;
GRANT UPDATE (event_occurred_at) ON rowguard_audit.chain TO {owner};
UPDATE rowguard_audit.chain c SET event_occurred_at = e.occurred_at
  FROM rowguard_audit.events_0004 e WHERE e.id = c.event_id;
REVOKE UPDATE (event_occurred_at) ON rowguard_audit.chain FROM {owner};
ALTER TABLE rowguard_audit.chain ENABLE TRIGGER chain_append_only;
DROP TABLE rowguard_audit.events_0004;

-- Append-only for every role, the owner included (a speed bump: the proof is the signed chain).
CREATE TRIGGER events_append_only BEFORE UPDATE OR DELETE ON rowguard_audit.events
  FOR EACH ROW EXECUTE FUNCTION rowguard_audit.refuse_change();
CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON rowguard_audit.events
  FOR EACH STATEMENT EXECUTE FUNCTION rowguard_audit.refuse_change();
REVOKE UPDATE, DELETE, TRUNCATE ON rowguard_audit.events FROM {owner};
REVOKE ALL ON FUNCTION rowguard_audit.refuse_change() FROM PUBLIC;

ALTER TABLE rowguard_audit.events ENABLE ROW LEVEL SECURITY;
GRANT SELECT ON rowguard_audit.events TO {auditor};
CREATE POLICY events_auditor_select ON rowguard_audit.events FOR SELECT TO {auditor}
  USING ((SELECT nullif(current_setting('app.current_user', true), '')::integer) IS NOT NULL);

-- The chain: written only by the sealer -----------------------------------------------------------

-- The sealer numbers links itself (head + 1): the primary key then refuses a second link with the
-- same number, so two sealers that both believe they lead can never fork the chain: one commits,
-- the other's transaction fails.
ALTER TABLE rowguard_audit.chain ALTER COLUMN seq DROP IDENTITY;
-- 1: sealed by 0004's trigger (canonical form v1); 2: sealed by the gateway's sealer (v2).
ALTER TABLE rowguard_audit.chain ADD COLUMN version smallint NOT NULL DEFAULT 1;
ALTER TABLE rowguard_audit.chain ALTER COLUMN version DROP DEFAULT;
ALTER TABLE rowguard_audit.chain ADD COLUMN event_txid bigint NOT NULL DEFAULT 0;
ALTER TABLE rowguard_audit.chain ALTER COLUMN event_txid DROP DEFAULT;
ALTER TABLE rowguard_audit.chain ADD COLUMN sealed_at timestamptz NOT NULL DEFAULT now();

-- Signed checkpoints (chain length, head hash, time): also written outside the database by the
-- sealer. `body` is the exact signed statement, `signature` its Ed25519 signature; the database
-- cannot check either and does not try.
CREATE TABLE rowguard_audit.checkpoints (
  seq bigint PRIMARY KEY,
  head_hash bytea NOT NULL,
  created_at timestamptz NOT NULL,
  key_id text NOT NULL,
  body text NOT NULL,
  signature bytea NOT NULL
);
CREATE TRIGGER checkpoints_append_only BEFORE UPDATE OR DELETE ON rowguard_audit.checkpoints
  FOR EACH ROW EXECUTE FUNCTION rowguard_audit.refuse_change();
CREATE TRIGGER checkpoints_no_truncate BEFORE TRUNCATE ON rowguard_audit.checkpoints
  FOR EACH STATEMENT EXECUTE FUNCTION rowguard_audit.refuse_change();
REVOKE UPDATE, DELETE, TRUNCATE ON rowguard_audit.checkpoints FROM {owner};
ALTER TABLE rowguard_audit.checkpoints ENABLE ROW LEVEL SECURITY;
GRANT SELECT ON rowguard_audit.checkpoints TO {auditor};
CREATE POLICY checkpoints_auditor_select ON rowguard_audit.checkpoints FOR SELECT TO {auditor}
  USING ((SELECT nullif(current_setting('app.current_user', true), '')::integer) IS NOT NULL);

-- Archived months: a signed statement per month whose partition was exported and detached
-- (`rowguard audit archive`), so `audit verify` can tell an archived event from a deleted one.
CREATE TABLE rowguard_audit.archives (
  month date PRIMARY KEY,
  created_at timestamptz NOT NULL DEFAULT now(),
  body text NOT NULL,
  signature bytea NOT NULL
);
CREATE TRIGGER archives_append_only BEFORE UPDATE OR DELETE ON rowguard_audit.archives
  FOR EACH ROW EXECUTE FUNCTION rowguard_audit.refuse_change();
CREATE TRIGGER archives_no_truncate BEFORE TRUNCATE ON rowguard_audit.archives
  FOR EACH STATEMENT EXECUTE FUNCTION rowguard_audit.refuse_change();
REVOKE UPDATE, DELETE, TRUNCATE ON rowguard_audit.archives FROM {owner};
ALTER TABLE rowguard_audit.archives ENABLE ROW LEVEL SECURITY;

-- The sealer's interface -----------------------------------------------------------------------------
--
-- The gateway's login role calls these directly (no role switch): it still owns nothing and holds
-- no table privilege. Whatever it writes is checked by `rowguard audit verify`, which recomputes
-- every hash from the events themselves.
GRANT USAGE ON SCHEMA rowguard_audit TO {gateway};
GRANT EXECUTE ON FUNCTION rowguard_audit.ensure_partitions(timestamptz, integer) TO {gateway};

-- The last link, and the sealing position after it: the (txid, id) of its event. Links of version
-- 1 (sealed by 0004's trigger, in commit order) all belong to events from before this migration,
-- whose txid is 0, so after one of them everything with txid 0 is behind the sealer.
CREATE FUNCTION rowguard_audit.chain_head()
  RETURNS TABLE (seq bigint, hash bytea, after_txid bigint, after_id bigint)
  LANGUAGE sql STABLE SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
AS $fn$
  SELECT c.seq, c.hash, c.event_txid,
         CASE WHEN c.version = 1 THEN 9223372036854775807 ELSE c.event_id END
  FROM rowguard_audit.chain c ORDER BY c.seq DESC LIMIT 1
$fn$;
REVOKE ALL ON FUNCTION rowguard_audit.chain_head() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION rowguard_audit.chain_head() TO {gateway};

-- Final events after (p_txid, p_id) in sealing order. The horizon is read first, in its own
-- statement; the events query that follows sees at least everything that had finished by then.
CREATE FUNCTION rowguard_audit.final_events(p_txid bigint, p_id bigint, p_limit integer)
  RETURNS SETOF rowguard_audit.events
  LANGUAGE plpgsql STABLE SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
  horizon bigint := pg_snapshot_xmin(pg_current_snapshot())::text::bigint;
BEGIN
  RETURN QUERY
    SELECT e.* FROM rowguard_audit.events e
    WHERE (e.txid, e.id) > (p_txid, p_id) AND e.txid < horizon
    ORDER BY e.txid, e.id
    LIMIT least(greatest(p_limit, 1), 10000);
END
$fn$;
REVOKE ALL ON FUNCTION rowguard_audit.final_events(bigint, bigint, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION rowguard_audit.final_events(bigint, bigint, integer) TO {gateway};

-- Appends links (hashes as hex). The first must follow the current head; the primary key and the
-- unique event id refuse a fork or a second seal of one event.
CREATE FUNCTION rowguard_audit.extend_chain(
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
REVOKE ALL ON FUNCTION rowguard_audit.extend_chain(bigint[], bigint[], bigint[], timestamptz[], text[], text[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION rowguard_audit.extend_chain(bigint[], bigint[], bigint[], timestamptz[], text[], text[]) TO {gateway};

CREATE FUNCTION rowguard_audit.record_checkpoint(
  p_seq bigint, p_head_hash bytea, p_created_at timestamptz, p_key_id text, p_body text, p_signature bytea)
  RETURNS void
  LANGUAGE sql SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
AS $fn$
  INSERT INTO rowguard_audit.checkpoints (seq, head_hash, created_at, key_id, body, signature)
  VALUES (p_seq, p_head_hash, p_created_at, p_key_id, p_body, p_signature)
  ON CONFLICT (seq) DO NOTHING
$fn$;
REVOKE ALL ON FUNCTION rowguard_audit.record_checkpoint(bigint, bytea, timestamptz, text, text, bytea) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION rowguard_audit.record_checkpoint(bigint, bytea, timestamptz, text, text, bytea) TO {gateway};

-- When the oldest event not yet sealed was written (NULL when all are sealed): seal lag, for every
-- replica's readiness report.
CREATE FUNCTION rowguard_audit.oldest_unsealed() RETURNS timestamptz
  LANGUAGE plpgsql STABLE SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
  v_txid bigint;
  v_id bigint;
BEGIN
  SELECT h.after_txid, h.after_id INTO v_txid, v_id FROM rowguard_audit.chain_head() h;
  RETURN (SELECT min(e.occurred_at) FROM rowguard_audit.events e
          WHERE (e.txid, e.id) > (coalesce(v_txid, -1), coalesce(v_id, -1)));
END
$fn$;
REVOKE ALL ON FUNCTION rowguard_audit.oldest_unsealed() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION rowguard_audit.oldest_unsealed() TO {gateway};

-- The newest checkpoints, for a new leader to copy into its checkpoint directory.
CREATE FUNCTION rowguard_audit.recent_checkpoints(p_limit integer)
  RETURNS TABLE (body text, signature bytea)
  LANGUAGE sql STABLE SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
AS $fn$
  SELECT c.body, c.signature FROM rowguard_audit.checkpoints c
  ORDER BY c.seq DESC LIMIT least(greatest(p_limit, 0), 1000)
$fn$;
REVOKE ALL ON FUNCTION rowguard_audit.recent_checkpoints(integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION rowguard_audit.recent_checkpoints(integer) TO {gateway};

-- Which replica seals. One row; a replica holds the lease while it renews it (every seal round
-- renews it inside the seal's own transaction), and another may take it once it has expired. A row
-- rather than a session advisory lock, so that it works through transaction poolers too.
CREATE TABLE rowguard_audit.sealer_lease (
  singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
  holder text,
  expires_at timestamptz NOT NULL DEFAULT '-infinity'
);
INSERT INTO rowguard_audit.sealer_lease DEFAULT VALUES;
ALTER TABLE rowguard_audit.sealer_lease ENABLE ROW LEVEL SECURITY;

-- Takes or renews the lease for `p_holder`; false while another holder's lease runs. The row lock
-- it takes is held to the end of the caller's transaction, so two seal rounds never overlap.
CREATE FUNCTION rowguard_audit.take_seal_lease(p_holder text, p_ttl_ms integer) RETURNS boolean
  LANGUAGE sql SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
AS $fn$
  WITH taken AS (
    UPDATE rowguard_audit.sealer_lease
    SET holder = p_holder,
        expires_at = clock_timestamp() + make_interval(secs => least(greatest(p_ttl_ms, 100), 600000) / 1000.0)
    WHERE holder = p_holder OR expires_at < clock_timestamp()
    RETURNING 1)
  SELECT EXISTS (SELECT 1 FROM taken)
$fn$;
REVOKE ALL ON FUNCTION rowguard_audit.take_seal_lease(text, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION rowguard_audit.take_seal_lease(text, integer) TO {gateway};

-- Appending -------------------------------------------------------------------------------------------

-- As 0004's append(), plus the correlation and trace ids from the transaction's settings. One
-- plain INSERT per purpose, no lock: sealing happens later, in the background.
CREATE OR REPLACE FUNCTION rowguard_audit.append(
  p_action text, p_outcome text, p_patient_ids uuid[], p_operation_name text,
  p_persisted_query_hash text, p_client_id text)
  RETURNS void
  LANGUAGE plpgsql SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
  me integer := (SELECT nullif(current_setting('app.current_user', true), '')::integer);
  app_role text := current_setting('role', true);
  base_purpose text;
  emergency uuid[];
  ordinary uuid[];
BEGIN
  base_purpose := CASE
    WHEN app_role LIKE '%\_clinician' THEN 'treatment'
    WHEN app_role LIKE '%\_coordinator' THEN 'operations'
    WHEN app_role LIKE '%\_auditor' THEN 'audit'
    ELSE NULL END;
  IF base_purpose IS NULL THEN
    RAISE EXCEPTION 'audit events are written only under an application role' USING ERRCODE = 'insufficient_privilege';
  END IF;
  p_patient_ids := coalesce(p_patient_ids, '{}');
  IF base_purpose = 'treatment' AND me IS NOT NULL AND cardinality(p_patient_ids) > 0 THEN
    SELECT coalesce(array_agg(p), '{}') INTO emergency FROM unnest(p_patient_ids) AS p
    WHERE NOT EXISTS (SELECT 1 FROM rowguard.clinicians_patients cp WHERE cp.clinician_id = me AND cp.patient_id = p)
      AND EXISTS (SELECT 1 FROM rowguard.emergency_grants g
                  WHERE g.clinician_id = me AND g.patient_id = p AND g.expires_at > now());
  ELSE
    emergency := '{}';
  END IF;
  ordinary := CASE WHEN cardinality(emergency) = 0 THEN p_patient_ids
              ELSE ARRAY(SELECT p FROM unnest(p_patient_ids) AS p WHERE p <> ALL (emergency)) END;

  INSERT INTO rowguard_audit.events (request_id, correlation_id, trace_id, clinician_id, issuer,
    subject, client_id, app_role, operation_name, persisted_query_hash, action, outcome, patient_ids,
    purpose)
  SELECT nullif(current_setting('app.request_id', true), '')::uuid,
    nullif(current_setting('app.correlation_id', true), ''),
    nullif(current_setting('app.trace_id', true), ''),
    me, nullif(current_setting('app.issuer', true), ''), nullif(current_setting('app.subject', true), ''),
    p_client_id, app_role, p_operation_name, p_persisted_query_hash, p_action, p_outcome, ids, purpose
  FROM (VALUES
          (ordinary, CASE WHEN p_action = 'emergency_access' THEN 'emergency' ELSE base_purpose END,
           cardinality(ordinary) > 0 OR cardinality(p_patient_ids) = 0),
          (emergency, 'emergency', cardinality(emergency) > 0)) AS v(ids, purpose, wanted)
  WHERE wanted;
END
$fn$;

-- Separation of duties and least privilege --------------------------------------------------------

-- An auditor may not sign off an emergency grant they hold themselves: refused in the database, so
-- no client can get around it.
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

-- No API path renames or deactivates people, so coordinators keep no UPDATE on clinicians (they
-- could otherwise rename an auditor or deactivate another coordinator).
DROP POLICY clinicians_coordinator_update ON rowguard.clinicians;
REVOKE UPDATE ON rowguard.clinicians FROM {coordinator};

RESET ROLE;
