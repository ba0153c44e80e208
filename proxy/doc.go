// Package proxy is pgquorum's PostgreSQL listener: it accepts client connections, terminates the
// startup phase (TLS, protocol negotiation, authentication), opens a backend connection to the
// primary the Router names, and then relays protocol messages in both directions.
//
// # Data path
//
// Accept loop (Server.Serve): one goroutine accepts connections and starts one startup goroutine
// per connection. Temporary accept errors (EMFILE, ...) are retried with backoff.
//
// Startup (session.startup, startup.go, tls.go, clientauth.go): the startup goroutine reads the
// startup packet with a bounded size, answers SSLRequest (TLS handshake or 'N') and GSSENCRequest
// ('N'), serves CancelRequest (cancel.go), negotiates the protocol version (3.0 and 3.2, like
// PostgreSQL 18), authenticates the client itself (trust, md5 or SCRAM-SHA-256 with verifiers read
// from the primary by an auth query, authquery.go), connects to Router.Primary and logs in there with
// the credentials recovered from the client's exchange (backend.go). It then sends the client the
// backend's ParameterStatus messages, the proxy's own BackendKeyData and ReadyForQuery, starts the
// two relay goroutines and exits, so that its (possibly grown) stack is released.
//
// Relay (relay.go, relay_unix.go): per session one goroutine copies client→backend and one
// backend→client. They parse only the 5-byte message headers to find message boundaries, forward
// every complete message that is already read in one write, stream messages larger than half a
// pooled buffer through with bounded memory, and record the few facts later features need
// (ReadyForQuery status, last client message type, outstanding Query/Sync count: a "safe point",
// session.atSafePoint, is when all of them say the session is idle between transactions). An idle
// session holds no read buffer: on plain TCP the relay waits for readability through
// syscall.RawConn and takes a pooled buffer only when bytes are there, and its reads and writes
// are raw non-blocking system calls (see relay_unix.go for why).
//
// Cancel keys (cancel.go): clients get the proxy's own BackendKeyData, which encodes this proxy's
// node id; a CancelRequest is mapped back to the session and sent to its backend with the
// backend's real key.
//
// Lifecycle (server.go): Serve runs the accept loop; Shutdown stops accepting, closes each session
// when it reaches a safe point (FATAL 57P01), and closes the rest when its context ends.
//
// Errors reach the client as an ErrorResponse (FATAL with a SQLSTATE) before the connection is
// closed whenever the stream is at a message boundary. No input may panic the process; each
// session goroutine recovers as a last resort and closes only its own session.
//
// The package must not decide where the primary is (the Router does) and must not decode message
// contents it does not need.
package proxy
