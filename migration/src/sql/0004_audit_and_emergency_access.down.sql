-- Removing the audit trail destroys evidence. This exists so a development database can be rolled
-- back; never run it against production data.
SET LOCAL ROLE {owner};
DROP POLICY clinicians_auditor_select_directory ON rowguard.clinicians;
DROP FUNCTION rowguard_audit.append(text, text, uuid[], text, text, text);
DROP POLICY patients_clinician_emergency_select ON rowguard.patients;
CREATE OR REPLACE FUNCTION rowguard.current_clinician_patient_ids() RETURNS SETOF uuid
  LANGUAGE sql STABLE SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
AS $fn$
  SELECT patient_id FROM rowguard.clinicians_patients
  WHERE clinician_id = (SELECT nullif(current_setting('app.current_user', true), '')::integer)
$fn$;
DROP FUNCTION rowguard.review_emergency_access(bigint);
DROP FUNCTION rowguard.request_emergency_access(uuid, text, interval);
DROP TABLE rowguard.emergency_grants;
RESET ROLE;
DROP SCHEMA rowguard_audit CASCADE;
