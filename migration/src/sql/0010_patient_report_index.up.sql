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
-- The ids come in id order after `p_after`, at most `p_limit` of them (NULL: no bound), so a
-- report or a page about a patient with a long history reads back only the events it returns.
CREATE FUNCTION rowguard_audit.patient_event_ids(p_patient uuid, p_after bigint, p_limit integer)
  RETURNS SETOF bigint
  LANGUAGE plpgsql STABLE SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
  ROWS 100
AS $fn$
BEGIN
  -- The auditor policy's conditions, in its own terms: an identity (a clinician id, cast as the
  -- policy casts it), and a transaction running as an auditor.
  -- Only auditors may execute the function; the role the transaction switched to is checked
  -- as well, so that a login role that held the auditor's rights by inheritance would still
  -- get nothing outside a request's scope.
  IF nullif(current_setting('app.current_user', true), '')::integer IS NULL
     OR NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles r
                    WHERE r.rolname = current_setting('role', true)
                      AND pg_catalog.pg_has_role(r.oid, '{auditor}', 'USAGE')) THEN
    RETURN;
  END IF;
  -- The matches are collected first (through the patient index) and only then ordered and cut.
  -- Asked as one ordered, limited query, the planner walked the id index from the start of the
  -- trail hoping to meet `p_limit` matches early: 6.3 s at 10.7M events for a patient with 100.
  RETURN QUERY
    WITH matching AS MATERIALIZED (
      SELECT e.id FROM rowguard_audit.events e
      WHERE e.patient_ids @> ARRAY[p_patient] AND e.id > coalesce(p_after, -1))
    SELECT m.id FROM matching m ORDER BY m.id LIMIT p_limit;
END
$fn$;
REVOKE ALL ON FUNCTION rowguard_audit.patient_event_ids(uuid, bigint, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION rowguard_audit.patient_event_ids(uuid, bigint, integer) TO {auditor};
RESET ROLE;
