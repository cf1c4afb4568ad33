-- HIPAA audit controls (§164.312(b)) and emergency access (§164.312(a)(2)(ii)).
--
-- The trail lives in its own schema, owned by the owner role. Application roles never touch its
-- tables directly: they append through one SECURITY DEFINER function that stamps the actor from the
-- transaction's own settings, and auditors read it. Nobody, the owner included, may change or
-- delete an event (triggers plus grants), and every event is linked into a SHA-256 hash chain so
-- that a change made anyway (by a superuser with triggers disabled) is detectable.
CREATE SCHEMA rowguard_audit AUTHORIZATION {owner};

SET LOCAL ROLE {owner};

REVOKE ALL ON SCHEMA rowguard_audit FROM PUBLIC;
GRANT USAGE ON SCHEMA rowguard_audit TO {clinician}, {coordinator}, {auditor};

CREATE TABLE rowguard_audit.events (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  -- clock_timestamp(), not now(): events of one long transaction keep their real order in time.
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
  -- Ids and codes only, never PHI values.
  patient_ids uuid[] NOT NULL DEFAULT '{}',
  purpose text NOT NULL CHECK (purpose IN ('treatment', 'emergency', 'operations', 'audit'))
);

CREATE INDEX events_occurred_at_idx ON rowguard_audit.events (occurred_at);
CREATE INDEX events_clinician_idx ON rowguard_audit.events (clinician_id, occurred_at);
CREATE INDEX events_patient_ids_idx ON rowguard_audit.events USING gin (patient_ids);

-- The hash chain, in sealing order. Kept apart from the events so sealing only ever inserts:
-- events are never updated, not even to add their hash.
CREATE TABLE rowguard_audit.chain (
  seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  -- No foreign key: its check locks the event row (FOR KEY SHARE), which needs the UPDATE
  -- privilege that nobody holds on the trail. A missing event is what `audit verify` reports.
  event_id bigint NOT NULL UNIQUE,
  prev_hash bytea NOT NULL,
  hash bytea NOT NULL
);

-- The canonical text of an event that its hash covers: every column, in a fixed order, NULLs
-- spelled out so that NULL and '' differ.
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

-- Seals one event into the chain. Runs as a deferred constraint trigger, i.e. at COMMIT: the
-- chain lock is taken only for the last moment of the transaction, so concurrent requests do not
-- queue behind each other for the length of their work, and events of rolled-back transactions
-- never enter the chain.
CREATE FUNCTION rowguard_audit.seal() RETURNS trigger
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
REVOKE ALL ON FUNCTION rowguard_audit.seal() FROM PUBLIC;

CREATE CONSTRAINT TRIGGER events_seal
  AFTER INSERT ON rowguard_audit.events
  DEFERRABLE INITIALLY DEFERRED
  FOR EACH ROW EXECUTE FUNCTION rowguard_audit.seal();

-- Append-only, for every role including the owner: updates, deletes and truncation are refused
-- by triggers (grants alone would not stop the owner, who could grant itself).
CREATE FUNCTION rowguard_audit.refuse_change() RETURNS trigger
  LANGUAGE plpgsql
  SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
  RAISE EXCEPTION 'the audit trail is append-only: % on % is not allowed', TG_OP, TG_TABLE_NAME
    USING ERRCODE = 'insufficient_privilege';
END
$fn$;

CREATE TRIGGER events_append_only BEFORE UPDATE OR DELETE ON rowguard_audit.events
  FOR EACH ROW EXECUTE FUNCTION rowguard_audit.refuse_change();
CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON rowguard_audit.events
  FOR EACH STATEMENT EXECUTE FUNCTION rowguard_audit.refuse_change();
CREATE TRIGGER chain_append_only BEFORE UPDATE OR DELETE ON rowguard_audit.chain
  FOR EACH ROW EXECUTE FUNCTION rowguard_audit.refuse_change();
CREATE TRIGGER chain_no_truncate BEFORE TRUNCATE ON rowguard_audit.chain
  FOR EACH STATEMENT EXECUTE FUNCTION rowguard_audit.refuse_change();
REVOKE UPDATE, DELETE, TRUNCATE ON rowguard_audit.events, rowguard_audit.chain FROM {owner};

-- Auditors read the trail; nobody else reads it directly.
ALTER TABLE rowguard_audit.events ENABLE ROW LEVEL SECURITY;
ALTER TABLE rowguard_audit.chain ENABLE ROW LEVEL SECURITY;
GRANT SELECT ON rowguard_audit.events, rowguard_audit.chain TO {auditor};
CREATE POLICY events_auditor_select ON rowguard_audit.events FOR SELECT TO {auditor}
  USING ((SELECT nullif(current_setting('app.current_user', true), '')::integer) IS NOT NULL);
CREATE POLICY chain_auditor_select ON rowguard_audit.chain FOR SELECT TO {auditor}
  USING ((SELECT nullif(current_setting('app.current_user', true), '')::integer) IS NOT NULL);

-- Auditors name the people in the trail they read, so they see the clinician directory (names).
CREATE POLICY clinicians_auditor_select_directory ON rowguard.clinicians FOR SELECT TO {auditor}
  USING ((SELECT nullif(current_setting('app.current_user', true), '')::integer) IS NOT NULL);

-- Emergency access (break-glass) ----------------------------------------------------------------

-- A time-limited grant for one clinician to one patient. Rows are created only by
-- request_emergency_access() and marked reviewed only by review_emergency_access(): application
-- roles have no INSERT, UPDATE or DELETE on the table, so a grant cannot be forged or extended.
CREATE TABLE rowguard.emergency_grants (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  clinician_id integer NOT NULL REFERENCES rowguard.clinicians (id),
  patient_id uuid NOT NULL REFERENCES rowguard.patients (id),
  reason text NOT NULL CHECK (length(btrim(reason)) >= 20),
  granted_at timestamptz NOT NULL DEFAULT now(),
  expires_at timestamptz NOT NULL,
  reviewed_at timestamptz,
  reviewed_by integer REFERENCES rowguard.clinicians (id),
  CHECK (expires_at > granted_at AND expires_at <= granted_at + interval '24 hours')
);
-- Policies probe "an active grant of mine for this patient".
CREATE INDEX emergency_grants_lookup_idx ON rowguard.emergency_grants (clinician_id, patient_id, expires_at);

ALTER TABLE rowguard.emergency_grants ENABLE ROW LEVEL SECURITY;
GRANT SELECT ON rowguard.emergency_grants TO {clinician}, {auditor};
CREATE POLICY emergency_grants_clinician_select ON rowguard.emergency_grants FOR SELECT TO {clinician}
  USING (clinician_id = (SELECT nullif(current_setting('app.current_user', true), '')::integer));
CREATE POLICY emergency_grants_auditor_select ON rowguard.emergency_grants FOR SELECT TO {auditor}
  USING ((SELECT nullif(current_setting('app.current_user', true), '')::integer) IS NOT NULL);

-- Opens a patient to the calling clinician for `duration` (at most 24 hours; the gateway passes
-- its configured maximum). The clinician comes from the transaction's identity, never from an
-- argument; the reason is required and must say something.
CREATE FUNCTION rowguard.request_emergency_access(p_patient uuid, p_reason text, p_duration interval)
  RETURNS bigint
  LANGUAGE plpgsql SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
  me integer := (SELECT nullif(current_setting('app.current_user', true), '')::integer);
  grant_id bigint;
BEGIN
  IF me IS NULL THEN
    RAISE EXCEPTION 'no identity' USING ERRCODE = 'insufficient_privilege';
  END IF;
  IF p_duration IS NULL OR p_duration <= interval '0' OR p_duration > interval '24 hours' THEN
    RAISE EXCEPTION 'invalid duration' USING ERRCODE = 'check_violation';
  END IF;
  -- A patient that does not exist fails the foreign key (the owner cannot read patients: FORCE).
  INSERT INTO rowguard.emergency_grants (clinician_id, patient_id, reason, expires_at)
  VALUES (me, p_patient, btrim(p_reason), now() + p_duration)
  RETURNING id INTO grant_id;
  RETURN grant_id;
END
$fn$;
REVOKE ALL ON FUNCTION rowguard.request_emergency_access(uuid, text, interval) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION rowguard.request_emergency_access(uuid, text, interval) TO {clinician};

-- Marks a grant reviewed, stamped with the calling auditor.
CREATE FUNCTION rowguard.review_emergency_access(p_grant bigint) RETURNS boolean
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
REVOKE ALL ON FUNCTION rowguard.review_emergency_access(bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION rowguard.review_emergency_access(bigint) TO {auditor};

-- The break-glass path through row level security: an active grant opens the patient (reading
-- only) and its care team to that clinician, and never after expiry. The owner-owned helper reads
-- grants unfiltered (emergency_grants is not FORCEd), like current_clinician_patient_ids().
CREATE OR REPLACE FUNCTION rowguard.current_clinician_patient_ids() RETURNS SETOF uuid
  LANGUAGE sql STABLE SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
AS $fn$
  SELECT patient_id FROM rowguard.clinicians_patients
  WHERE clinician_id = (SELECT nullif(current_setting('app.current_user', true), '')::integer)
  UNION
  SELECT patient_id FROM rowguard.emergency_grants
  WHERE clinician_id = (SELECT nullif(current_setting('app.current_user', true), '')::integer)
    AND expires_at > now()
$fn$;

CREATE POLICY patients_clinician_emergency_select ON rowguard.patients
  FOR SELECT TO {clinician}
  USING (EXISTS (
    SELECT 1 FROM rowguard.emergency_grants g
    WHERE g.patient_id = patients.id
      AND g.clinician_id = (SELECT nullif(current_setting('app.current_user', true), '')::integer)
      AND g.expires_at > now()
  ));

-- Appending -------------------------------------------------------------------------------------

-- The one way to write the trail. The actor (clinician, issuer, subject, role, request id) comes
-- from the transaction's own settings, so nobody can write an event in someone else's name. The
-- purpose of use is decided here, per patient: a clinician's access to a patient that only an
-- active emergency grant opened is recorded as "emergency", separately from treatment.
CREATE FUNCTION rowguard_audit.append(
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
REVOKE ALL ON FUNCTION rowguard_audit.append(text, text, uuid[], text, text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION rowguard_audit.append(text, text, uuid[], text, text, text)
  TO {clinician}, {coordinator}, {auditor};

RESET ROLE;
