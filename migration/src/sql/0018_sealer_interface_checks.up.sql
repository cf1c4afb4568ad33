-- What the gateway's login role can do through the sealer's interface, and when a grant is reviewed.
--
-- 1. `extend_chain` stored any link it was given. Whoever held the gateway's login (or any
--    application role, which can `RESET ROLE` to it) could append a link naming an event that
--    does not exist, with a transaction id far in the future: the sealer then sealed nothing more
--    (its position was past every real event) while its seal lag read 0, and signed checkpoints
--    over that head. A link must now describe the next final event: it exists with that id,
--    time and transaction, its transaction ended before every running one began, it comes after
--    the previous link in sealing order with no event left out between them, its sequence number
--    and previous hash follow on, and its hash has the length of a SHA-256 (arrays given with
--    other bounds than 1, which made subscripts NULL and comparisons pass, are refused). The hash itself is the gateway's to compute (the canonical
--    form is defined in Rust, not by a function the owner could replace): a wrong one is what
--    `rowguard audit verify` reports.
-- 2. `ensure_partitions` created partitions from any month given, back to the year 1800 or
--    looping to -infinity, holding the events table's lock all along (every read then failed to
--    be recorded) and leaving thousands of partitions that exhausted the lock table. The gateway
--    only ever asks for the current month onwards; from it, earlier than last month is now
--    ignored (the owner may still create older months).
-- 3. An auditor could sign off an emergency grant the moment it was created, and everything done
--    under it in the rest of its hour then never came up for review. A grant is reviewed once it
--    has ended and no request begun under it can still be recording (20 minutes after), so the
--    review covers everything done under it.
-- 4. Only the holder of the seal lease may extend the chain (see `extend_chain`).
SET LOCAL ROLE {owner};

CREATE OR REPLACE FUNCTION rowguard_audit.extend_chain(
  p_seq bigint[], p_event_id bigint[], p_event_txid bigint[], p_event_occurred_at timestamptz[],
  p_prev_hash text[], p_hash text[])
  RETURNS void
  LANGUAGE plpgsql SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
  n integer := coalesce(cardinality(p_seq), 0);
  horizon bigint := pg_snapshot_xmin(pg_current_snapshot())::text::bigint;
  head_seq bigint;
  head_hash bytea;
  head_txid bigint;
  head_id bigint;
  last_txid bigint;
  last_id bigint;
BEGIN
  IF n = 0 THEN
    RETURN;
  END IF;
  -- Only the sealer that holds the lease, in the transaction that took or renewed it (the
  -- lease row's current version is this transaction's): the gateway's login calling this on its
  -- own, even with a correct link, made the leading sealer find its head changed under it and
  -- stop sealing until restarted.
  IF NOT EXISTS (SELECT 1 FROM rowguard_audit.sealer_lease l
                 WHERE l.xmin::text::bigint = pg_current_xact_id()::text::bigint % 4294967296
                   AND l.expires_at > clock_timestamp()) THEN
    RAISE EXCEPTION 'only the holder of the seal lease extends the chain, in the transaction that took it'
      USING ERRCODE = 'insufficient_privilege';
  END IF;
  -- Subscripts below count from 1: an array given with other bounds ('[5:6]={...}') would
  -- make them NULL and every comparison with them pass.
  IF coalesce(cardinality(p_event_id), 0) <> n OR coalesce(cardinality(p_event_txid), 0) <> n
     OR coalesce(cardinality(p_event_occurred_at), 0) <> n
     OR coalesce(cardinality(p_prev_hash), 0) <> n OR coalesce(cardinality(p_hash), 0) <> n
     OR array_ndims(p_seq) <> 1 OR array_ndims(p_event_id) <> 1 OR array_ndims(p_event_txid) <> 1
     OR array_ndims(p_event_occurred_at) <> 1 OR array_ndims(p_prev_hash) <> 1
     OR array_ndims(p_hash) <> 1
     OR array_lower(p_seq, 1) <> 1 OR array_lower(p_event_id, 1) <> 1
     OR array_lower(p_event_txid, 1) <> 1 OR array_lower(p_event_occurred_at, 1) <> 1
     OR array_lower(p_prev_hash, 1) <> 1 OR array_lower(p_hash, 1) <> 1 THEN
    RAISE EXCEPTION 'every link needs all of its parts' USING ERRCODE = 'invalid_parameter_value';
  END IF;
  SELECT c.seq, c.hash, c.event_txid,
         CASE WHEN c.version = 1 THEN 9223372036854775807 ELSE c.event_id END
    INTO head_seq, head_hash, head_txid, head_id
    FROM rowguard_audit.chain c ORDER BY c.seq DESC LIMIT 1;
  IF p_seq[1] IS DISTINCT FROM coalesce(head_seq, 0) + 1
     OR decode(p_prev_hash[1], 'hex') IS DISTINCT FROM coalesce(head_hash, '\x00'::bytea) THEN
    RAISE EXCEPTION 'the chain moved on: another sealer is active' USING ERRCODE = 'serialization_failure';
  END IF;
  -- Each link: consecutive numbers, the previous link's hash, a SHA-256-long hash, and an event
  -- that exists as described, is final and comes after the previous link's (the head's for the
  -- first) in sealing order. Every test must hold (IS NOT TRUE: a NULL fails it).
  last_txid := p_event_txid[n];
  last_id := p_event_id[n];
  IF EXISTS (
       SELECT 1
       FROM unnest(p_seq, p_event_id, p_event_txid, p_event_occurred_at, p_prev_hash, p_hash)
              WITH ORDINALITY AS u(s, e, t, o, p, h, i)
       WHERE (u.s = p_seq[1] + u.i - 1
              AND u.e IS NOT NULL AND u.t IS NOT NULL AND u.o IS NOT NULL
              AND octet_length(decode(u.h, 'hex')) = 32
              AND u.t < horizon
              AND (u.t, u.e) > (CASE WHEN u.i = 1 THEN coalesce(head_txid, -1) ELSE p_event_txid[u.i - 1] END,
                                CASE WHEN u.i = 1 THEN coalesce(head_id, -1) ELSE p_event_id[u.i - 1] END)
              AND (u.i = 1 OR decode(u.p, 'hex') = decode(p_hash[u.i - 1], 'hex'))
              AND EXISTS (SELECT 1 FROM rowguard_audit.events ev
                          WHERE ev.id = u.e AND ev.occurred_at = u.o AND ev.txid = u.t)) IS NOT TRUE)
     -- And no event is left out between them: the links are exactly the next final events
     -- (every event up to the last link's is final, its transaction being older than it).
     OR (SELECT count(*) FROM rowguard_audit.events ev
         WHERE (ev.txid, ev.id) > (coalesce(head_txid, -1), coalesce(head_id, -1))
           AND (ev.txid, ev.id) <= (last_txid, last_id)) IS DISTINCT FROM n::bigint THEN
    RAISE EXCEPTION 'a link does not describe the next final event' USING ERRCODE = 'invalid_parameter_value';
  END IF;
  INSERT INTO rowguard_audit.chain (seq, event_id, event_txid, event_occurred_at, version, prev_hash, hash)
  SELECT s, e, t, o, 2, decode(p, 'hex'), decode(h, 'hex')
  FROM unnest(p_seq, p_event_id, p_event_txid, p_event_occurred_at, p_prev_hash, p_hash) AS u(s, e, t, o, p, h);
END
$fn$;

CREATE OR REPLACE FUNCTION rowguard_audit.ensure_partitions(p_from timestamptz, p_months_ahead integer)
  RETURNS integer
  LANGUAGE plpgsql SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
  -- For the gateway, never before last month: the partitions of older months exist since the
  -- trail began, and creating them holds the events table's lock. The owner (and whoever may
  -- act as it) may still create older ones, e.g. to restore an archived month.
  month date := date_trunc('month',
    CASE WHEN pg_has_role(session_user, current_user, 'MEMBER') THEN coalesce(p_from, now())
         ELSE greatest(coalesce(p_from, now()), now() - interval '1 month') END
    AT TIME ZONE 'UTC')::date;
  last date := (date_trunc('month', now() AT TIME ZONE 'UTC')
                + make_interval(months => least(greatest(coalesce(p_months_ahead, 0), 0), 24)))::date;
  name text;
  created integer := 0;
BEGIN
  WHILE month <= last LOOP
    name := format('events_%s', to_char(month, 'YYYY_MM'));
    IF to_regclass(format('rowguard_audit.%I', name)) IS NULL THEN
      BEGIN
        EXECUTE format(
          'CREATE TABLE rowguard_audit.%I PARTITION OF rowguard_audit.events FOR VALUES FROM (%L) TO (%L)',
          name, month::timestamp AT TIME ZONE 'UTC', (month + interval '1 month') AT TIME ZONE 'UTC');
        -- Reads go through the parent's policies; a partition read directly has no grants, and
        -- its own row level security is on as well, so it can never be a way around them.
        EXECUTE format('ALTER TABLE rowguard_audit.%I ENABLE ROW LEVEL SECURITY', name);
        created := created + 1;
      EXCEPTION WHEN others THEN
        -- E.g. the default partition already holds rows of that month: leave them there (they are
        -- sealed and verified all the same) rather than fail the caller.
        RAISE WARNING 'audit partition % not created: %', name, SQLERRM;
      END;
    END IF;
    month := (month + interval '1 month')::date;
  END LOOP;
  RETURN created;
END
$fn$;

CREATE OR REPLACE FUNCTION rowguard.review_emergency_access(p_grant bigint) RETURNS boolean
  LANGUAGE plpgsql SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
  me integer := (SELECT nullif(current_setting('app.current_user', true), '')::integer);
BEGIN
  IF me IS NULL THEN
    RAISE EXCEPTION 'no identity' USING ERRCODE = 'insufficient_privilege';
  END IF;
  IF EXISTS (SELECT 1 FROM rowguard.emergency_grants WHERE id = p_grant AND clinician_id = me) THEN
    RAISE EXCEPTION 'an emergency grant cannot be reviewed by its holder' USING ERRCODE = 'insufficient_privilege';
  END IF;
  -- Ended, and no request that began under it can still be recording what it did: a request
  -- runs at most 5 minutes (`ROWGUARD_REQUEST_TIMEOUT_MS`'s bound), and its record and commit
  -- each wait at most the statement timeout (at most 10 minutes for the batch writer).
  IF EXISTS (SELECT 1 FROM rowguard.emergency_grants
             WHERE id = p_grant AND reviewed_at IS NULL AND expires_at > now() - interval '20 minutes') THEN
    RAISE EXCEPTION 'an emergency grant is reviewed once it has ended'
      USING ERRCODE = 'object_not_in_prerequisite_state';
  END IF;
  UPDATE rowguard.emergency_grants SET reviewed_at = now(), reviewed_by = me
  WHERE id = p_grant AND reviewed_at IS NULL;
  RETURN FOUND;
END
$fn$;

-- The self-check's record of the functions it compares (0015) follows.
SELECT rowguard.record_policies();

RESET ROLE;
