// Package pgauth is the authentication logic of the proxy: it checks a client's
// password proof against the verifier PostgreSQL stores for the role, and later
// proves the same identity to a PostgreSQL backend without ever knowing the
// password (the technique PgBouncer calls auth_query plus SCRAM pass-through).
//
// The data path, in the order a session uses it:
//
//  1. Lookup reads the role's verifier from pg_catalog.pg_authid on a
//     connection opened as the query user. ParseVerifier turns the stored text
//     into a Verifier (SCRAM-SHA-256 or MD5).
//  2. The proxy authenticates the client with SCRAMServer (First, then Final)
//     or with MD5Challenge and VerifyMD5. A successful check yields
//     Credentials: for SCRAM the ClientKey recovered from the client's proof
//     plus the ServerKey from the verifier; for MD5 the verifier itself.
//     Unknown roles go through NewSCRAMServerForUnknownUser (or VerifyMD5 with
//     a zero Verifier), which runs the whole exchange and fails only at the
//     end, so a client cannot probe which roles exist.
//  3. Whenever the session needs a backend connection (at start, after a
//     failover), BackendAuth answers the backend's authentication requests
//     from those Credentials and checks the backend's SCRAM server signature.
//
// What this package must not do: it opens no sockets (Lookup uses a connection
// it is given), keeps no global mutable state apart from the per-process
// secret for fake exchanges, never logs, and never puts a password, verifier
// or key into an error message or a String/LogValue result. Messages given to
// clients should be ErrWrongPassword's text only; the wrapped errors returned
// here carry detail meant for the proxy's own log.
//
// The SCRAM code follows RFC 5802 and RFC 7677 the way PostgreSQL does
// (src/backend/libpq/auth-scram.c and src/interfaces/libpq/fe-auth-scram.c):
// no channel binding, no authorization identity, and the user name in the
// client-first-message is ignored because PostgreSQL takes it from the
// startup packet (libpq sends "n,,n=,r=...").
package pgauth

import "errors"

// ErrWrongPassword is returned (possibly wrapped) when a client's proof or MD5
// response does not match, and also at the end of a fake exchange for a role
// that does not exist or has no usable verifier. Its text is the only thing a
// client should be told.
var ErrWrongPassword = errors.New("password authentication failed")

// ErrNoVerifier is returned (possibly wrapped) by Lookup when the role does
// not exist, cannot log in, has no password, has an expired rolvaliduntil or a
// stored password in a format this package cannot use. Callers run a fake
// exchange for such roles.
var ErrNoVerifier = errors.New("role has no usable password verifier")

// ErrProtocolViolation is returned (wrapped, with detail) when a SCRAM message
// from a client or a backend does not follow the protocol: malformed syntax,
// a nonce that does not match, or a feature we do not offer (channel binding,
// authorization identities). PostgreSQL reports these as SQLSTATE 08P01,
// whereas ErrWrongPassword is 28P01. The detail never contains key material.
var ErrProtocolViolation = errors.New("SCRAM protocol violation")
