SET LOCAL ROLE {owner};

DROP FUNCTION rowguard.policy_drift();
DROP FUNCTION rowguard.record_policies();
DROP FUNCTION rowguard.policy_definitions();
DELETE FROM rowguard.expected_policies;

ALTER TABLE rowguard.expected_policies
  ALTER COLUMN schemaname TYPE name,
  ALTER COLUMN tablename TYPE name,
  ALTER COLUMN policyname TYPE name;

CREATE FUNCTION rowguard.policy_definitions()
  RETURNS TABLE (schemaname name, tablename name, policyname name, definition text)
  LANGUAGE sql STABLE SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
AS $fn$
  SELECT p.schemaname, p.tablename, p.policyname,
         concat_ws(' | ', p.permissive, p.cmd, array_to_string(ARRAY(SELECT unnest(p.roles) ORDER BY 1), ','),
                   coalesce(p.qual, '-'), coalesce(p.with_check, '-'))
  FROM pg_catalog.pg_policies p
  WHERE p.schemaname IN ('rowguard', 'rowguard_audit')
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

CREATE FUNCTION rowguard.policy_drift()
  RETURNS TABLE (schemaname name, tablename name, policyname name, change text)
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
