-- Reads that cannot write, and a record of the policies the migrations made.
--
-- With auditing on, a query operation's transaction must be read-write (appending the access
-- record is a write), so READ ONLY no longer stopped a buggy resolver from changing PHI. The
-- write privileges now belong to separate roles: a query runs as {clinician} (or {coordinator},
-- {auditor}), which can read what its policies allow and append to the audit trail through its
-- function, and nothing else; only a mutation switches to the matching *_writer role. Each writer
-- inherits its reader's privileges and policies.
--
-- Creating roles needs an administrator (CREATEROLE), like 0001.
DO $roles$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = '{clinician_writer}') THEN
    CREATE ROLE {clinician_writer} NOLOGIN NOSUPERUSER NOBYPASSRLS INHERIT;
  END IF;
  IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = '{coordinator_writer}') THEN
    CREATE ROLE {coordinator_writer} NOLOGIN NOSUPERUSER NOBYPASSRLS INHERIT;
  END IF;
  IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = '{auditor_writer}') THEN
    CREATE ROLE {auditor_writer} NOLOGIN NOSUPERUSER NOBYPASSRLS INHERIT;
  END IF;
END
$roles$;
GRANT {clinician} TO {clinician_writer};
GRANT {coordinator} TO {coordinator_writer};
GRANT {auditor} TO {auditor_writer};
GRANT {clinician_writer}, {coordinator_writer}, {auditor_writer} TO {gateway};

SET LOCAL ROLE {owner};

-- Clinicians edit patients only as writers.
REVOKE UPDATE ON rowguard.patients FROM {clinician};
GRANT UPDATE (given_name, family_name, birth_date, clinical_notes) ON rowguard.patients TO {clinician_writer};
ALTER POLICY patients_clinician_update ON rowguard.patients TO {clinician_writer};

-- Coordinators assign, unassign and enroll only as writers.
REVOKE INSERT, DELETE ON rowguard.clinicians_patients FROM {coordinator};
GRANT DELETE ON rowguard.clinicians_patients TO {coordinator_writer};
GRANT INSERT (clinician_id, patient_id, care_role) ON rowguard.clinicians_patients TO {coordinator_writer};
ALTER POLICY clinicians_patients_coordinator_insert ON rowguard.clinicians_patients TO {coordinator_writer};
ALTER POLICY clinicians_patients_coordinator_delete ON rowguard.clinicians_patients TO {coordinator_writer};
REVOKE INSERT ON rowguard.clinicians FROM {coordinator};
GRANT INSERT (oidc_issuer, oidc_subject, display_name, active) ON rowguard.clinicians TO {coordinator_writer};
ALTER POLICY clinicians_coordinator_insert ON rowguard.clinicians TO {coordinator_writer};

-- Break-glass and its review are writes too.
REVOKE EXECUTE ON FUNCTION rowguard.request_emergency_access(uuid, text, interval) FROM {clinician};
GRANT EXECUTE ON FUNCTION rowguard.request_emergency_access(uuid, text, interval) TO {clinician_writer};
REVOKE EXECUTE ON FUNCTION rowguard.review_emergency_access(bigint) FROM {auditor};
GRANT EXECUTE ON FUNCTION rowguard.review_emergency_access(bigint) TO {auditor_writer};

-- The audit append names the purpose by the application role, reader or writer alike.
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
  kind text := regexp_replace(coalesce(current_setting('role', true), ''), '_writer$', '');
  base_purpose text;
  emergency uuid[];
  ordinary uuid[];
BEGIN
  base_purpose := CASE
    WHEN kind LIKE '%\_clinician' THEN 'treatment'
    WHEN kind LIKE '%\_coordinator' THEN 'operations'
    WHEN kind LIKE '%\_auditor' THEN 'audit'
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

-- The policies as the migrations left them --------------------------------------------------------
--
-- `rowguard serve` refuses to start when the policies on Rowguard's tables differ from these (a
-- policy added by hand, dropped, or changed): each migration that changes policies ends by
-- calling record_policies(), and nothing else does.
CREATE TABLE rowguard.expected_policies (
  schemaname name NOT NULL,
  tablename name NOT NULL,
  policyname name NOT NULL,
  definition text NOT NULL,
  PRIMARY KEY (schemaname, tablename, policyname)
);
ALTER TABLE rowguard.expected_policies ENABLE ROW LEVEL SECURITY;

-- One policy as text: everything that decides what it lets through.
CREATE FUNCTION rowguard.policy_definitions()
  RETURNS TABLE (schemaname name, tablename name, policyname name, definition text)
  LANGUAGE sql STABLE SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
AS $fn$
  SELECT p.schemaname, p.tablename, p.policyname,
         concat_ws(' | ', p.permissive, p.cmd, array_to_string(ARRAY(SELECT unnest(p.roles) ORDER BY 1), ','),
                   coalesce(p.qual, '-'), coalesce(p.with_check, '-'))
  FROM pg_catalog.pg_policies p
  WHERE p.schemaname IN ('rowguard', 'rowguard_audit')
$fn$;
REVOKE ALL ON FUNCTION rowguard.policy_definitions() FROM PUBLIC;

CREATE FUNCTION rowguard.record_policies() RETURNS void
  LANGUAGE sql SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
AS $fn$
  DELETE FROM rowguard.expected_policies;
  INSERT INTO rowguard.expected_policies SELECT * FROM rowguard.policy_definitions();
$fn$;
REVOKE ALL ON FUNCTION rowguard.record_policies() FROM PUBLIC;

-- How today's policies differ from the recorded ones: 'added', 'dropped' or 'changed', by name.
CREATE FUNCTION rowguard.policy_drift()
  RETURNS TABLE (schemaname name, tablename name, policyname name, change text)
  LANGUAGE sql STABLE SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
AS $fn$
  SELECT coalesce(now_.schemaname, was.schemaname), coalesce(now_.tablename, was.tablename),
         coalesce(now_.policyname, was.policyname),
         CASE WHEN was.policyname IS NULL THEN 'added'
              WHEN now_.policyname IS NULL THEN 'dropped'
              ELSE 'changed' END
  FROM rowguard.policy_definitions() now_
  FULL JOIN rowguard.expected_policies was
    ON was.schemaname = now_.schemaname AND was.tablename = now_.tablename
   AND was.policyname = now_.policyname
  WHERE was.definition IS DISTINCT FROM now_.definition
  ORDER BY 1, 2, 3
$fn$;
REVOKE ALL ON FUNCTION rowguard.policy_drift() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION rowguard.policy_drift() TO {gateway};

-- Functions made before anyone revoked PUBLIC's default EXECUTE on them.
REVOKE ALL ON FUNCTION rowguard.patients_bump_version() FROM PUBLIC;

SELECT rowguard.record_policies();

RESET ROLE;
