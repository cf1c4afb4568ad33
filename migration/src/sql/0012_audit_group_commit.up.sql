-- Recording a read off the read's own transaction, many requests per write (group commit).
--
-- An audited read used to be a read-write transaction: the page query, then the append, then a
-- COMMIT that assigns a transaction id and writes a commit record. Against the same read with
-- the audit off (a read-only transaction, no transaction id, no WAL) that doubled the
-- database's work per request. Now a read commits read-only, and the gateway hands its events
-- to one writer that appends whatever has queued in one statement and one transaction, and
-- answers the request only once that transaction has committed: no answer leaves without its
-- record, and a failed write still refuses the answer.
--
-- Two things the per-request append decided from the request's own transaction are kept:
--
-- * Emergency access. Which patients of a clinician's read were reached only through an
--   emergency grant is decided against the read's snapshot where that is known in time: the
--   identity statement asks once whether the clinician holds any live grant, and if so that
--   request keeps the read-write transaction and the in-transaction append. A grant created
--   while a read was already running (after the identity statement, before the page query) is
--   caught here instead: the batch splits a clinician's patients the same way, counting a grant
--   as live if it was live at any time in the last `interval '5 minutes'` (longer than any
--   request may run), so such an access is recorded as emergency, never as treatment.
-- * Who the actor was. The batch names each event's role, clinician, issuer and subject; only
--   the gateway's login role may call it, the role that sets those same facts on every
--   request's transaction anyway, so it can claim nothing it could not claim before. The role
--   must be one of the three reading roles, and the purpose follows from it and from the
--   grants, not from the batch.
SET LOCAL ROLE {owner};

-- True when `p_clinician` holds an emergency grant that has not expired. PL/pgSQL, so the plan
-- is kept per connection (it runs in every clinician's identity statement).
CREATE FUNCTION rowguard.holds_live_emergency_grant(p_clinician integer) RETURNS boolean
  LANGUAGE plpgsql STABLE SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
  RETURN p_clinician IS NOT NULL AND EXISTS (
    SELECT 1 FROM rowguard.emergency_grants g
    WHERE g.clinician_id = p_clinician AND g.expires_at > now());
END
$fn$;
REVOKE ALL ON FUNCTION rowguard.holds_live_emergency_grant(integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION rowguard.holds_live_emergency_grant(integer) TO {gateway};

-- Appends a batch of read events, given as a JSON array of objects with the events' columns.
-- Returns how many events were appended (an access split into treatment and emergency counts
-- twice). All or nothing: one bad event refuses the whole batch.
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

RESET ROLE;
