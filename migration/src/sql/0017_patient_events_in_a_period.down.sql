SET LOCAL ROLE {owner};
DROP FUNCTION rowguard_audit.patient_event_ids_between(uuid, timestamptz, timestamptz, integer);
-- The self-check's record of the functions it compares (0015) follows.
SELECT rowguard.record_policies();

RESET ROLE;
