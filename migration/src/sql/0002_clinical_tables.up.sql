-- The schema belongs to the owner role, so the gateway and application roles never own what
-- row level security protects (owners bypass RLS unless it is forced).
CREATE SCHEMA rowguard AUTHORIZATION {owner};

-- Everything below is created as, and therefore owned by, the owner role. The migration runs in a
-- transaction, so the role switch ends with it.
SET LOCAL ROLE {owner};

-- Nobody may create objects in the schema; application roles may only look names up in it.
-- The gateway needs USAGE too, for the identity lookup function it calls before switching role.
REVOKE ALL ON SCHEMA rowguard FROM PUBLIC;
GRANT USAGE ON SCHEMA rowguard TO {gateway}, {clinician}, {coordinator}, {auditor};

CREATE TABLE rowguard.clinicians (
  -- Integer ids are what `app.current_user` carries; they reveal nothing about the person.
  id integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  oidc_issuer text NOT NULL CHECK (oidc_issuer <> ''),
  oidc_subject text NOT NULL CHECK (oidc_subject <> ''),
  display_name text NOT NULL CHECK (length(btrim(display_name)) BETWEEN 1 AND 200),
  -- Deactivating a clinician removes their identity at the next request without deleting history.
  active boolean NOT NULL DEFAULT true,
  created_at timestamptz NOT NULL DEFAULT now(),
  -- A subject is only unique within its issuer: the same `sub` at two identity providers is two people.
  CONSTRAINT clinicians_issuer_subject_key UNIQUE (oidc_issuer, oidc_subject)
);

CREATE TABLE rowguard.patients (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  mrn text NOT NULL UNIQUE CHECK (mrn ~ '^[A-Za-z0-9-]{1,32}$'),
  given_name text NOT NULL CHECK (length(btrim(given_name)) BETWEEN 1 AND 200),
  family_name text NOT NULL CHECK (length(btrim(family_name)) BETWEEN 1 AND 200),
  birth_date date NOT NULL,
  clinical_notes text NOT NULL DEFAULT '',
  -- Optimistic concurrency: writers say which version they edited; the trigger below bumps it.
  version integer NOT NULL DEFAULT 1,
  updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE rowguard.clinicians_patients (
  clinician_id integer NOT NULL REFERENCES rowguard.clinicians (id),
  patient_id uuid NOT NULL REFERENCES rowguard.patients (id),
  care_role text NOT NULL CHECK (care_role IN ('attending', 'consulting', 'nursing', 'care_coordination')),
  assigned_at timestamptz NOT NULL DEFAULT now(),
  -- Stamped from the transaction's identity; application roles get no column privilege to set it.
  -- (A default may not hold a subquery; it is evaluated once per inserted row, which is fine here.)
  assigned_by integer REFERENCES rowguard.clinicians (id)
    DEFAULT nullif(current_setting('app.current_user', true), '')::integer,
  -- The primary key doubles as the index for "patients of clinician X" (policy lookups by clinician).
  PRIMARY KEY (clinician_id, patient_id)
);

-- The patients policies probe assignments by (patient, clinician): without this index every
-- visible-row check would scan the clinician's whole list.
CREATE INDEX clinicians_patients_patient_clinician_idx
  ON rowguard.clinicians_patients (patient_id, clinician_id);

-- Every update of a patient bumps `version` and `updated_at` in the database, so no writer can
-- forget to, and a stale `expectedVersion` is always detectable.
CREATE FUNCTION rowguard.patients_bump_version() RETURNS trigger
  LANGUAGE plpgsql
  SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
  NEW.version := OLD.version + 1;
  NEW.updated_at := now();
  RETURN NEW;
END
$fn$;
REVOKE ALL ON FUNCTION rowguard.patients_bump_version() FROM PUBLIC;

CREATE TRIGGER patients_bump_version
  BEFORE UPDATE ON rowguard.patients
  FOR EACH ROW EXECUTE FUNCTION rowguard.patients_bump_version();

-- The migration bookkeeping table must not be written as the owner role.
RESET ROLE;
