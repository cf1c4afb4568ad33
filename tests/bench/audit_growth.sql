-- The auditor's queries on a large audit trail: fills `rowguard_audit.events` with :months months
-- of :per_month synthetic events each (half of them a page of 20 patients, half one patient,
-- spread over the benchmark's 1M patients and 1,000 clinicians), then shows how the queries
-- behind `auditEvents` and `patientAccessReport` run, as an auditor, with `EXPLAIN ANALYZE`.
--
--   psql -v months=10 -v per_month=1000000 -f tests/bench/audit_growth.sql postgres://postgres@HOST:PORT/rowguard
--
-- Run it on a throwaway benchmark database (a superuser, after `rowguard migrate`): it writes
-- straight into past months' partitions, which no real trail would let anyone do. Each month is
-- filled as a table of its own and attached, so the indexes are built once rather than row by row.
\set ON_ERROR_STOP on
\timing on
SET maintenance_work_mem = '1GB';
SET max_parallel_maintenance_workers = 2;

-- psql does not expand its variables inside the DO block's quotes: hand them over as settings.
SELECT set_config('bench.months', :'months', false), set_config('bench.per_month', :'per_month', false);

-- One month at a time, oldest first (psql has no loops: a DO block does the work).
DO $fill$
DECLARE
  m integer;
  month_start timestamp;
  name text;
  per_month bigint := current_setting('bench.per_month')::bigint;
BEGIN
  FOR m IN REVERSE current_setting('bench.months')::integer..1 LOOP
    month_start := date_trunc('month', now() AT TIME ZONE 'UTC') - make_interval(months => m);
    name := format('events_%s', to_char(month_start, 'YYYY_MM'));
    IF to_regclass(format('rowguard_audit.%I', name)) IS NOT NULL THEN
      CONTINUE;
    END IF;
    EXECUTE format('CREATE TABLE rowguard_audit.%I (LIKE rowguard_audit.events INCLUDING DEFAULTS INCLUDING CONSTRAINTS)', name);
    EXECUTE format($sql$
      INSERT INTO rowguard_audit.%I (id, occurred_at, txid, request_id, clinician_id, issuer, subject,
        app_role, operation_name, action, outcome, patient_ids, purpose)
      SELECT nextval('rowguard_audit.event_ids'),
             %L::timestamp AT TIME ZONE 'UTC' + (n::double precision / %s) * (%L::timestamp + interval '1 month' - %L::timestamp),
             0, gen_random_uuid(), (n %% 1000) + 1, 'https://issuer.example', 'clinician-' || ((n %% 1000) + 1),
             'rowguard_clinician', CASE WHEN n %% 2 = 0 THEN 'MyPatients' ELSE 'Patient' END, 'read', 'success',
             CASE WHEN n %% 2 = 0
               THEN ARRAY(SELECT md5('patient' || ((n * 7919 + k * 104729) %% 1000000))::uuid FROM generate_series(0, 19) k)
               ELSE ARRAY[md5('patient' || ((n * 7919) %% 1000000))::uuid] END,
             'treatment'
      FROM generate_series(0::bigint, %s - 1) n$sql$,
      name, month_start, per_month, month_start, month_start, per_month);
    EXECUTE format('ALTER TABLE rowguard_audit.events ATTACH PARTITION rowguard_audit.%I FOR VALUES FROM (%L) TO (%L)',
      name, month_start AT TIME ZONE 'UTC', (month_start + interval '1 month') AT TIME ZONE 'UTC');
    EXECUTE format('ALTER TABLE rowguard_audit.%I ENABLE ROW LEVEL SECURITY', name);
    EXECUTE format('ANALYZE rowguard_audit.%I', name);
    RAISE NOTICE 'filled %', name;
  END LOOP;
END
$fill$;

-- The auditor's view (row level security as the gateway sets it up for an auditor).
ANALYZE rowguard_audit.events;
SELECT count(*) AS events FROM rowguard_audit.events;
BEGIN;
SET LOCAL ROLE rowguard_auditor;
SELECT set_config('app.current_user', '1', true);

-- patientAccessReport: every access to one patient (about 100 events here), oldest first. The
-- ids come through the patient index (`rowguard_audit.patient_event_ids`, migration 0010); a
-- plain `patient_ids @> ...` cannot use that index under the auditor's row level security.
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF)
SELECT * FROM rowguard_audit.events
WHERE id = ANY(ARRAY(SELECT rowguard_audit.patient_event_ids(md5('patient42')::uuid, NULL, 10000)))
ORDER BY id LIMIT 10000;

-- auditEvents, first page, no filter.
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF)
SELECT * FROM rowguard_audit.events ORDER BY id LIMIT 21;

-- auditEvents, a page deep into the trail (the cursor of the 9,000,000th event).
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF)
SELECT * FROM rowguard_audit.events WHERE id > (SELECT min(id) + 9000000 FROM rowguard_audit.events) ORDER BY id LIMIT 21;

-- auditEvents filtered by one clinician.
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF)
SELECT * FROM rowguard_audit.events WHERE clinician_id = 42 ORDER BY id LIMIT 21;

-- auditEvents filtered by one patient.
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF)
SELECT * FROM rowguard_audit.events
WHERE id = ANY(ARRAY(SELECT rowguard_audit.patient_event_ids(md5('patient42')::uuid, NULL, 21)))
ORDER BY id LIMIT 21;

-- auditEvents filtered by one day.
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF)
SELECT * FROM rowguard_audit.events
WHERE occurred_at >= date_trunc('month', now()) - interval '2 months' + interval '9 days'
  AND occurred_at < date_trunc('month', now()) - interval '2 months' + interval '10 days'
ORDER BY id LIMIT 21;
ROLLBACK;
