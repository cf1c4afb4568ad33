-- The audit trail's two hot statements, found by running the benchmark's scenarios back to back
-- on one growing trail.
--
-- Recording an access is on every request's path: the emergency split (which patients of a
-- treatment access were reached only through a live emergency grant) first asks whether the
-- clinician holds any live grant at all. The result is the same; the common case costs one
-- index probe instead of one per patient.
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
    WHERE NOT EXISTS (SELECT 1 FROM rowguard.clinicians_patients cp WHERE cp.clinician_id = me AND cp.patient_id = p)
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
