-- Grants and policies live in one migration on purpose: rolling this migration back removes the
-- application roles' privileges together with the policies, so there is never a state where a
-- role can read a table whose policies are gone.
--
-- Every policy reads the caller's identity as
--     (SELECT nullif(current_setting('app.current_user', true), '')::integer)
--  * `true` (missing_ok): an unset setting is NULL instead of an error;
--  * nullif(..., ''): after a transaction-local setting ends, the session reads '' rather than
--    NULL, and ''::integer would raise and poison the pooled connection; NULL matches no row;
--  * the scalar subquery: the planner evaluates it once per statement (an InitPlan) instead of
--    once per row.
SET LOCAL ROLE {owner};

-- Identity lookup -----------------------------------------------------------------------------

-- Maps a verified token's (issuer, subject) to an active clinician id, for the gateway's one
-- "set identity" statement. SECURITY DEFINER so the gateway login role needs no privilege on
-- `clinicians`; it runs as the owner, which `clinicians` does not FORCE row level security for.
-- Unknown or inactive people get NULL, which every policy treats as "no rows".
CREATE FUNCTION rowguard.clinician_id_for(issuer text, subject text) RETURNS integer
  LANGUAGE sql STABLE SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
AS $fn$
  SELECT id FROM rowguard.clinicians
  WHERE oidc_issuer = issuer AND oidc_subject = subject AND active
$fn$;
REVOKE ALL ON FUNCTION rowguard.clinician_id_for(text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION rowguard.clinician_id_for(text, text)
  TO {gateway}, {clinician}, {coordinator}, {auditor};

-- The patients assigned to the current clinician. The clinician's policy on clinicians_patients
-- ("assignments of my patients") would have to query clinicians_patients itself, which PostgreSQL
-- rejects as infinite recursion. This SECURITY DEFINER helper breaks the cycle: it runs as the
-- owner, and clinicians_patients does not FORCE row level security, so the helper reads it
-- unfiltered while still returning only the caller's own assignments.
CREATE FUNCTION rowguard.current_clinician_patient_ids() RETURNS SETOF uuid
  LANGUAGE sql STABLE SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
AS $fn$
  SELECT patient_id FROM rowguard.clinicians_patients
  WHERE clinician_id = (SELECT nullif(current_setting('app.current_user', true), '')::integer)
$fn$;
REVOKE ALL ON FUNCTION rowguard.current_clinician_patient_ids() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION rowguard.current_clinician_patient_ids() TO {clinician};

-- patients ------------------------------------------------------------------------------------

-- FORCE: even the owner role is filtered, so a misconfigured deployment that serves as the owner
-- reads no patient at all. The owner keeps one INSERT-only policy below so data can be imported
-- (seeding, ETL) without ever reading PHI back through it.
ALTER TABLE rowguard.patients ENABLE ROW LEVEL SECURITY;
ALTER TABLE rowguard.patients FORCE ROW LEVEL SECURITY;

-- Minimum necessary by column: clinicians read and edit the record including clinical notes;
-- coordinators read demographics only (asking for clinical_notes is a permission error).
-- Nobody is granted DELETE: patient records are never deleted through the gateway.
GRANT SELECT ON rowguard.patients TO {clinician};
GRANT UPDATE (given_name, family_name, birth_date, clinical_notes) ON rowguard.patients TO {clinician};
GRANT SELECT (id, mrn, given_name, family_name, birth_date, version, updated_at)
  ON rowguard.patients TO {coordinator};

-- A clinician sees exactly the patients assigned to them. The probe uses the
-- (patient_id, clinician_id) index once per candidate row.
CREATE POLICY patients_clinician_select ON rowguard.patients
  FOR SELECT TO {clinician}
  USING (EXISTS (
    SELECT 1 FROM rowguard.clinicians_patients cp
    WHERE cp.patient_id = patients.id
      AND cp.clinician_id = (SELECT nullif(current_setting('app.current_user', true), '')::integer)
  ));

-- One command per policy (`FOR SELECT, UPDATE` is not valid SQL). USING decides which rows an
-- UPDATE may touch; WITH CHECK refuses a new row version the clinician could no longer see, so
-- nobody can move a record out of their own reach (or into someone else's).
CREATE POLICY patients_clinician_update ON rowguard.patients
  FOR UPDATE TO {clinician}
  USING (EXISTS (
    SELECT 1 FROM rowguard.clinicians_patients cp
    WHERE cp.patient_id = patients.id
      AND cp.clinician_id = (SELECT nullif(current_setting('app.current_user', true), '')::integer)
  ))
  WITH CHECK (EXISTS (
    SELECT 1 FROM rowguard.clinicians_patients cp
    WHERE cp.patient_id = patients.id
      AND cp.clinician_id = (SELECT nullif(current_setting('app.current_user', true), '')::integer)
  ));

-- Coordinators assign clinicians, so they see every patient's demographics, but only as an
-- identified, active person: an unknown identity still reads nothing.
CREATE POLICY patients_coordinator_select ON rowguard.patients
  FOR SELECT TO {coordinator}
  USING ((SELECT nullif(current_setting('app.current_user', true), '')::integer) IS NOT NULL);

-- See FORCE above: the owner may load patients but never read them (as the table's owner it
-- already holds the privilege; FORCE makes this policy the only thing that lets it act).
CREATE POLICY patients_owner_import ON rowguard.patients
  FOR INSERT TO {owner}
  WITH CHECK (true);

-- clinicians_patients --------------------------------------------------------------------------

-- Enabled but not FORCEd: current_clinician_patient_ids() must read it unfiltered as the owner.
ALTER TABLE rowguard.clinicians_patients ENABLE ROW LEVEL SECURITY;

GRANT SELECT ON rowguard.clinicians_patients TO {clinician};
-- assigned_at and assigned_by come from their defaults: a coordinator cannot back-date an
-- assignment or sign it in someone else's name.
GRANT SELECT, DELETE ON rowguard.clinicians_patients TO {coordinator};
GRANT INSERT (clinician_id, patient_id, care_role) ON rowguard.clinicians_patients TO {coordinator};

-- A clinician sees the care team of each of their own patients (which includes their own rows).
CREATE POLICY clinicians_patients_clinician_select ON rowguard.clinicians_patients
  FOR SELECT TO {clinician}
  USING (patient_id IN (SELECT rowguard.current_clinician_patient_ids()));

CREATE POLICY clinicians_patients_coordinator_select ON rowguard.clinicians_patients
  FOR SELECT TO {coordinator}
  USING ((SELECT nullif(current_setting('app.current_user', true), '')::integer) IS NOT NULL);

-- The assignment must be signed by the coordinator making it (the default fills it in).
CREATE POLICY clinicians_patients_coordinator_insert ON rowguard.clinicians_patients
  FOR INSERT TO {coordinator}
  WITH CHECK (
    assigned_by = (SELECT nullif(current_setting('app.current_user', true), '')::integer)
  );

CREATE POLICY clinicians_patients_coordinator_delete ON rowguard.clinicians_patients
  FOR DELETE TO {coordinator}
  USING ((SELECT nullif(current_setting('app.current_user', true), '')::integer) IS NOT NULL);

-- clinicians ------------------------------------------------------------------------------------

-- Enabled but not FORCEd: clinician_id_for() must read it unfiltered as the owner.
ALTER TABLE rowguard.clinicians ENABLE ROW LEVEL SECURITY;

-- Clinicians see names, not the identity-provider coordinates of their colleagues; auditors see
-- their own row only (to answer "who am I").
GRANT SELECT (id, display_name, active) ON rowguard.clinicians TO {clinician}, {auditor};
GRANT SELECT ON rowguard.clinicians TO {coordinator};
GRANT INSERT (oidc_issuer, oidc_subject, display_name, active) ON rowguard.clinicians TO {coordinator};
GRANT UPDATE (display_name, active) ON rowguard.clinicians TO {coordinator};

-- A clinician sees themselves and the members of their patients' care teams; the subquery is
-- filtered by clinicians_patients' own policy, which does not come back to this table.
CREATE POLICY clinicians_clinician_select ON rowguard.clinicians
  FOR SELECT TO {clinician}
  USING (
    id = (SELECT nullif(current_setting('app.current_user', true), '')::integer)
    OR id IN (SELECT cp.clinician_id FROM rowguard.clinicians_patients cp)
  );

CREATE POLICY clinicians_auditor_select_self ON rowguard.clinicians
  FOR SELECT TO {auditor}
  USING (id = (SELECT nullif(current_setting('app.current_user', true), '')::integer));

-- The directory coordinators assign from, and enrolment of new clinicians.
CREATE POLICY clinicians_coordinator_select ON rowguard.clinicians
  FOR SELECT TO {coordinator}
  USING ((SELECT nullif(current_setting('app.current_user', true), '')::integer) IS NOT NULL);

CREATE POLICY clinicians_coordinator_insert ON rowguard.clinicians
  FOR INSERT TO {coordinator}
  WITH CHECK ((SELECT nullif(current_setting('app.current_user', true), '')::integer) IS NOT NULL);

CREATE POLICY clinicians_coordinator_update ON rowguard.clinicians
  FOR UPDATE TO {coordinator}
  USING ((SELECT nullif(current_setting('app.current_user', true), '')::integer) IS NOT NULL)
  WITH CHECK ((SELECT nullif(current_setting('app.current_user', true), '')::integer) IS NOT NULL);

RESET ROLE;
