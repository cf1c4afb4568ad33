-- The peer's view of the caller's patients: the same plan as Rowguard's page query, and the
-- same policies (security_invoker: the caller's role and settings apply to the tables).
CREATE SCHEMA IF NOT EXISTS rowguard_bench;
CREATE OR REPLACE VIEW rowguard_bench.my_patients WITH (security_invoker = true) AS
  SELECT p.id, p.mrn, p.given_name, p.family_name
  FROM rowguard.patients p
  WHERE p.id IN (
    SELECT cp.patient_id FROM rowguard.clinicians_patients cp
    WHERE cp.clinician_id = nullif(current_setting('app.current_user', true), '')::int
  );
COMMENT ON VIEW rowguard_bench.my_patients IS E'@primaryKey id';
GRANT USAGE ON SCHEMA rowguard_bench TO rowguard_clinician;
GRANT SELECT ON rowguard_bench.my_patients TO rowguard_clinician;
