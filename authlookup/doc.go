// Package authlookup lets learners (sidecars in application pods) read password
// verifiers through the voting proxies, so that a sidecar needs no database password
// and no admin token: only its learner certificate.
//
// A voter serves the peer-call service "verifier-lookup" (consensus.Node.HandleCalls)
// with Serve: it answers a role name with the role's SCRAM-SHA-256 verifier, read with
// its own auth query on the primary. A learner configured with `auth.lookup: voters`
// uses a Client as its proxy's verifier source: it asks the Raft leader, else the other
// voters, and keeps answers for CacheTTL.
//
// # What a voter answers, and to whom
//
//   - Only members of the applied Raft configuration whose certificate the transport
//     verified (voter or learner) are answered (callerMayAsk). A plaintext peer
//     (security.insecure), a removed node or a stranger gets an error and no verifier.
//   - A role that does not exist, cannot log in, has no usable password — and a role
//     whose verifier is MD5, which is password-equivalent — is answered with the
//     cluster's mock verifier for that name (pgauth.MockKey): the same shape, salt and
//     iteration count on every voter, stable across restarts, and no password matches
//     it. The learner runs the exchange against it and the client fails like with a
//     wrong password. A caller cannot tell a real role from one that does not exist
//     (unless it knows the mock secret: see below).
//   - A lookup the voter could not make (no primary, PostgreSQL refused the query user)
//     is an error; the learner then asks another voter, and its client finally gets
//     FATAL 08006.
//
// # What a stolen sidecar certificate gives
//
// Whoever holds a learner certificate (and key) can ask for the SCRAM verifier of any
// role name. With a verifier one can run an offline dictionary attack on the role's
// password (PBKDF2, scram_iterations rounds per guess) and act as PostgreSQL towards
// that role's clients; one cannot log in as the role (that needs the ClientKey, which
// only a client's proof reveals). It cannot tell real roles from names that do not
// exist — unless it also has the mock secret: by default that is derived from the
// cluster CA certificate, which every sidecar has, so set auth.mock_secret_file on the
// voters (and on every proxy that reads verifiers itself). It never gets MD5
// verifiers, nor, with the documented lookup function, superusers' verifiers. Revoke
// a stolen certificate by removing the learner from the cluster (`pgquorum members
// remove ID`): non-members are not answered.
//
// The package knows nothing about PostgreSQL connections: the voter's lookup is a
// function it is given (proxy.Server.LookupVerifier).
package authlookup
