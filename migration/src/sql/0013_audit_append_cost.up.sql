-- What recording a read costs the database, measured statement by statement.
--
-- On the gateway's own schema (PostgreSQL 15, batches of three 20-patient events, four pgbench
-- clients, 10 s runs, whole-machine CPU per event, sealer held off, three alternating rounds):
--
--   a plain INSERT of the same rows by the owner                      40–43 µs
--   0012's append_batch                                               86–89 µs
--   this migration's append_batch                                     65–67 µs
--
-- * The emergency split. 0012 computed the patients reached only through an emergency grant in a
--   LATERAL subquery that the planner pulled up into each of its six uses: every event ran the
--   grant probe six times and the plan had 18 subplans (2.6 ms to plan). `OFFSET 0` keeps the
--   subquery whole, so it runs once per event. Same rows, same order, same purposes.
-- * The role check read the whole batch a second time (`jsonb_array_elements`). The purpose's
--   CASE now refuses an event whose role is not a reading role (42501) inside the INSERT: all or
--   nothing as before. (A batch that is also malformed otherwise, e.g. an event that is not an
--   object, may now fail first with that error's code instead; it is refused either way.)
-- * The bound on the batch's wait. The gateway ran `SET LOCAL statement_timeout` before every
--   batch, a round trip of its own. What can hold a batch of at most 256 requests for long is a
--   lock (a partition being created, attached or detached); the function now bounds each lock
--   wait itself (`lock_timeout`, from the gateway's statement timeout passed as an argument), so
--   the gateway can send the batch as one statement in its own implicit transaction: one round
--   trip instead of four (BEGIN, SET, SELECT, COMMIT).
--
-- And seal lag with a backlog. `oldest_unsealed` runs in every seal round and looked at up to
-- 100,000 waiting events in sealing order (an index entry and a heap fetch each). With a backlog
-- that was most of the round: a sealer that fell behind sealed ~7,000 events/s while the
-- gateway wrote 13,000/s, and so never caught up (measured). Looking at the first 1,000 events in
-- sealing order finds the oldest in practice (sealing order follows transaction ids, which
-- follow time); the same sealer then sealed 71,000 events/s.
SET LOCAL ROLE {owner};

-- Raises the error a batch gets for an event that does not name a reading role. A function, so
-- that it can stand in the purpose's CASE, which is evaluated for every event anyway.
CREATE FUNCTION rowguard_audit.not_a_reading_role() RETURNS text
  LANGUAGE plpgsql
  SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
  RAISE EXCEPTION 'audit events are written only for a reading application role'
    USING ERRCODE = 'insufficient_privilege';
END
$fn$;
REVOKE ALL ON FUNCTION rowguard_audit.not_a_reading_role() FROM PUBLIC;

DROP FUNCTION rowguard_audit.append_batch(jsonb);

-- Appends a batch of read events, given as a JSON array of objects with the events' columns,
-- waiting at most `p_lock_timeout_ms` for a lock (0: the session's own `lock_timeout`). Returns
-- how many events were appended (an access split into treatment and emergency counts twice). All
-- or nothing: one bad event refuses the whole batch. The timeout has a default so that a gateway
-- of the previous release, which calls it with the events alone, keeps working during an upgrade.
CREATE FUNCTION rowguard_audit.append_batch(p_events jsonb, p_lock_timeout_ms integer DEFAULT 5000)
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
  -- 5 minutes does (see 0012). Most clinicians hold no recent grant: one indexed probe says so,
  -- and the per-patient probes run only for those who do.
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
REVOKE ALL ON FUNCTION rowguard_audit.append_batch(jsonb, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION rowguard_audit.append_batch(jsonb, integer) TO {gateway};

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
  -- The oldest among the first 1,000 waiting events in sealing order (the (txid, id) index), so
  -- the cost stays the same however far the sealer is behind.
  RETURN (SELECT min(u.occurred_at) FROM (
            SELECT e.occurred_at FROM rowguard_audit.events e
            WHERE (e.txid, e.id) > (coalesce(v_txid, -1), coalesce(v_id, -1))
            ORDER BY e.txid, e.id
            LIMIT 1000) u);
END
$fn$;

RESET ROLE;
