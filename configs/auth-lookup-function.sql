-- pgquorum: a query user that needs no superuser (auth.lookup_function).
--
-- Run this once as a superuser on the primary, in auth.query_database (default
-- "postgres"); it replicates to the standbys. It creates pgquorum.get_auth(text),
-- which returns the stored verifier (pg_authid.rolpassword) of a role that may log
-- in now, and NULL otherwise. It is SECURITY DEFINER: it runs with its owner's
-- (the superuser's) rights, so only this function, not pg_authid, is exposed, and
-- only to the roles granted EXECUTE below.
--
-- Then configure the proxies:
--   auth: {method: scram-sha-256, query_user: pgquorum, lookup_function: pgquorum.get_auth}
-- and let the query user do what the rest of pgquorum needs (probes, failover):
--   GRANT pg_monitor TO pgquorum;  -- and see docs/operations.md for the rest.
--
-- Replace "pgquorum" in the GRANT lines below if your query user has another name.

CREATE SCHEMA IF NOT EXISTS pgquorum;
REVOKE ALL ON SCHEMA pgquorum FROM PUBLIC;

CREATE OR REPLACE FUNCTION pgquorum.get_auth(username text)
RETURNS text
LANGUAGE sql STABLE STRICT SECURITY DEFINER
-- A SECURITY DEFINER function must not resolve names through the caller's
-- search_path: pg_catalog first, pg_temp last (PostgreSQL's own advice).
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT rolpassword
      FROM pg_catalog.pg_authid
     WHERE rolname = username
       AND rolcanlogin
       -- A superuser's verifier is never handed out: superusers cannot log in
       -- through the proxy (connect to PostgreSQL directly). Remove this line
       -- to allow it, knowing that whoever can run this function can then run
       -- an offline dictionary attack on superusers' passwords.
       AND NOT rolsuper
       AND (rolvaliduntil IS NULL OR rolvaliduntil > pg_catalog.now())
$$;

REVOKE ALL ON FUNCTION pgquorum.get_auth(text) FROM PUBLIC;
GRANT USAGE ON SCHEMA pgquorum TO pgquorum;
GRANT EXECUTE ON FUNCTION pgquorum.get_auth(text) TO pgquorum;
