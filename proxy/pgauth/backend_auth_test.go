package pgauth_test

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgquorum/pgquorum/proxy/pgauth"
)

// scramCredentials authenticates a password client against a SCRAMServer
// and returns the recovered Credentials, as the proxy does for a client.
func scramCredentials(t *testing.T, user, password string, v pgauth.Verifier) pgauth.Credentials {
	t.Helper()
	creds, err := runSCRAM(t, pgauth.NewSCRAMServer(user, v, nil), password)
	if err != nil {
		t.Fatal(err)
	}
	return creds
}

// relaySCRAM runs BackendAuth against a SCRAMServer standing in for
// PostgreSQL, optionally rewriting the server-final-message, and returns the
// error of the first failing step.
func relaySCRAM(t *testing.T, auth *pgauth.BackendAuth, server *pgauth.SCRAMServer, rewriteServerFinal func([]byte) []byte) error {
	t.Helper()
	reply, err := auth.Handle(&pgproto3.AuthenticationSASL{AuthMechanisms: []string{"SCRAM-SHA-256"}})
	if err != nil {
		return err
	}
	initial := reply.(*pgproto3.SASLInitialResponse)
	if initial.AuthMechanism != "SCRAM-SHA-256" || !bytes.HasPrefix(initial.Data, []byte("n,,n=,r=")) {
		t.Fatalf("client-first-message %q for mechanism %q", initial.Data, initial.AuthMechanism)
	}
	serverFirst, err := server.First(initial.Data)
	if err != nil {
		t.Fatalf("server First: %v", err)
	}
	reply, err = auth.Handle(&pgproto3.AuthenticationSASLContinue{Data: serverFirst})
	if err != nil {
		return err
	}
	serverFinal, _, err := server.Final(reply.(*pgproto3.SASLResponse).Data)
	if err != nil {
		return err
	}
	if rewriteServerFinal != nil {
		serverFinal = rewriteServerFinal(serverFinal)
	}
	if _, err := auth.Handle(&pgproto3.AuthenticationSASLFinal{Data: serverFinal}); err != nil {
		return err
	}
	_, err = auth.Handle(&pgproto3.AuthenticationOk{})
	return err
}

func TestBackendAuthReusesRecoveredClientKey(t *testing.T) {
	v := testVerifier(t, "s3cret")
	creds := scramCredentials(t, "alice", "s3cret", v)
	// Twice, like a session that reconnects after a failover: each exchange
	// has fresh nonces and both succeed without the password.
	for i := 0; i < 2; i++ {
		auth := pgauth.NewBackendAuth(creds, nil)
		if err := relaySCRAM(t, auth, pgauth.NewSCRAMServer("alice", v, nil), nil); err != nil {
			t.Fatalf("attempt %d: %v", i, err)
		}
		if !auth.Done() {
			t.Fatal("Done is false after AuthenticationOk")
		}
	}
}

func TestBackendAuthDetectsImpostorServer(t *testing.T) {
	v := testVerifier(t, "s3cret")
	creds := scramCredentials(t, "alice", "s3cret", v)

	// A backend whose verifier has another ServerKey (other password, or
	// an impostor that learned only StoredKey) cannot sign.
	otherServerKey := v
	otherServerKey.ServerKey = bytes.Repeat([]byte{7}, 32)
	err := relaySCRAM(t, pgauth.NewBackendAuth(creds, nil), pgauth.NewSCRAMServer("alice", otherServerKey, nil), nil)
	if err == nil || !strings.Contains(err.Error(), "server signature") {
		t.Fatalf("err = %v, want server signature mismatch", err)
	}

	tests := []struct {
		name    string
		rewrite func([]byte) []byte
		want    string
	}{
		{"flipped signature", func(b []byte) []byte { b = bytes.Clone(b); b[3] ^= 1; return b }, ""},
		{"server error", func([]byte) []byte { return []byte("e=invalid-proof") }, "invalid-proof"},
		{"empty", func([]byte) []byte { return nil }, "empty"},
		{"short signature", func([]byte) []byte { return []byte("v=AAAA") }, "32 bytes"},
		{"bad base64", func([]byte) []byte { return []byte("v=!!!!") }, "base64"},
		{"wrong attribute", func([]byte) []byte { return []byte("x=1") }, "expected"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			auth := pgauth.NewBackendAuth(creds, nil)
			err := relaySCRAM(t, auth, pgauth.NewSCRAMServer("alice", v, nil), tt.rewrite)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want one mentioning %q", err, tt.want)
			}
			if auth.Done() {
				t.Fatal("Done after a failed exchange")
			}
			if _, err := auth.Handle(&pgproto3.AuthenticationOk{}); err == nil {
				t.Fatal("AuthenticationOk accepted after a failed exchange")
			}
		})
	}
}

func TestBackendAuthWrongClientKeyIsRejectedByServer(t *testing.T) {
	v := testVerifier(t, "s3cret")
	creds := scramCredentials(t, "alice", "other", testVerifier(t, "other"))
	err := relaySCRAM(t, pgauth.NewBackendAuth(creds, nil), pgauth.NewSCRAMServer("alice", v, nil), nil)
	if !errors.Is(err, pgauth.ErrWrongPassword) {
		t.Fatalf("err = %v, want the server's ErrWrongPassword", err)
	}
}

func TestBackendAuthServerFirstMessages(t *testing.T) {
	creds := scramCredentials(t, "alice", "pw", testVerifier(t, "pw"))
	nonce := "AQEBAQEBAQEBAQEBAQEBAQEB" // base64 of 18 bytes of 0x01 from fixedNonces(1)
	tests := []struct {
		name, serverFirst, want string
	}{
		{"valid", "r=" + nonce + "xyz,s=c2FsdA==,i=4096", ""},
		{"valid with extension", "r=" + nonce + "xyz,s=c2FsdA==,i=1,q=ext", ""},
		{"nonce not extended", "r=" + nonce + ",s=c2FsdA==,i=4096", "extend"},
		{"nonce replaced", "r=someoneelse,s=c2FsdA==,i=4096", "extend"},
		{"nonce prefix changed", "r=B" + nonce[1:] + "xyz,s=c2FsdA==,i=4096", "extend"},
		{"nonce with comma-free control char", "r=" + nonce + "\x7f,s=c2FsdA==,i=4096", "extend"},
		{"missing iterations", "r=" + nonce + "xyz,s=c2FsdA==", "needs"},
		{"zero iterations", "r=" + nonce + "xyz,s=c2FsdA==,i=0", "iteration"},
		{"text iterations", "r=" + nonce + "xyz,s=c2FsdA==,i=many", "iteration"},
		{"bad salt", "r=" + nonce + "xyz,s=c2Fsd,i=4096", "salt"},
		{"salt with newline", "r=" + nonce + "xyz,s=c2Fs\ndA==,i=4096", "salt"},
		{"attributes swapped", "s=c2FsdA==,r=" + nonce + "xyz,i=4096", "expected"},
		{"mandatory extension", "m=x,r=" + nonce + "xyz,s=c2FsdA==,i=4096", "extension"},
		{"garbage", "hello", "letter=value"},
		{"NUL", "r=" + nonce + "x\x00,s=c2FsdA==,i=1", "NUL"},
		{"huge", "r=" + nonce + strings.Repeat("x", 20000) + ",s=c2FsdA==,i=1", "more than"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			auth := pgauth.NewBackendAuth(creds, fixedNonces(1))
			if _, err := auth.Handle(&pgproto3.AuthenticationSASL{AuthMechanisms: []string{"SCRAM-SHA-256"}}); err != nil {
				t.Fatal(err)
			}
			reply, err := auth.Handle(&pgproto3.AuthenticationSASLContinue{Data: []byte(tt.serverFirst)})
			if tt.want == "" {
				if err != nil {
					t.Fatalf("rejected: %v", err)
				}
				if !strings.HasPrefix(string(reply.(*pgproto3.SASLResponse).Data), "c=biws,r="+nonce) {
					t.Fatalf("client-final %q", reply.(*pgproto3.SASLResponse).Data)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want one mentioning %q", err, tt.want)
			}
		})
	}
}

func TestBackendAuthMD5(t *testing.T) {
	md5Verifier, _ := pgauth.ParseVerifier(pencilMD5Verifier)
	salt := [4]byte{1, 2, 3, 4}
	creds, err := pgauth.VerifyMD5(md5Verifier, "postgres", salt, md5ClientResponse("postgres", "pencil", salt))
	if err != nil {
		t.Fatal(err)
	}
	auth := pgauth.NewBackendAuth(creds, nil)
	backendSalt := [4]byte{0xde, 0xad, 0xbe, 0xef}
	reply, err := auth.Handle(&pgproto3.AuthenticationMD5Password{Salt: backendSalt})
	if err != nil {
		t.Fatal(err)
	}
	password := reply.(*pgproto3.PasswordMessage).Password
	if want := md5ClientResponse("postgres", "pencil", backendSalt); password != want {
		t.Fatalf("md5 answer %q, want libpq's %q", password, want)
	}
	if _, err := auth.Handle(&pgproto3.AuthenticationOk{}); err != nil || !auth.Done() {
		t.Fatalf("AuthenticationOk: %v", err)
	}
}

func TestBackendAuthRefusals(t *testing.T) {
	scramCreds := scramCredentials(t, "alice", "pw", testVerifier(t, "pw"))
	md5Verifier, _ := pgauth.ParseVerifier(pencilMD5Verifier)
	md5Creds, err := pgauth.VerifyMD5(md5Verifier, "postgres", [4]byte{}, md5ClientResponse("postgres", "pencil", [4]byte{}))
	if err != nil {
		t.Fatal(err)
	}
	trust := pgauth.Credentials{User: "bob", Method: pgauth.MethodTrust}
	tests := []struct {
		name     string
		creds    pgauth.Credentials
		messages []pgproto3.BackendMessage // the last one must fail
		want     string
	}{
		{"cleartext password", scramCreds, []pgproto3.BackendMessage{&pgproto3.AuthenticationCleartextPassword{}}, "cleartext"},
		{"scram asked of md5 credentials", md5Creds, []pgproto3.BackendMessage{&pgproto3.AuthenticationSASL{AuthMechanisms: []string{"SCRAM-SHA-256"}}}, "credentials"},
		{"scram asked of trust credentials", trust, []pgproto3.BackendMessage{&pgproto3.AuthenticationSASL{AuthMechanisms: []string{"SCRAM-SHA-256"}}}, "credentials"},
		{"md5 asked of scram credentials", scramCreds, []pgproto3.BackendMessage{&pgproto3.AuthenticationMD5Password{}}, "md5 verifier"},
		{"md5 asked of trust credentials", trust, []pgproto3.BackendMessage{&pgproto3.AuthenticationMD5Password{}}, "md5 verifier"},
		{"only PLUS offered", scramCreds, []pgproto3.BackendMessage{&pgproto3.AuthenticationSASL{AuthMechanisms: []string{"SCRAM-SHA-256-PLUS"}}}, "not SCRAM-SHA-256"},
		{"GSS", scramCreds, []pgproto3.BackendMessage{&pgproto3.AuthenticationGSS{}}, "unsupported"},
		{"nil", scramCreds, []pgproto3.BackendMessage{nil}, "nil"},
		{"continue before start", scramCreds, []pgproto3.BackendMessage{&pgproto3.AuthenticationSASLContinue{Data: []byte("r=x,s=c2FsdA==,i=1")}}, "out of order"},
		{"final before continue", scramCreds, []pgproto3.BackendMessage{
			&pgproto3.AuthenticationSASL{AuthMechanisms: []string{"SCRAM-SHA-256"}},
			&pgproto3.AuthenticationSASLFinal{Data: []byte("v=AAAA")}}, "out of order"},
		{"ok skipping the server signature", scramCreds, []pgproto3.BackendMessage{
			&pgproto3.AuthenticationSASL{AuthMechanisms: []string{"SCRAM-SHA-256"}},
			&pgproto3.AuthenticationOk{}}, "before completing"},
		{"second SASL request", scramCreds, []pgproto3.BackendMessage{
			&pgproto3.AuthenticationSASL{AuthMechanisms: []string{"SCRAM-SHA-256"}},
			&pgproto3.AuthenticationSASL{AuthMechanisms: []string{"SCRAM-SHA-256"}}}, "middle"},
		{"error response", scramCreds, []pgproto3.BackendMessage{&pgproto3.ErrorResponse{Severity: "FATAL", Code: "28P01", Message: "password authentication failed"}}, "28P01"},
		{"message after ok", trust, []pgproto3.BackendMessage{&pgproto3.AuthenticationOk{}, &pgproto3.AuthenticationOk{}}, "after authentication ended"},
		{"non-auth message", scramCreds, []pgproto3.BackendMessage{&pgproto3.ReadyForQuery{TxStatus: 'I'}}, "unexpected"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			auth := pgauth.NewBackendAuth(tt.creds, nil)
			last := len(tt.messages) - 1
			for _, msg := range tt.messages[:last] {
				if _, err := auth.Handle(msg); err != nil {
					t.Fatalf("setup message %T: %v", msg, err)
				}
			}
			reply, err := auth.Handle(tt.messages[last])
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want one mentioning %q", err, tt.want)
			}
			if reply != nil {
				t.Fatalf("failed Handle returned a reply %T", reply)
			}
			for _, secret := range []string{string(scramCreds.ClientKey), pencilMD5Verifier} {
				if strings.Contains(err.Error(), secret) {
					t.Fatalf("error leaks a secret: %v", err)
				}
			}
		})
	}
	// The backend's ErrorResponse stays inspectable.
	_, err = pgauth.NewBackendAuth(scramCreds, nil).Handle(&pgproto3.ErrorResponse{Severity: "FATAL", Code: "28P01"})
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "28P01" {
		t.Fatalf("err = %v, want a *pgconn.PgError with code 28P01", err)
	}
}

func TestBackendAuthTrustNeedsNothing(t *testing.T) {
	auth := pgauth.NewBackendAuth(pgauth.Credentials{User: "bob", Method: pgauth.MethodTrust}, nil)
	if reply, err := auth.Handle(&pgproto3.AuthenticationOk{}); err != nil || reply != nil || !auth.Done() {
		t.Fatalf("reply %v, err %v", reply, err)
	}
}
