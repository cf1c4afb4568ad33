-- A patient's accounting for a period costs what the period holds, not the patient's history.
--
-- `patientAccessReport(patientId, from, to)` asked 0010's function for every event id the patient
-- ever had and filtered them by time afterwards: a one-second period of a patient with 610,000
-- recorded lookups read all of them (0.74 s, growing with the history), so flooding a patient's
-- record with lookups could push every period past the statement timeout. This function applies
-- the period inside, where the events table's partitions by time are pruned and the patient's
-- index is read only in the months the period touches. The same checks as 0010's: only an
-- auditor's transaction with an identity gets anything.
SET LOCAL ROLE {owner};

CREATE FUNCTION rowguard_audit.patient_event_ids_between(
  p_patient uuid, p_from timestamptz, p_to timestamptz, p_limit integer)
  RETURNS SETOF bigint
  LANGUAGE plpgsql STABLE SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
  -- A generic plan, chosen after a few calls with the period unknown, read the period through
  -- the time index and tested every event of it for the patient (the whole trail, for a year).
  SET plan_cache_mode = force_custom_plan
  ROWS 100
AS $fn$
BEGIN
  IF nullif(current_setting('app.current_user', true), '')::integer IS NULL
     OR NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles r
                    WHERE r.rolname = current_setting('role', true)
                      AND pg_catalog.pg_has_role(r.oid, '{auditor}', 'USAGE')) THEN
    RETURN;
  END IF;
  RETURN QUERY
    WITH matching AS MATERIALIZED (
      SELECT e.id FROM rowguard_audit.events e
      WHERE e.patient_ids @> ARRAY[p_patient]
        AND e.occurred_at >= coalesce(p_from, '-infinity'::timestamptz)
        AND e.occurred_at < coalesce(p_to, 'infinity'::timestamptz))
    SELECT m.id FROM matching m ORDER BY m.id LIMIT p_limit;
END
$fn$;
REVOKE ALL ON FUNCTION rowguard_audit.patient_event_ids_between(uuid, timestamptz, timestamptz, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION rowguard_audit.patient_event_ids_between(uuid, timestamptz, timestamptz, integer) TO {auditor};

-- The self-check's record of the functions it compares (0015) follows.
SELECT rowguard.record_policies();

RESET ROLE;
