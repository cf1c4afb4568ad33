-- Separation of duties: a coordinator puts others on care teams, never themselves. The
-- directory stores no role per person, so a coordinator whose identity provider also gives them
-- the clinician role could otherwise open any patient to themselves by assigning it, and read
-- it as a clinician. (An assignment already made stays; `rowguard check` does not look for it.)
SET LOCAL ROLE {owner};

ALTER POLICY clinicians_patients_coordinator_insert ON rowguard.clinicians_patients
  WITH CHECK (
    assigned_by = (SELECT nullif(current_setting('app.current_user', true), '')::integer)
    AND clinician_id <> assigned_by
  );

-- The policies as this migration leaves them are the ones the self-check expects.
SELECT rowguard.record_policies();

RESET ROLE;
