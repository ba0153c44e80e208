package pgauth_test

import (
	"bytes"
	"encoding/base64"
	"errors"
	"strings"
	"testing"

	"github.com/pgquorum/pgquorum/proxy/pgauth"
)

// testVerifier derives a SCRAM verifier for password with a fixed salt.
func testVerifier(t *testing.T, password string) pgauth.Verifier {
	t.Helper()
	v, err := pgauth.NewSCRAMVerifier(password, []byte("fixed test salt!"), 4096)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// fixedNonces returns a predictable nonce source: the byte seed, repeated.
func fixedNonces(seed byte) *bytes.Reader {
	return bytes.NewReader(bytes.Repeat([]byte{seed}, 1024))
}

// runSCRAM runs a whole exchange between the password client and a server.
func runSCRAM(t *testing.T, server *pgauth.SCRAMServer, password string) (pgauth.Credentials, error) {
	t.Helper()
	client := &passwordSCRAMClient{password: password, clientNonce: "client-nonce-123"}
	serverFirst, err := server.First(client.clientFirst())
	if err != nil {
		t.Fatalf("First: %v", err)
	}
	clientFinal, err := client.clientFinal(serverFirst)
	if err != nil {
		t.Fatal(err)
	}
	serverFinal, creds, err := server.Final(clientFinal)
	if err != nil {
		return creds, err
	}
	if err := client.checkServerFinal(serverFinal); err != nil {
		t.Fatal(err)
	}
	return creds, nil
}

func TestSCRAMServerAcceptsRightPassword(t *testing.T) {
	v := testVerifier(t, "s3cret")
	creds, err := runSCRAM(t, pgauth.NewSCRAMServer("alice", v, fixedNonces(1)), "s3cret")
	if err != nil {
		t.Fatal(err)
	}
	if creds.User != "alice" || creds.Method != pgauth.MethodSCRAMSHA256 ||
		len(creds.ClientKey) != 32 || !bytes.Equal(creds.ServerKey, v.ServerKey) || creds.MD5 != "" {
		t.Fatalf("credentials = %v", creds)
	}
}

func TestSCRAMServerRejectsWrongPassword(t *testing.T) {
	v := testVerifier(t, "s3cret")
	creds, err := runSCRAM(t, pgauth.NewSCRAMServer("alice", v, nil), "S3cret")
	if !errors.Is(err, pgauth.ErrWrongPassword) {
		t.Fatalf("err = %v, want ErrWrongPassword", err)
	}
	if creds.ClientKey != nil || creds.Method != "" {
		t.Fatalf("failed exchange returned credentials %v", creds)
	}
}

func TestSCRAMServerUnknownUserFailsOnlyAtTheEnd(t *testing.T) {
	first := []byte("n,,n=,r=abcdef")
	a, errA := pgauth.NewSCRAMServerForUnknownUser("ghost").First(first)
	b, errB := pgauth.NewSCRAMServerForUnknownUser("ghost").First(first)
	c, errC := pgauth.NewSCRAMServerForUnknownUser("phantom").First(first)
	if errA != nil || errB != nil || errC != nil {
		t.Fatalf("fake exchange failed early: %v %v %v", errA, errB, errC)
	}
	saltOf := func(serverFirst []byte) string {
		fields := strings.Split(string(serverFirst), ",")
		if len(fields) != 3 || fields[2] != "i=4096" {
			t.Fatalf("fake server-first-message %q does not look like a real one", serverFirst)
		}
		salt, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(fields[1], "s="))
		if err != nil || len(salt) != 16 {
			t.Fatalf("fake salt %q is not 16 bytes of base64", fields[1])
		}
		return fields[1]
	}
	if saltOf(a) != saltOf(b) {
		t.Fatal("mock salt differs between two exchanges for the same user")
	}
	if saltOf(a) == saltOf(c) {
		t.Fatal("mock salt is the same for two different users")
	}
	if strings.Split(string(a), ",")[0] == strings.Split(string(b), ",")[0] {
		t.Fatal("two fake exchanges used the same server nonce")
	}

	// The whole exchange runs, and the error equals a wrong password's.
	_, unknownErr := runSCRAM(t, pgauth.NewSCRAMServerForUnknownUser("ghost"), "anything")
	if !errors.Is(unknownErr, pgauth.ErrWrongPassword) {
		t.Fatalf("unknown user: err = %v, want ErrWrongPassword", unknownErr)
	}
	_, wrongErr := runSCRAM(t, pgauth.NewSCRAMServer("ghost", testVerifier(t, "x"), nil), "y")
	if unknownErr.Error() != wrongErr.Error() {
		t.Fatalf("unknown user error %q differs from wrong password error %q", unknownErr, wrongErr)
	}
}

func TestSCRAMServerWithNonSCRAMVerifierIsAFakeExchange(t *testing.T) {
	md5Verifier, err := pgauth.ParseVerifier(pencilMD5Verifier)
	if err != nil {
		t.Fatal(err)
	}
	for name, v := range map[string]pgauth.Verifier{
		"md5":           md5Verifier,
		"zero":          {},
		"truncated key": {Kind: pgauth.SCRAMSHA256, Iterations: 1, Salt: []byte("s"), StoredKey: []byte("short"), ServerKey: []byte("short")},
	} {
		_, err := runSCRAM(t, pgauth.NewSCRAMServer("postgres", v, nil), "pencil")
		if !errors.Is(err, pgauth.ErrWrongPassword) {
			t.Fatalf("%s verifier: err = %v, want ErrWrongPassword", name, err)
		}
	}
}

func TestSCRAMServerRejectsTamperedFinalMessage(t *testing.T) {
	v := testVerifier(t, "s3cret")
	tests := []struct {
		name    string
		tamper  func(final string) string
		wantErr error
	}{
		{"nonce changed", func(f string) string { return strings.Replace(f, ",r=client-nonce-123", ",r=client-nonce-124", 1) }, pgauth.ErrProtocolViolation},
		{"server part of nonce dropped", func(f string) string {
			start := strings.Index(f, ",r=") + 3
			end := strings.Index(f, ",p=")
			return f[:start] + "client-nonce-123" + f[end:]
		}, pgauth.ErrProtocolViolation},
		{"channel binding claims y", func(f string) string { return strings.Replace(f, "c=biws", "c=eSws", 1) }, pgauth.ErrProtocolViolation},
		{"channel binding data present", func(f string) string {
			return strings.Replace(f, "c=biws", "c=cD10bHMtc2VydmVyLWVuZC1wb2ludCwsYWJj", 1)
		}, pgauth.ErrProtocolViolation},
		{"proof bit flipped", func(f string) string {
			i := strings.Index(f, ",p=") + 3
			proof, _ := base64.StdEncoding.DecodeString(f[i:])
			proof[0] ^= 1
			return f[:i] + base64.StdEncoding.EncodeToString(proof)
		}, pgauth.ErrWrongPassword},
		{"extension inserted before proof", func(f string) string { return strings.Replace(f, ",p=", ",x=extra,p=", 1) }, pgauth.ErrWrongPassword},
		{"proof truncated", func(f string) string { return f[:len(f)-4] }, pgauth.ErrProtocolViolation},
		{"proof not last", func(f string) string { return f + ",x=1" }, pgauth.ErrProtocolViolation},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			server := pgauth.NewSCRAMServer("alice", v, nil)
			client := &passwordSCRAMClient{password: "s3cret", clientNonce: "client-nonce-123"}
			serverFirst, err := server.First(client.clientFirst())
			if err != nil {
				t.Fatal(err)
			}
			final, err := client.clientFinal(serverFirst)
			if err != nil {
				t.Fatal(err)
			}
			tampered := tt.tamper(string(final))
			if tampered == string(final) {
				t.Fatal("tamper function changed nothing")
			}
			_, creds, err := server.Final([]byte(tampered))
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if creds.ClientKey != nil {
				t.Fatal("tampered exchange returned a ClientKey")
			}
		})
	}
}

func TestSCRAMServerRejectsReplayedFinalMessage(t *testing.T) {
	v := testVerifier(t, "s3cret")
	client := &passwordSCRAMClient{password: "s3cret", clientNonce: "client-nonce-123"}
	first := pgauth.NewSCRAMServer("alice", v, nil)
	serverFirst, err := first.First(client.clientFirst())
	if err != nil {
		t.Fatal(err)
	}
	recordedFinal, err := client.clientFinal(serverFirst)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := first.Final(recordedFinal); err != nil {
		t.Fatalf("original exchange failed: %v", err)
	}
	// The same server refuses a second final message...
	if _, _, err := first.Final(recordedFinal); !errors.Is(err, pgauth.ErrProtocolViolation) {
		t.Fatalf("second Final on one exchange: err = %v", err)
	}
	// ...and a new exchange, with the same client-first, has a fresh server nonce.
	second := pgauth.NewSCRAMServer("alice", v, nil)
	if _, err := second.First(client.clientFirst()); err != nil {
		t.Fatal(err)
	}
	if _, creds, err := second.Final(recordedFinal); !errors.Is(err, pgauth.ErrProtocolViolation) || creds.ClientKey != nil {
		t.Fatalf("replayed final message: err = %v", err)
	}
}

func TestSCRAMServerClientFirstMessages(t *testing.T) {
	tests := []struct {
		name        string
		clientFirst string
		wantErr     string // "" means accepted
	}{
		{"libpq style, empty user", "n,,n=,r=abc", ""},
		{"user name present and ignored", "n,,n=someone=2Celse,r=abc", ""},
		{"client supports channel binding but we do not advertise it", "y,,n=,r=abc", ""},
		{"extensions after nonce ignored", "n,,n=,r=abc,x=1,y=2", ""},
		{"channel binding required", "p=tls-server-end-point,,n=,r=abc", "channel binding"},
		{"authorization identity", "n,a=admin,n=,r=abc", "authorization identity"},
		{"mandatory extension", "n,,m=ext,n=,r=abc", "extension"},
		{"unknown flag", "x,,n=,r=abc", "channel-binding flag"},
		{"empty", "", "empty"},
		{"flag only", "n", "lacks ','"},
		{"header only", "n,,", "letter=value"},
		{"missing second comma", "n,n=,r=abc", "gs2 header"},
		{"missing nonce", "n,,n=", "lacks a nonce"},
		{"missing user", "n,,r=abc", "user name"},
		{"empty nonce", "n,,n=,r=", "empty"},
		{"nonce with space", "n,,n=,r=a b", "printable"},
		{"nonce with control byte", "n,,n=,r=a\x01b", "printable"},
		{"nonce with high byte", "n,,n=,r=a\xffb", "printable"},
		{"trailing comma", "n,,n=,r=abc,", "letter=value"},
		{"attribute without value sign", "n,,n=,r=abc,foo", "letter=value"},
		{"digit attribute name", "n,,n=,r=abc,1=x", "letter=value"},
		{"NUL byte", "n,,n=\x00,r=abc", "NUL"},
		{"huge", "n,,n=,r=" + strings.Repeat("a", 100000), "more than"},
	}
	v := testVerifier(t, "pw")
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			serverFirst, err := pgauth.NewSCRAMServer("alice", v, nil).First([]byte(tt.clientFirst))
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("rejected: %v", err)
				}
				if !strings.HasPrefix(string(serverFirst), "r=abc") {
					t.Fatalf("server-first %q does not extend the client nonce", serverFirst)
				}
				return
			}
			if err == nil {
				t.Fatalf("accepted, server-first %q", serverFirst)
			}
			if !errors.Is(err, pgauth.ErrProtocolViolation) || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want ErrProtocolViolation mentioning %q", err, tt.wantErr)
			}
		})
	}
}

func TestSCRAMServerYFlagRoundTrip(t *testing.T) {
	// A client that supports channel binding but saw only SCRAM-SHA-256 sends
	// "y,,"; its final message then carries base64("y,,") = "eSws".
	v := testVerifier(t, "pw")
	server := pgauth.NewSCRAMServer("alice", v, nil)
	client := &passwordSCRAMClient{password: "pw", clientNonce: "nonce", gs2Header: "y,,"}
	serverFirst, err := server.First(client.clientFirst())
	if err != nil {
		t.Fatal(err)
	}
	final, err := client.clientFinal(serverFirst)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(final), "c=eSws,") {
		t.Fatalf("test client sent %q", final)
	}
	if _, _, err := server.Final(final); err != nil {
		t.Fatalf("y-flag exchange failed: %v", err)
	}
}

func TestSCRAMServerOutOfOrderCalls(t *testing.T) {
	v := testVerifier(t, "pw")
	server := pgauth.NewSCRAMServer("alice", v, nil)
	if _, _, err := server.Final([]byte("c=biws,r=x,p=AAAA")); !errors.Is(err, pgauth.ErrProtocolViolation) {
		t.Fatalf("Final before First: %v", err)
	}
	server = pgauth.NewSCRAMServer("alice", v, nil)
	if _, err := server.First([]byte("n,,n=,r=abc")); err != nil {
		t.Fatal(err)
	}
	if _, err := server.First([]byte("n,,n=,r=abc")); !errors.Is(err, pgauth.ErrProtocolViolation) {
		t.Fatalf("second First: %v", err)
	}
	// A failed First ends the exchange.
	server = pgauth.NewSCRAMServer("alice", v, nil)
	if _, err := server.First([]byte("garbage")); err == nil {
		t.Fatal("garbage accepted")
	}
	if _, err := server.First([]byte("n,,n=,r=abc")); err == nil {
		t.Fatal("exchange continued after a failed First")
	}
	// Running out of randomness is an error, not a predictable nonce.
	server = pgauth.NewSCRAMServer("alice", v, bytes.NewReader([]byte{1, 2, 3}))
	if _, err := server.First([]byte("n,,n=,r=abc")); err == nil {
		t.Fatal("short nonce source accepted")
	}
}

func TestCheckSASLMechanism(t *testing.T) {
	if err := pgauth.CheckSASLMechanism("SCRAM-SHA-256"); err != nil {
		t.Fatal(err)
	}
	for _, mechanism := range []string{"SCRAM-SHA-256-PLUS", "SCRAM-SHA-1", "", "OAUTHBEARER"} {
		err := pgauth.CheckSASLMechanism(mechanism)
		if !errors.Is(err, pgauth.ErrProtocolViolation) {
			t.Fatalf("%q: err = %v", mechanism, err)
		}
	}
	if err := pgauth.CheckSASLMechanism("SCRAM-SHA-256-PLUS"); !strings.Contains(err.Error(), "channel binding") {
		t.Fatalf("-PLUS error does not say why: %v", err)
	}
}
