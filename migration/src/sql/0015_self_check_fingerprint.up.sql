-- The self-check compared only the policies' text. A policy calls helper functions by name and
-- an application role reaches a table through its grants before any policy applies, so a
-- helper's body replaced with `select true`, or `GRANT SELECT (clinical_notes) ... TO
-- coordinator`, opened patient data and still passed. The recorded baseline now also holds
-- every function of Rowguard's schemas (body, settings, owner, grants) and every grant on their
-- tables, views, sequences and columns. The columns become text: a function's signature does
-- not fit in a `name` (63 bytes) and would be cut, so two could collide.
SET LOCAL ROLE {owner};

DROP FUNCTION rowguard.policy_drift();
DROP FUNCTION rowguard.record_policies();
DROP FUNCTION rowguard.policy_definitions();

ALTER TABLE rowguard.expected_policies
  ALTER COLUMN schemaname TYPE text,
  ALTER COLUMN tablename TYPE text,
  ALTER COLUMN policyname TYPE text;

-- One row per thing that decides what an application role reaches: a policy (as 0008), a
-- function (`(function)` in `tablename`, its signature in `policyname`) or a relation's grants
-- (`(privileges)` in `policyname`). Relations nobody was granted anything on (the audit
-- trail's monthly partitions, made at run time) have no row.
CREATE FUNCTION rowguard.policy_definitions()
  RETURNS TABLE (schemaname text, tablename text, policyname text, definition text)
  LANGUAGE sql STABLE SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
AS $fn$
  SELECT p.schemaname::text, p.tablename::text, p.policyname::text,
         concat_ws(' | ', p.permissive, p.cmd, array_to_string(ARRAY(SELECT unnest(p.roles) ORDER BY 1), ','),
                   coalesce(p.qual, '-'), coalesce(p.with_check, '-'))
  FROM pg_catalog.pg_policies p
  WHERE p.schemaname IN ('rowguard', 'rowguard_audit')
  UNION ALL
  SELECT n.nspname::text, '(function)',
         p.proname || '(' || pg_catalog.pg_get_function_identity_arguments(p.oid) || ')',
         concat_ws(' | ', p.prosecdef, p.provolatile, p.proleakproof,
                   coalesce(array_to_string(p.proconfig, ','), '-'), md5(p.prosrc),
                   coalesce(p.probin, '-'), pg_catalog.pg_get_userbyid(p.proowner),
                   coalesce(p.proacl::text, '-'))
  FROM pg_catalog.pg_proc p
  JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
  WHERE n.nspname IN ('rowguard', 'rowguard_audit')
  UNION ALL
  SELECT n.nspname::text, c.relname::text, '(privileges)',
         concat_ws(' | ', c.relkind, coalesce(c.relacl::text, '-'),
                   coalesce(array_to_string(c.reloptions, ','), '-'),
                   coalesce((SELECT string_agg(a.attname || '=' || a.attacl::text, ',' ORDER BY a.attname)
                             FROM pg_catalog.pg_attribute a
                             WHERE a.attrelid = c.oid AND a.attacl IS NOT NULL AND NOT a.attisdropped), '-'))
  FROM pg_catalog.pg_class c
  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
  WHERE n.nspname IN ('rowguard', 'rowguard_audit')
    AND (c.relacl IS NOT NULL
         OR EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a
                    WHERE a.attrelid = c.oid AND a.attacl IS NOT NULL AND NOT a.attisdropped))
$fn$;
REVOKE ALL ON FUNCTION rowguard.policy_definitions() FROM PUBLIC;

CREATE FUNCTION rowguard.record_policies() RETURNS void
  LANGUAGE sql SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
AS $fn$
  DELETE FROM rowguard.expected_policies;
  INSERT INTO rowguard.expected_policies SELECT * FROM rowguard.policy_definitions();
$fn$;
REVOKE ALL ON FUNCTION rowguard.record_policies() FROM PUBLIC;

-- How today's differ from the recorded ones: 'added', 'dropped' or 'changed', by name.
CREATE FUNCTION rowguard.policy_drift()
  RETURNS TABLE (schemaname text, tablename text, policyname text, change text)
  LANGUAGE sql STABLE SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
AS $fn$
  SELECT coalesce(now_.schemaname, was.schemaname), coalesce(now_.tablename, was.tablename),
         coalesce(now_.policyname, was.policyname),
         CASE WHEN was.policyname IS NULL THEN 'added'
              WHEN now_.policyname IS NULL THEN 'dropped'
              ELSE 'changed' END
  FROM rowguard.policy_definitions() now_
  FULL JOIN rowguard.expected_policies was
    ON was.schemaname = now_.schemaname AND was.tablename = now_.tablename
   AND was.policyname = now_.policyname
  WHERE was.definition IS DISTINCT FROM now_.definition
  ORDER BY 1, 2, 3
$fn$;
REVOKE ALL ON FUNCTION rowguard.policy_drift() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION rowguard.policy_drift() TO {gateway};

SELECT rowguard.record_policies();

RESET ROLE;
