SET LOCAL ROLE {owner};

DROP POLICY clinicians_coordinator_update ON rowguard.clinicians;
DROP POLICY clinicians_coordinator_insert ON rowguard.clinicians;
DROP POLICY clinicians_coordinator_select ON rowguard.clinicians;
DROP POLICY clinicians_auditor_select_self ON rowguard.clinicians;
DROP POLICY clinicians_clinician_select ON rowguard.clinicians;
REVOKE ALL ON rowguard.clinicians FROM {clinician}, {coordinator}, {auditor};

DROP POLICY clinicians_patients_coordinator_delete ON rowguard.clinicians_patients;
DROP POLICY clinicians_patients_coordinator_insert ON rowguard.clinicians_patients;
DROP POLICY clinicians_patients_coordinator_select ON rowguard.clinicians_patients;
DROP POLICY clinicians_patients_clinician_select ON rowguard.clinicians_patients;
REVOKE ALL ON rowguard.clinicians_patients FROM {clinician}, {coordinator};

DROP POLICY patients_owner_import ON rowguard.patients;
DROP POLICY patients_coordinator_select ON rowguard.patients;
DROP POLICY patients_clinician_update ON rowguard.patients;
DROP POLICY patients_clinician_select ON rowguard.patients;
REVOKE ALL ON rowguard.patients FROM {clinician}, {coordinator};

-- Row level security stays enabled on the bare tables: with no grants left, nothing is readable,
-- and a half-migrated database fails closed rather than open.
DROP FUNCTION rowguard.current_clinician_patient_ids();
DROP FUNCTION rowguard.clinician_id_for(text, text);

RESET ROLE;
