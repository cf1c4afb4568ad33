-- Back to 0004/0006: one unpartitioned events table, sealed at COMMIT by a trigger. Checkpoints are
-- dropped and links made by the gateway's sealer can no longer be checked by the 0004 verifier.
-- For rolling back a development database; never run it against production data.
SET LOCAL ROLE {owner};

CREATE POLICY clinicians_coordinator_update ON rowguard.clinicians
  FOR UPDATE TO {coordinator}
  USING ((SELECT nullif(current_setting('app.current_user', true), '')::integer) IS NOT NULL)
  WITH CHECK ((SELECT nullif(current_setting('app.current_user', true), '')::integer) IS NOT NULL);
GRANT UPDATE (display_name, active) ON rowguard.clinicians TO {coordinator};

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
  UPDATE rowguard.emergency_grants SET reviewed_at = now(), reviewed_by = me
  WHERE id = p_grant AND reviewed_at IS NULL;
  RETURN FOUND;
END
$fn$;


DROP FUNCTION rowguard_audit.take_seal_lease(text, integer);
DROP TABLE rowguard_audit.sealer_lease;
DROP FUNCTION rowguard_audit.recent_checkpoints(integer);
DROP FUNCTION rowguard_audit.oldest_unsealed();
DROP FUNCTION rowguard_audit.record_checkpoint(bigint, bytea, timestamptz, text, text, bytea);
DROP FUNCTION rowguard_audit.extend_chain(bigint[], bigint[], bigint[], timestamptz[], text[], text[]);
DROP FUNCTION rowguard_audit.final_events(bigint, bigint, integer);
DROP FUNCTION rowguard_audit.chain_head();
DROP FUNCTION rowguard_audit.ensure_partitions(timestamptz, integer);
REVOKE USAGE ON SCHEMA rowguard_audit FROM {gateway};
DROP TABLE rowguard_audit.checkpoints;
DROP TABLE rowguard_audit.archives;

ALTER TABLE rowguard_audit.chain DROP COLUMN version, DROP COLUMN event_txid, DROP COLUMN sealed_at,
  DROP COLUMN event_occurred_at;
ALTER TABLE rowguard_audit.chain ALTER COLUMN seq ADD GENERATED ALWAYS AS IDENTITY;
SELECT setval(pg_get_serial_sequence('rowguard_audit.chain', 'seq'),
              coalesce((SELECT max(seq) FROM rowguard_audit.chain), 0) + 1, false);

ALTER TABLE rowguard_audit.events RENAME TO events_0007;
ALTER INDEX rowguard_audit.events_pkey RENAME TO events_0007_pkey;
ALTER INDEX rowguard_audit.events_occurred_at_idx RENAME TO events_0007_occurred_at_idx;
ALTER INDEX rowguard_audit.events_clinician_idx RENAME TO events_0007_clinician_idx;
ALTER INDEX rowguard_audit.events_patient_ids_idx RENAME TO events_0007_patient_ids_idx;
CREATE TABLE rowguard_audit.events (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  occurred_at timestamptz NOT NULL DEFAULT clock_timestamp(),
  request_id uuid,
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
  patient_ids uuid[] NOT NULL DEFAULT '{}',
  purpose text NOT NULL CHECK (purpose IN ('treatment', 'emergency', 'operations', 'audit'))
);
INSERT INTO rowguard_audit.events (id, occurred_at, request_id, clinician_id, issuer, subject, client_id,
    app_role, operation_name, persisted_query_hash, action, outcome, patient_ids, purpose)
  OVERRIDING SYSTEM VALUE
  SELECT id, occurred_at, request_id, clinician_id, issuer, subject, client_id, app_role,
         operation_name, persisted_query_hash, action, outcome, patient_ids, purpose
  FROM rowguard_audit.events_0007;
SELECT setval(pg_get_serial_sequence('rowguard_audit.events', 'id'),
              coalesce((SELECT max(id) FROM rowguard_audit.events_0007), 0) + 1, false);
DROP TABLE rowguard_audit.events_0007;

CREATE INDEX events_occurred_at_idx ON rowguard_audit.events (occurred_at);
CREATE INDEX events_clinician_idx ON rowguard_audit.events (clinician_id, occurred_at);
CREATE INDEX events_patient_ids_idx ON rowguard_audit.events USING gin (patient_ids);
CREATE TRIGGER events_append_only BEFORE UPDATE OR DELETE ON rowguard_audit.events
  FOR EACH ROW EXECUTE FUNCTION rowguard_audit.refuse_change();
CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON rowguard_audit.events
  FOR EACH STATEMENT EXECUTE FUNCTION rowguard_audit.refuse_change();
REVOKE UPDATE, DELETE, TRUNCATE ON rowguard_audit.events FROM {owner};
ALTER TABLE rowguard_audit.events ENABLE ROW LEVEL SECURITY;
GRANT SELECT ON rowguard_audit.events TO {auditor};
CREATE POLICY events_auditor_select ON rowguard_audit.events FOR SELECT TO {auditor}
  USING ((SELECT nullif(current_setting('app.current_user', true), '')::integer) IS NOT NULL);

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
  IF base_purpose = 'treatment' AND me IS NOT NULL THEN
    SELECT coalesce(array_agg(p), '{}') INTO emergency FROM unnest(p_patient_ids) AS p
    WHERE NOT EXISTS (SELECT 1 FROM rowguard.clinicians_patients cp WHERE cp.clinician_id = me AND cp.patient_id = p)
      AND EXISTS (SELECT 1 FROM rowguard.emergency_grants g
                  WHERE g.clinician_id = me AND g.patient_id = p AND g.expires_at > now());
  ELSE
    emergency := '{}';
  END IF;
  SELECT coalesce(array_agg(p), '{}') INTO ordinary FROM unnest(p_patient_ids) AS p WHERE p <> ALL (emergency);

  IF cardinality(ordinary) > 0 OR cardinality(p_patient_ids) = 0 THEN
    INSERT INTO rowguard_audit.events (request_id, clinician_id, issuer, subject, client_id, app_role,
      operation_name, persisted_query_hash, action, outcome, patient_ids, purpose)
    VALUES (nullif(current_setting('app.request_id', true), '')::uuid, me,
      nullif(current_setting('app.issuer', true), ''), nullif(current_setting('app.subject', true), ''),
      p_client_id, app_role, p_operation_name, p_persisted_query_hash, p_action, p_outcome, ordinary,
      CASE WHEN p_action = 'emergency_access' THEN 'emergency' ELSE base_purpose END);
  END IF;
  IF cardinality(emergency) > 0 THEN
    INSERT INTO rowguard_audit.events (request_id, clinician_id, issuer, subject, client_id, app_role,
      operation_name, persisted_query_hash, action, outcome, patient_ids, purpose)
    VALUES (nullif(current_setting('app.request_id', true), '')::uuid, me,
      nullif(current_setting('app.issuer', true), ''), nullif(current_setting('app.subject', true), ''),
      p_client_id, app_role, p_operation_name, p_persisted_query_hash, p_action, p_outcome, emergency,
      'emergency');
  END IF;
END
$fn$;


CREATE FUNCTION rowguard_audit.canonical(e rowguard_audit.events) RETURNS text
  LANGUAGE sql IMMUTABLE
  SET search_path = pg_catalog, pg_temp
AS $fn$
  SELECT concat_ws(E'\x1f',
    e.id::text,
    to_char(e.occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
    coalesce(e.request_id::text, '\N'), coalesce(e.clinician_id::text, '\N'),
    coalesce(e.issuer, '\N'), coalesce(e.subject, '\N'), coalesce(e.client_id, '\N'),
    e.app_role, coalesce(e.operation_name, '\N'), coalesce(e.persisted_query_hash, '\N'),
    e.action, e.outcome, e.patient_ids::text, e.purpose)
$fn$;


CREATE FUNCTION rowguard_audit.seal() RETURNS trigger
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
REVOKE ALL ON FUNCTION rowguard_audit.seal() FROM PUBLIC;

CREATE CONSTRAINT TRIGGER events_seal
  AFTER INSERT ON rowguard_audit.events
  DEFERRABLE INITIALLY DEFERRED
  FOR EACH ROW EXECUTE FUNCTION rowguard_audit.seal();

RESET ROLE;
