-- The self-check compared only the policies' text. A policy calls helper functions by name and
-- an application role reaches a table through its grants before any policy applies, so a
-- helper's body replaced with `select true`, or `GRANT SELECT (clinical_notes) ... TO
-- coordinator`, opened patient data and still passed. The recorded baseline now also holds
-- every function of Rowguard's schemas (body, settings, owner, grants), every grant on their
-- tables, views, sequences and columns to a role the gateway can become, and every trigger and
-- rule on them. The columns become text: a function's signature does
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
  -- What the roles the gateway can become (and PUBLIC) may do to each table, view or sequence
  -- and to its columns: a grant decides what an application role reaches before any policy
  -- does. Grants to roles the gateway cannot become (a backup or monitoring role's default
  -- privileges, say) are not its to use, and an owner-only ACL left by a REVOKE equals none.
  SELECT n.nspname::text, c.relname::text, '(privileges)', g.grants
  FROM pg_catalog.pg_class c
  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
  CROSS JOIN LATERAL (
    SELECT string_agg(part, ', ' ORDER BY part) AS grants FROM (
      SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_catalog.pg_get_userbyid(a.grantee)::text END
             || ' ' || a.privilege_type || CASE WHEN a.is_grantable THEN ' grantable' ELSE '' END AS part
      FROM pg_catalog.aclexplode(c.relacl) a
      WHERE a.grantee = 0 OR pg_catalog.pg_has_role('{gateway}', a.grantee, 'MEMBER')
      UNION ALL
      SELECT att.attname::text || ': '
             || CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_catalog.pg_get_userbyid(a.grantee)::text END
             || ' ' || a.privilege_type || CASE WHEN a.is_grantable THEN ' grantable' ELSE '' END
      FROM pg_catalog.pg_attribute att, pg_catalog.aclexplode(att.attacl) a
      WHERE att.attrelid = c.oid AND NOT att.attisdropped AND att.attacl IS NOT NULL
        AND (a.grantee = 0 OR pg_catalog.pg_has_role('{gateway}', a.grantee, 'MEMBER'))
    ) parts
  ) g
  WHERE n.nspname IN ('rowguard', 'rowguard_audit') AND g.grants IS NOT NULL
  UNION ALL
  -- Triggers and rules run as part of every write or read of their table: one that copies rows
  -- elsewhere hands them past the policies. (Triggers cloned onto the audit trail's monthly
  -- partitions follow their parent's and are left out.)
  SELECT n.nspname::text, c.relname::text, '(trigger) ' || t.tgname,
         concat_ws(' | ', t.tgenabled, pg_catalog.pg_get_triggerdef(t.oid))
  FROM pg_catalog.pg_trigger t
  JOIN pg_catalog.pg_class c ON c.oid = t.tgrelid
  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
  WHERE n.nspname IN ('rowguard', 'rowguard_audit') AND NOT t.tgisinternal AND t.tgparentid = 0
  UNION ALL
  SELECT n.nspname::text, c.relname::text, '(rule) ' || r.rulename,
         concat_ws(' | ', r.ev_enabled, pg_catalog.pg_get_ruledef(r.oid))
  FROM pg_catalog.pg_rewrite r
  JOIN pg_catalog.pg_class c ON c.oid = r.ev_class
  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
  WHERE n.nspname IN ('rowguard', 'rowguard_audit') AND r.rulename <> '_RETURN'
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
