-- Policies whose cost does not grow with the caller's caseload.
--
-- 0003/0004 filtered clinicians_patients (and through it the clinician directory) with
--     patient_id IN (SELECT rowguard.current_clinician_patient_ids())
-- which builds the clinician's whole patient set (about 2,000 ids per clinician at 1M patients) in
-- every statement that touches the table, including inside the patients policy's own probe: a
-- first page of 20 patients cost ~30 ms at 1M patients against ~1 ms at 10k. The policies below
-- ask a yes/no question per candidate row instead, answered from the indexes in a few probes,
-- whatever the caseload. Who sees what is unchanged (the RLS specs pin it both ways).
SET LOCAL ROLE {owner};

-- Is `patient` open to the current clinician: assigned to them, or under an active emergency grant?
-- SECURITY DEFINER because it reads clinicians_patients, whose policy calls it (a policy may not
-- query its own table); runs as the owner, for whom that table is not FORCEd. A missing identity
-- makes both probes compare with NULL: false.
CREATE FUNCTION rowguard.is_current_clinicians_patient(patient uuid) RETURNS boolean
  LANGUAGE sql STABLE SECURITY DEFINER PARALLEL SAFE
  SET search_path = pg_catalog, pg_temp
AS $fn$
  SELECT EXISTS (
           SELECT 1 FROM rowguard.clinicians_patients
           WHERE patient_id = patient
             AND clinician_id = nullif(current_setting('app.current_user', true), '')::integer)
      OR EXISTS (
           SELECT 1 FROM rowguard.emergency_grants
           WHERE patient_id = patient
             AND clinician_id = nullif(current_setting('app.current_user', true), '')::integer
             AND expires_at > now())
$fn$;
REVOKE ALL ON FUNCTION rowguard.is_current_clinicians_patient(uuid) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION rowguard.is_current_clinicians_patient(uuid) TO {clinician};

-- Is `colleague` on the care team of one of the current clinician's patients (assigned or opened
-- by an emergency grant)? Stops at the first shared patient.
CREATE FUNCTION rowguard.shares_a_patient_with_current_clinician(colleague integer) RETURNS boolean
  LANGUAGE sql STABLE SECURITY DEFINER PARALLEL SAFE
  SET search_path = pg_catalog, pg_temp
AS $fn$
  SELECT EXISTS (
           SELECT 1
           FROM rowguard.clinicians_patients theirs
           JOIN rowguard.clinicians_patients mine ON mine.patient_id = theirs.patient_id
           WHERE theirs.clinician_id = colleague
             AND mine.clinician_id = nullif(current_setting('app.current_user', true), '')::integer)
      OR EXISTS (
           SELECT 1
           FROM rowguard.clinicians_patients theirs
           JOIN rowguard.emergency_grants g ON g.patient_id = theirs.patient_id
           WHERE theirs.clinician_id = colleague
             AND g.clinician_id = nullif(current_setting('app.current_user', true), '')::integer
             AND g.expires_at > now())
$fn$;
REVOKE ALL ON FUNCTION rowguard.shares_a_patient_with_current_clinician(integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION rowguard.shares_a_patient_with_current_clinician(integer) TO {clinician};

-- A clinician sees the care team of each of their own patients. Their own rows pass on the first
-- comparison; a colleague's row costs one probe.
DROP POLICY clinicians_patients_clinician_select ON rowguard.clinicians_patients;
CREATE POLICY clinicians_patients_clinician_select ON rowguard.clinicians_patients
  FOR SELECT TO {clinician}
  USING (
    clinician_id = (SELECT nullif(current_setting('app.current_user', true), '')::integer)
    OR rowguard.is_current_clinicians_patient(patient_id)
  );

-- A clinician sees themselves and the members of their patients' care teams.
DROP POLICY clinicians_clinician_select ON rowguard.clinicians;
CREATE POLICY clinicians_clinician_select ON rowguard.clinicians
  FOR SELECT TO {clinician}
  USING (
    id = (SELECT nullif(current_setting('app.current_user', true), '')::integer)
    OR rowguard.shares_a_patient_with_current_clinician(id)
  );

-- No policy uses the set-returning helper any more.
DROP FUNCTION rowguard.current_clinician_patient_ids();
RESET ROLE;
