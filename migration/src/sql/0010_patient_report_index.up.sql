-- The auditor's per-patient queries, index-driven under row level security.
--
-- `patientAccessReport` and `auditEvents(filter: {patientId})` ask for the events whose
-- `patient_ids` contain one patient. Under the auditor's row level security policy PostgreSQL
-- may use a condition as an index condition only if its operator is LEAKPROOF (it could otherwise
-- see rows the policy hides), and the array containment operator `@>` is not. So the GIN index on
-- `patient_ids` was never used for an auditor: every report read the whole trail (a sequential
-- scan of every partition; seconds at 10M events). Marking the operator leakproof takes a
-- superuser; instead this function, owned by the schema owner and so not subject to the policy,
-- finds the events through the index and applies the policy's own conditions itself: the caller
-- runs as an auditor (the transaction's role) with an identity. The gateway then reads those
-- events by id (`id = ANY(...)`, a leakproof condition) through the ordinary policy.
SET LOCAL ROLE {owner};

-- PL/pgSQL rather than SQL: a SQL function's statement is planned once with the patient unknown,
-- and with the generic estimate for `@>` the planner preferred reading the partition; PL/pgSQL
-- plans with the patient's value, from the index's statistics.
CREATE FUNCTION rowguard_audit.patient_event_ids(p_patient uuid) RETURNS SETOF bigint
  LANGUAGE plpgsql STABLE SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
  ROWS 100
AS $fn$
BEGIN
  -- The auditor policy's conditions: an identity, and a transaction running as an auditor.
  -- Only auditors may execute the function; the role the transaction switched to is checked
  -- as well, so that a login role that held the auditor's rights by inheritance would still
  -- get nothing outside a request's scope.
  IF nullif(current_setting('app.current_user', true), '') IS NULL
     OR NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles r
                    WHERE r.rolname = current_setting('role', true)
                      AND pg_catalog.pg_has_role(r.oid, '{auditor}', 'USAGE')) THEN
    RETURN;
  END IF;
  RETURN QUERY SELECT e.id FROM rowguard_audit.events e WHERE e.patient_ids @> ARRAY[p_patient];
END
$fn$;
REVOKE ALL ON FUNCTION rowguard_audit.patient_event_ids(uuid) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION rowguard_audit.patient_event_ids(uuid) TO {auditor};
RESET ROLE;
