-- Back to 0007: the application roles hold their write privileges themselves again.
SET LOCAL ROLE {owner};

DROP FUNCTION rowguard.policy_drift();
DROP FUNCTION rowguard.record_policies();
DROP FUNCTION rowguard.policy_definitions();
DROP TABLE rowguard.expected_policies;

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

REVOKE EXECUTE ON FUNCTION rowguard.review_emergency_access(bigint) FROM {auditor_writer};
GRANT EXECUTE ON FUNCTION rowguard.review_emergency_access(bigint) TO {auditor};
REVOKE EXECUTE ON FUNCTION rowguard.request_emergency_access(uuid, text, interval) FROM {clinician_writer};
GRANT EXECUTE ON FUNCTION rowguard.request_emergency_access(uuid, text, interval) TO {clinician};

ALTER POLICY clinicians_coordinator_insert ON rowguard.clinicians TO {coordinator};
REVOKE INSERT ON rowguard.clinicians FROM {coordinator_writer};
GRANT INSERT (oidc_issuer, oidc_subject, display_name, active) ON rowguard.clinicians TO {coordinator};
ALTER POLICY clinicians_patients_coordinator_delete ON rowguard.clinicians_patients TO {coordinator};
ALTER POLICY clinicians_patients_coordinator_insert ON rowguard.clinicians_patients TO {coordinator};
REVOKE INSERT, DELETE ON rowguard.clinicians_patients FROM {coordinator_writer};
GRANT DELETE ON rowguard.clinicians_patients TO {coordinator};
GRANT INSERT (clinician_id, patient_id, care_role) ON rowguard.clinicians_patients TO {coordinator};

ALTER POLICY patients_clinician_update ON rowguard.patients TO {clinician};
REVOKE UPDATE ON rowguard.patients FROM {clinician_writer};
GRANT UPDATE (given_name, family_name, birth_date, clinical_notes) ON rowguard.patients TO {clinician};

RESET ROLE;

-- Roles are shared by every database with this prefix; drop them only when none uses them.
DO $roles$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_catalog.pg_shdepend d
                 JOIN pg_catalog.pg_roles r ON r.oid = d.refobjid
                 WHERE r.rolname IN ('{clinician_writer}', '{coordinator_writer}', '{auditor_writer}')
                   AND d.dbid <> (SELECT oid FROM pg_catalog.pg_database WHERE datname = current_database())) THEN
    DROP ROLE IF EXISTS {clinician_writer};
    DROP ROLE IF EXISTS {coordinator_writer};
    DROP ROLE IF EXISTS {auditor_writer};
  END IF;
END
$roles$;
