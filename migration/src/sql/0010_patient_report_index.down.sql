SET LOCAL ROLE {owner};
DROP FUNCTION rowguard_audit.patient_event_ids(uuid, bigint, integer);
RESET ROLE;
