-- The identity lookup, on every request's path, with its plan kept per connection.
--
-- The gateway's "set identity" statement calls `rowguard.clinician_id_for` once per transaction.
-- As a SQL-language function that cannot be inlined (it is SECURITY DEFINER), PostgreSQL parsed,
-- analysed and planned its query again on every call: in a profile of the benchmark's page
-- transaction that was 7.9% of the whole machine's samples, planning alone 3.4%. PL/pgSQL keeps
-- the prepared plan for the life of the connection. Measured on the benchmark's database (1M
-- patients, one client, three alternating runs): 59–81 µs per call before, 23–25 µs after.
--
-- Same name, arguments, result, volatility, owner, `search_path` and grants: `CREATE OR
-- REPLACE` keeps the owner and the privileges. The lookup is the same: at most one row (issuer
-- and subject are unique together), NULL for unknown or inactive people, which every policy
-- treats as "no rows".
SET LOCAL ROLE {owner};

CREATE OR REPLACE FUNCTION rowguard.clinician_id_for(issuer text, subject text) RETURNS integer
  LANGUAGE plpgsql STABLE SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
  RETURN (SELECT c.id FROM rowguard.clinicians c
          WHERE c.oidc_issuer = issuer AND c.oidc_subject = subject AND c.active);
END
$fn$;

RESET ROLE;
