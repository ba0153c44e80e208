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
//     Unknown roles get a mock verifier (MockKey, keyed by a cluster secret so
//     that its salt is the same on every proxy and across restarts) and the
//     whole exchange, which fails only at the end (or VerifyMD5 with a zero
//     Verifier), so a client cannot probe which roles exist. Over TLS the
//     server also offers SCRAM-SHA-256-PLUS with tls-server-end-point channel
//     binding (TLSServerEndPoint).
//  3. Whenever the session needs a backend connection (at start, after a
//     failover), BackendAuth answers the backend's authentication requests
//     from those Credentials and checks the backend's SCRAM server signature;
//     over TLS it binds the exchange to the backend's certificate
//     (SetChannelBinding) when the backend offers SCRAM-SHA-256-PLUS.
//
// Step 1 can also call a SECURITY DEFINER function instead of reading
// pg_authid (LookupWithFunction), so the query user needs no superuser.
//
// What this package must not do: it opens no sockets (Lookup uses a connection
// it is given), keeps no global mutable state apart from the per-process
// secret for fake exchanges without a cluster MockKey, never logs, and never puts a password, verifier
// or key into an error message or a String/LogValue result. Messages given to
// clients should be ErrWrongPassword's text only; the wrapped errors returned
// here carry detail meant for the proxy's own log.
//
// The SCRAM code follows RFC 5802 and RFC 7677 the way PostgreSQL does
// (src/backend/libpq/auth-scram.c and src/interfaces/libpq/fe-auth-scram.c):
// channel binding of type tls-server-end-point only (with PostgreSQL's rules
// for the gs2 flag, including the downgrade check), no authorization
// identity, and the user name in the client-first-message is ignored because
// PostgreSQL takes it from the startup packet (libpq sends "n,,n=,r=...").
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
// a nonce that does not match, channel binding that was not negotiated or
// does not match, or a feature we do not offer (authorization identities). PostgreSQL reports these as SQLSTATE 08P01,
// whereas ErrWrongPassword is 28P01. The detail never contains key material.
var ErrProtocolViolation = errors.New("SCRAM protocol violation")
