SET LOCAL ROLE {owner};

CREATE OR REPLACE FUNCTION rowguard.clinician_id_for(issuer text, subject text) RETURNS integer
  LANGUAGE sql STABLE SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
AS $fn$
  SELECT id FROM rowguard.clinicians
  WHERE oidc_issuer = issuer AND oidc_subject = subject AND active
$fn$;

RESET ROLE;
