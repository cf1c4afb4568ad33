SET LOCAL ROLE {owner};

ALTER POLICY clinicians_patients_coordinator_insert ON rowguard.clinicians_patients
  WITH CHECK (
    assigned_by = (SELECT nullif(current_setting('app.current_user', true), '')::integer)
  );

-- The policies as this migration leaves them are the ones the self-check expects.
SELECT rowguard.record_policies();

RESET ROLE;
