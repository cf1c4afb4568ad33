-- The emergency split counts only assignments older than any request may run.
--
-- Which patients of a grant holder's read were reached only through the grant was decided by
-- asking whether the clinician was assigned to each patient when the event was written: a
-- statement after the read (in the read's own transaction, read committed, or in the batch's
-- later transaction). A coordinator's assignment committed in between made a break-glass read
-- look like treatment (21 of 24 races in review). An assignment made in the last
-- `interval '15 minutes'` may not have existed when the read ran, so it no longer opens the
-- patient for treatment here: such a read, of a patient the clinician also holds a grant for, is
-- recorded as emergency. Recording a read as emergency access it may not have needed is the safe
-- side (an auditor reviews it); recording break-glass as treatment is not.
--
-- Why 15 minutes: a request runs at most ROWGUARD_REQUEST_TIMEOUT_MS (now at most 5 minutes),
-- and so does a coordinator's assigning request; a batch is written after the read commits, at
-- most a request's time later. The batch's window for a grant live during the read grows from
-- 0012's 5 minutes to the same 15, for the same reason.
SET LOCAL ROLE {owner};

CREATE OR REPLACE FUNCTION rowguard_audit.append(
  p_action text, p_outcome text, p_patient_ids uuid[], p_operation_name text,
  p_persisted_query_hash text, p_client_id text)
  RETURNS void
  LANGUAGE plpgsql SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
  me integer := (SELECT nullif(current_setting('app.current_user', true), '')::integer);
  app_role text := current_setting('role', true);
  kind text := regexp_replace(coalesce(current_setting('role', true), ''), '_writer$', '');
  base_purpose text;
  emergency uuid[];
  ordinary uuid[];
BEGIN
  base_purpose := CASE
    WHEN kind LIKE '%\_clinician' THEN 'treatment'
    WHEN kind LIKE '%\_coordinator' THEN 'operations'
    WHEN kind LIKE '%\_auditor' THEN 'audit'
    ELSE NULL END;
  IF base_purpose IS NULL THEN
    RAISE EXCEPTION 'audit events are written only under an application role' USING ERRCODE = 'insufficient_privilege';
  END IF;
  p_patient_ids := coalesce(p_patient_ids, '{}');
  -- Most clinicians hold no live emergency grant: one indexed probe says so, and the per-patient
  -- probes below (one per patient on the page) run only for those who do.
  IF base_purpose = 'treatment' AND me IS NOT NULL AND cardinality(p_patient_ids) > 0
     AND EXISTS (SELECT 1 FROM rowguard.emergency_grants g
                 WHERE g.clinician_id = me AND g.expires_at > now()) THEN
    SELECT coalesce(array_agg(p), '{}') INTO emergency FROM unnest(p_patient_ids) AS p
    WHERE NOT EXISTS (SELECT 1 FROM rowguard.clinicians_patients cp WHERE cp.clinician_id = me AND cp.patient_id = p
                      AND cp.assigned_at < now() - interval '15 minutes')
      AND EXISTS (SELECT 1 FROM rowguard.emergency_grants g
                  WHERE g.clinician_id = me AND g.patient_id = p AND g.expires_at > now());
  ELSE
    emergency := '{}';
  END IF;
  ordinary := CASE WHEN cardinality(emergency) = 0 THEN p_patient_ids
              ELSE ARRAY(SELECT p FROM unnest(p_patient_ids) AS p WHERE p <> ALL (emergency)) END;

  INSERT INTO rowguard_audit.events (request_id, correlation_id, trace_id, clinician_id, issuer,
    subject, client_id, app_role, operation_name, persisted_query_hash, action, outcome, patient_ids,
    purpose)
  SELECT nullif(current_setting('app.request_id', true), '')::uuid,
    nullif(current_setting('app.correlation_id', true), ''),
    nullif(current_setting('app.trace_id', true), ''),
    me, nullif(current_setting('app.issuer', true), ''), nullif(current_setting('app.subject', true), ''),
    p_client_id, app_role, p_operation_name, p_persisted_query_hash, p_action, p_outcome, ids, purpose
  FROM (VALUES
          (ordinary, CASE WHEN p_action = 'emergency_access' THEN 'emergency' ELSE base_purpose END,
           cardinality(ordinary) > 0 OR cardinality(p_patient_ids) = 0),
          (emergency, 'emergency', cardinality(emergency) > 0)) AS v(ids, purpose, wanted)
  WHERE wanted;
END
$fn$;

CREATE OR REPLACE FUNCTION rowguard_audit.append_batch(p_events jsonb, p_lock_timeout_ms integer DEFAULT 5000)
  RETURNS integer
  LANGUAGE plpgsql SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
  appended integer;
BEGIN
  IF jsonb_typeof(p_events) IS DISTINCT FROM 'array' THEN
    RAISE EXCEPTION 'an audit batch is a JSON array of events' USING ERRCODE = 'invalid_parameter_value';
  END IF;
  IF p_lock_timeout_ms > 0 THEN
    -- Local to the caller's transaction, which is this statement's own when sent alone.
    PERFORM set_config('lock_timeout', p_lock_timeout_ms || 'ms', true);
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
  -- The patients of a clinician's read that no assignment opens but a grant live in the last
  -- 15 minutes does (see 0012 and above). Most clinicians hold no recent grant: one indexed probe says so,
  -- and the per-patient probes run only for those who do.
  CROSS JOIN LATERAL (
    SELECT CASE
      WHEN e.app_role = '{clinician}' AND e.clinician_id IS NOT NULL
           AND cardinality(e.patient_ids) > 0
           AND EXISTS (SELECT 1 FROM rowguard.emergency_grants g
                       WHERE g.clinician_id = e.clinician_id
                         AND g.expires_at > now() - interval '15 minutes')
      THEN ARRAY(
        SELECT p FROM unnest(e.patient_ids) AS p
        WHERE NOT EXISTS (SELECT 1 FROM rowguard.clinicians_patients cp
                          WHERE cp.clinician_id = e.clinician_id AND cp.patient_id = p
                            AND cp.assigned_at < now() - interval '15 minutes')
          AND EXISTS (SELECT 1 FROM rowguard.emergency_grants g
                      WHERE g.clinician_id = e.clinician_id AND g.patient_id = p
                        AND g.expires_at > now() - interval '15 minutes'))
      ELSE '{}'::uuid[] END AS emergency
    -- Computed once per event: without the fence the planner copies it into each use below.
    OFFSET 0
  ) split
  CROSS JOIN LATERAL (VALUES
    (CASE WHEN cardinality(split.emergency) = 0 THEN coalesce(e.patient_ids, '{}')
          ELSE ARRAY(SELECT p FROM unnest(e.patient_ids) AS p WHERE p <> ALL (split.emergency)) END,
     -- An event that names no reading role has no emergency part, so this row is always
     -- wanted and its purpose always evaluated: the batch is refused.
     CASE WHEN e.app_role = '{clinician}' THEN
            CASE WHEN e.action = 'emergency_access' THEN 'emergency' ELSE 'treatment' END
          WHEN e.app_role = '{coordinator}' THEN
            CASE WHEN e.action = 'emergency_access' THEN 'emergency' ELSE 'operations' END
          WHEN e.app_role = '{auditor}' THEN
            CASE WHEN e.action = 'emergency_access' THEN 'emergency' ELSE 'audit' END
          ELSE rowguard_audit.not_a_reading_role() END,
     cardinality(split.emergency) = 0 OR cardinality(e.patient_ids) > cardinality(split.emergency)),
    (split.emergency, 'emergency', cardinality(split.emergency) > 0)
  ) AS v(ids, purpose, wanted)
  WHERE v.wanted;
  GET DIAGNOSTICS appended = ROW_COUNT;
  RETURN appended;
END
$fn$;

-- The self-check's record of functions policies depend on (0015) follows the new bodies.
SELECT rowguard.record_policies();

RESET ROLE;
