package pgauth

import (
	"fmt"
	"log/slog"
)

// Authentication methods, as named in pg_hba.conf and in Credentials.Method.
const (
	MethodSCRAMSHA256 = "scram-sha-256"
	MethodMD5         = "md5"
	MethodTrust       = "trust"
)

// Credentials are what a session keeps so the proxy can open a backend
// session for this user later (for example after a failover) without asking
// the client again. They are produced by SCRAMServer.Final or VerifyMD5 (or
// built with Method "trust" and nothing else), and consumed by BackendAuth.
//
// ClientKey and MD5 are password-equivalent for the backend: String, GoString
// and LogValue redact them, and nothing in this package logs them. A session
// owns its Credentials; treat them as read-only once created.
type Credentials struct {
	User   string
	Method string // MethodSCRAMSHA256, MethodMD5 or MethodTrust

	// ClientKey is recovered from the client's SCRAM proof (SCRAM only).
	ClientKey []byte
	// ServerKey comes from the verifier and checks the backend's server
	// signature (SCRAM only).
	ServerKey []byte

	// MD5 is the md5 verifier "md5...", for answering a backend's MD5
	// challenge (MD5 only).
	MD5 string
}

// String describes the credentials with every key redacted.
func (c Credentials) String() string {
	return fmt.Sprintf("Credentials{User: %q, Method: %q, ClientKey: %s, ServerKey: %s, MD5: %s}",
		c.User, c.Method, redactedIfSet(len(c.ClientKey)), redactedIfSet(len(c.ServerKey)), redactedIfSet(len(c.MD5)))
}

// GoString makes %#v as safe as %v.
func (c Credentials) GoString() string { return c.String() }

// LogValue makes slog print the user and method only.
func (c Credentials) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("user", c.User),
		slog.String("method", c.Method),
		slog.String("client_key", redactedIfSet(len(c.ClientKey))),
		slog.String("server_key", redactedIfSet(len(c.ServerKey))),
		slog.String("md5", redactedIfSet(len(c.MD5))),
	)
}

// redactedIfSet says whether a secret is present without revealing it.
func redactedIfSet(length int) string {
	if length == 0 {
		return "[empty]"
	}
	return redacted
}
