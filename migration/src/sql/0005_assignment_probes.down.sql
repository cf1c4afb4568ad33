-- Back to 0004's set-based policies.
SET LOCAL ROLE {owner};

CREATE FUNCTION rowguard.current_clinician_patient_ids() RETURNS SETOF uuid
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
REVOKE ALL ON FUNCTION rowguard.current_clinician_patient_ids() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION rowguard.current_clinician_patient_ids() TO {clinician};

DROP POLICY clinicians_clinician_select ON rowguard.clinicians;
CREATE POLICY clinicians_clinician_select ON rowguard.clinicians
  FOR SELECT TO {clinician}
  USING (
    id = (SELECT nullif(current_setting('app.current_user', true), '')::integer)
    OR id IN (SELECT cp.clinician_id FROM rowguard.clinicians_patients cp)
  );

DROP POLICY clinicians_patients_clinician_select ON rowguard.clinicians_patients;
CREATE POLICY clinicians_patients_clinician_select ON rowguard.clinicians_patients
  FOR SELECT TO {clinician}
  USING (patient_id IN (SELECT rowguard.current_clinician_patient_ids()));

DROP FUNCTION rowguard.shares_a_patient_with_current_clinician(integer);
DROP FUNCTION rowguard.is_current_clinicians_patient(uuid);
RESET ROLE;
