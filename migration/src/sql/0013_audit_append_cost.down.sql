SET LOCAL ROLE {owner};

DROP FUNCTION rowguard_audit.append_batch(jsonb, integer);
DROP FUNCTION rowguard_audit.not_a_reading_role();

-- 0012's append_batch and 0009's oldest_unsealed, as they were.
CREATE FUNCTION rowguard_audit.append_batch(p_events jsonb) RETURNS integer
  LANGUAGE plpgsql SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
  appended integer;
BEGIN
  IF jsonb_typeof(p_events) IS DISTINCT FROM 'array' THEN
    RAISE EXCEPTION 'an audit batch is a JSON array of events' USING ERRCODE = 'invalid_parameter_value';
  END IF;
  IF EXISTS (SELECT 1 FROM jsonb_array_elements(p_events) x
             WHERE x->>'app_role' IS NULL
                OR x->>'app_role' NOT IN ('{clinician}', '{coordinator}', '{auditor}')) THEN
    RAISE EXCEPTION 'audit events are written only for a reading application role'
      USING ERRCODE = 'insufficient_privilege';
  END IF;
  INSERT INTO rowguard_audit.events (request_id, correlation_id, trace_id, clinician_id, issuer,
    subject, client_id, app_role, operation_name, persisted_query_hash, action, outcome, patient_ids,
    purpose)
  SELECT e.request_id, e.correlation_id, e.trace_id, e.clinician_id, e.issuer, e.subject,
    e.client_id, e.app_role, e.operation_name, e.persisted_query_hash, e.action, e.outcome,
    v.ids, v.purpose
  FROM jsonb_to_recordset(p_events) AS e(request_id uuid, correlation_id text, trace_id text,
    clinician_id integer, issuer text, subject text, client_id text, app_role text,
    operation_name text, persisted_query_hash text, action text, outcome text, patient_ids uuid[])
  -- The patients of a clinician's read that no assignment opens but a recent grant does. Most
  -- clinicians hold no recent grant: one indexed probe says so, and the per-patient probes run
  -- only for those who do.
  CROSS JOIN LATERAL (
    SELECT CASE
      WHEN e.app_role = '{clinician}' AND e.clinician_id IS NOT NULL
           AND cardinality(e.patient_ids) > 0
           AND EXISTS (SELECT 1 FROM rowguard.emergency_grants g
                       WHERE g.clinician_id = e.clinician_id
                         AND g.expires_at > now() - interval '5 minutes')
      THEN ARRAY(
        SELECT p FROM unnest(e.patient_ids) AS p
        WHERE NOT EXISTS (SELECT 1 FROM rowguard.clinicians_patients cp
                          WHERE cp.clinician_id = e.clinician_id AND cp.patient_id = p)
          AND EXISTS (SELECT 1 FROM rowguard.emergency_grants g
                      WHERE g.clinician_id = e.clinician_id AND g.patient_id = p
                        AND g.expires_at > now() - interval '5 minutes'))
      ELSE '{}'::uuid[] END AS emergency
  ) split
  CROSS JOIN LATERAL (VALUES
    (CASE WHEN cardinality(split.emergency) = 0 THEN coalesce(e.patient_ids, '{}')
          ELSE ARRAY(SELECT p FROM unnest(e.patient_ids) AS p WHERE p <> ALL (split.emergency)) END,
     CASE WHEN e.action = 'emergency_access' THEN 'emergency'
          WHEN e.app_role = '{clinician}' THEN 'treatment'
          WHEN e.app_role = '{coordinator}' THEN 'operations'
          WHEN e.app_role = '{auditor}' THEN 'audit' END,
     cardinality(split.emergency) = 0 OR cardinality(e.patient_ids) > cardinality(split.emergency)),
    (split.emergency, 'emergency', cardinality(split.emergency) > 0)
  ) AS v(ids, purpose, wanted)
  WHERE v.wanted;
  GET DIAGNOSTICS appended = ROW_COUNT;
  RETURN appended;
END
$fn$;
REVOKE ALL ON FUNCTION rowguard_audit.append_batch(jsonb) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION rowguard_audit.append_batch(jsonb) TO {gateway};

-- Seal lag, asked in every seal round and by every replica's readiness.
CREATE OR REPLACE FUNCTION rowguard_audit.oldest_unsealed() RETURNS timestamptz
  LANGUAGE plpgsql STABLE SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
  v_txid bigint;
  v_id bigint;
BEGIN
  SELECT h.after_txid, h.after_id INTO v_txid, v_id FROM rowguard_audit.chain_head() h;
  -- Walk the unsealed events in sealing order on the (txid, id) index, so the cost follows the
  -- backlog, not the trail. Asked as min(occurred_at) over the whole filter, the planner walked
  -- the occurred_at index from the trail's first event through every sealed one (0.8 s at 270k
  -- events, in every seal round, growing with the trail). Past 100,000 waiting events the
  -- answer is the oldest among the first 100,000 in sealing order: already far past any alert.
  RETURN (SELECT min(u.occurred_at) FROM (
            SELECT e.occurred_at FROM rowguard_audit.events e
            WHERE (e.txid, e.id) > (coalesce(v_txid, -1), coalesce(v_id, -1))
            ORDER BY e.txid, e.id
            LIMIT 100000) u);
END
$fn$;

RESET ROLE;
