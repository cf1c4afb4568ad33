SET LOCAL ROLE {owner};
DROP FUNCTION rowguard_audit.append_batch(jsonb);
DROP FUNCTION rowguard.holds_live_emergency_grant(integer);
RESET ROLE;
