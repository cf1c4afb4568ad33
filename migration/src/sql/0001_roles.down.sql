-- Fails (and so rolls back) while any other database still grants these roles something: a
-- shared cluster keeps working rather than losing roles another Rowguard database relies on.
DROP ROLE IF EXISTS {gateway}, {clinician}, {coordinator}, {auditor}, {owner};
