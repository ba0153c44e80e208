// Package proxy is pgquorum's PostgreSQL listener: it accepts client connections, terminates the
// startup phase (TLS, protocol negotiation, authentication), opens a backend connection to the
// primary the Router names, relays protocol messages in both directions, and keeps client
// sessions alive across a failover (SPEC §5).
//
// # Data path
//
// Accept loop (Server.Serve): one goroutine accepts connections and starts one startup goroutine
// per connection. Temporary accept errors (EMFILE, ...) are retried with backoff.
//
// Startup (session_startup.go, startup.go, tls.go, clientauth.go, backend.go): the startup
// goroutine reads the startup packet with a bounded size, answers SSLRequest (TLS handshake or
// 'N') and GSSENCRequest ('N'), serves CancelRequest (cancel.go), negotiates the protocol
// version the primary speaks (3.0 or 3.2, protocol.go), refuses a plaintext session when
// Config.TLSRequired, authenticates the client itself (trust, md5 or SCRAM-SHA-256, and
// SCRAM-SHA-256-PLUS over TLS, with verifiers read from the primary by an auth query,
// authquery.go, or from Config.Verifiers), then logs in to the primary with the credentials
// recovered from the client's exchange. Every connection to PostgreSQL — sessions' backends,
// the auth query, cancel requests, the protocol probe — follows Config.BackendTLS, libpq's
// sslmode rules (backendtls.go). Connections are admitted under Config.MaxClientConnections
// and, until authenticated, Config.MaxStartupConnections (limits.go). Both waits for the
// primary wait like held requests (below), but only the second, after authentication, takes a
// MaxHeld place. It sends the client the backend's ParameterStatus messages, BackendKeyData
// (the backend's real process id, the proxy's own secret) and ReadyForQuery, starts the two
// relay goroutines and exits.
//
// Relay (relay.go, relay_unix.go, frame.go, inspect.go, backendside.go): per session one
// goroutine copies client→backend and one backend→client. Every read of the wire goes through
// one framing layer (frame.go: the framer peeks each 5-byte header, hands over complete
// messages, streams large ones in pieces and keeps an incomplete tail for the next read), and
// every complete message already read is forwarded in one write; an idle session holds no read
// buffer (raw non-blocking system calls, see relay_unix.go). The client→backend relay also
// reads the bodies of Query and Parse (the SQL text, classified by package sqlclass) and the
// names in Bind, Execute, Describe and Close; the backend→client relay reads ReadyForQuery,
// ParameterStatus, and ErrorResponse only for its severity and code. DataRow and every other
// message are relayed on their header alone, and the common path allocates nothing.
//
// # The session's phase
//
// Where a session is in its life — startup, routed, held, detached, resolving, moving,
// draining, closed —
// is one field changed by one pure transition function (phase.go, with the table of allowed
// transitions); the relays, Shutdown, the route watcher and cancel requests ask it rather than
// keeping flags of their own.
//
// # What the relays track
//
//   - Safe points: a session is idle between transactions when every request (Query, Sync,
//     FunctionCall) was answered, the last ReadyForQuery said 'I' and no extended-protocol batch
//     is open (session.atSafePointLocked).
//   - What the requests in flight may do: commit (COMMIT, END, two-phase commands), write, or
//     just roll back (session.inflight). That decides the answer when the backend is lost, and
//     whether a cancel request is forwarded.
//   - Replayable session state (sessionstate.go): session-level SET/RESET, SQL PREPARE, LISTEN,
//     applied only once PostgreSQL answered and with transaction semantics (a SET inside a
//     transaction waits for its COMMIT; ROLLBACK and ROLLBACK TO SAVEPOINT undo it), and named
//     statements prepared with the protocol (statements.go). Startup parameters are replayed
//     by the startup message. State that cannot be replayed (temporary objects, WITH HOLD
//     cursors, session advisory locks, SET SESSION AUTHORIZATION, LOAD, DO blocks,
//     set_config, dblink) makes the session unmovable; so does anything the proxy cannot
//     decide with certainty (it never marks movable what is not). DISCARD ALL starts over.
//   - The ParameterStatus values the client has seen.
//   - Named portals, by PostgreSQL's key (63 bytes), forgotten when their transaction ends as
//     PostgreSQL forgets them, and bounded within one transaction (portals.go).
//
// # Routing, hold and move (route.go, local.go, move.go, loss.go, retry.go)
//
// The Router tells the proxy where traffic may go now and when that changes; a watcher
// goroutine keeps Server.route current. A new request at a safe point is
// forwarded only while the route names the session's backend; otherwise it is held: the bytes
// already read stay in the session, the client is not read any further (backpressure), and the
// request waits until a primary is agreed or Config.HoldTimeout passes (ERROR 57P03, the request
// was not sent, the session stays usable). New connections wait the same way in startup (FATAL
// 57P03 at the timeout). At most Config.MaxHeld requests and authenticated connections wait at
// once; past it they are refused at once with 57P03 (connections not authenticated yet wait under
// Config.MaxStartupConnections instead). A primary that refuses connections for now (dial error,
// 57P01/57P02/57P03 at connect) is tried again once routing names another, or after a pause.
// Backend logins (new sessions and moves) take one of Config.ReleaseConcurrency slots, so held
// requests reach the new primary at a bounded pace.
//
// When routing names a new primary, sessions on the old one lose their backend at once;
// sessions idle on it while no primary is agreed keep it (an aborted failover goes on with the
// same backend) and are moved at their next request. When the lease expires, every session loses
// its backend (fail closed, SPEC §4). A session also loses its backend when the connection fails
// or the server ends it while going away or demoted (FATAL 57P01/57P02/57P03, not relayed);
// the same FATAL from the healthy agreed primary (pg_terminate_backend) is relayed and the
// session closes, as directly (termination.go decides from a quorum-confirmed route and a
// fresh login).
//
// What the client sees then is SPEC §5's table, implemented by decideLoss (loss.go):
//
//	idle, state replayable              nothing; moved at its next request (at once if it LISTENs)
//	request held (not sent)             waits; runs on the new primary, or 57P03 at hold.timeout
//	in a transaction, no COMMIT sent    40001 "transaction aborted by failover, not committed,
//	                                    safe to retry" at its next request (or at once if one was in
//	                                    flight), ReadyForQuery 'E'; its ROLLBACK is answered by the
//	                                    proxy (ReadyForQuery 'I') and the session then moves
//	COMMIT of an explicit transaction   its real outcome (resolve.go): COMMIT once confirmed
//	in flight, no answer                replicated, or 40001 "not committed, safe to retry";
//	                                    08007 when it cannot be known; ReadyForQuery 'I'
//	an autocommit request in flight     08007 transaction_resolution_unknown, ReadyForQuery 'I';
//	                                    the session stays usable and moves
//	state that cannot be replayed       FATAL 08006 naming why, connection closed
//	rejected before execution by a      sent again to the new primary (retry.go: 25006 or FATAL
//	demoted primary                     57P0x before any result, autocommit, routing moved away
//	                                    as a quorum confirms; otherwise the error at once)
//
// A request that reached a server is never sent again, except that rejected one. "Reached" is
// decided under session.mu before the bytes are written: once published as sent, a lost answer
// is 08007 or 40001, never a retry. The move (move.go) is done by the client→backend relay
// while the backend→client relay is parked: it waits for the primary, logs in with the kept
// credentials (SCRAM ClientKey or md5 verifier), replays the state in one query, sends the
// client the ParameterStatus values that differ, and hands the new connection over. Named
// statements are prepared again lazily, just before their first use (the proxy sends the
// client's original Parse and drops its ParseComplete).
//
// Cancel keys (cancel.go): clients get the first backend's real process id and the proxy's own
// secret, which names the owning proxy node and survives moves. Every cancel is forwarded (by
// another proxy node to the owner, over consensus peer calls), except while the backend waits
// for synchronous replication of its commit (SPEC §4); a wait cut anyway is covered by a
// replication barrier before the commit's answer is relayed (syncrep.go). A held request is
// cancelled by the proxy (57014).
//
// # Ownership and lifecycle
//
// See session and phase.go: the startup goroutine, then the two relay goroutines, own the
// session; while the backend link is down (held, detached, moving) the client→backend relay
// owns the client side too. Serve runs the accept loop and the route watcher; Shutdown stops
// accepting and drains: sessions in startup are refused (57P03), sessions without requests in
// flight close at once and the others at their next safe point (FATAL 57P01); the rest are
// closed when its context ends. No input may
// panic the process; each session goroutine recovers as a last resort and closes only its own
// session.
//
// Known limits: a function that changes session state inside its body (SET without LOCAL,
// CREATE TEMP TABLE, pg_advisory_lock) is not seen, except the settings PostgreSQL reports
// with ParameterStatus (application_name, DateStyle, IntervalStyle, TimeZone: a move sets them
// again to the values the client saw, move.go); set_config() written in the SQL text still
// makes the session unmovable (the proxy does not read its arguments); notifications sent
// while a session has no backend (between the loss and the LISTEN replayed by the move, which
// happens at once for a listening session) are lost, as they would be for a client that
// reconnects; several pipelined requests in flight when the backend is lost end the session
// (08006); a SQL EXECUTE of a statement prepared with the protocol's Parse, first used after
// a move, is not prepared again (26000); a COMMIT sent through the extended protocol or
// pipelined behind other requests is not probed (08007 when lost); named statements larger
// than 16 KiB, and statements that change session state larger than that, make the session
// unmovable. After a move the session's backend pid differs from the one in its BackendKeyData.
//
// The package must not decide where the primary is (the Router does) and must not decode
// message contents it does not need.
package proxy
