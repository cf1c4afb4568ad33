-- Roles are cluster-wide while everything else is per database, so every name carries the
-- configured prefix ({owner} and friends are filled in by the migration): two Rowguard databases on
-- one cluster keep their identities apart. Each role is created only when missing, so re-running
-- this (or migrating a second database with the same prefix) is harmless.
DO $roles$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = '{owner}') THEN
    -- Owns the schema and runs migrations. Never used to serve requests; NOLOGIN until an
    -- operator deliberately gives it a password for `rowguard migrate`.
    CREATE ROLE {owner} NOLOGIN NOSUPERUSER NOBYPASSRLS;
  END IF;

  IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = '{gateway}') THEN
    -- The gateway's login (DATABASE_URL). Not superuser and not BYPASSRLS, because either would
    -- switch row level security off. NOINHERIT: it holds none of the application roles'
    -- privileges until it switches role inside a request, so a forgotten switch reads nothing.
    CREATE ROLE {gateway} LOGIN NOINHERIT NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE;
  END IF;

  -- The application roles the gateway switches to per request. NOLOGIN: nobody connects as them.
  IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = '{clinician}') THEN
    CREATE ROLE {clinician} NOLOGIN NOSUPERUSER NOBYPASSRLS;
  END IF;
  IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = '{coordinator}') THEN
    CREATE ROLE {coordinator} NOLOGIN NOSUPERUSER NOBYPASSRLS;
  END IF;
  IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = '{auditor}') THEN
    CREATE ROLE {auditor} NOLOGIN NOSUPERUSER NOBYPASSRLS;
  END IF;
END
$roles$;

-- Membership lets the gateway `set_config('role', ...)` into an application role per transaction;
-- with NOINHERIT that membership grants nothing until the switch happens.
GRANT {clinician}, {coordinator}, {auditor} TO {gateway};
