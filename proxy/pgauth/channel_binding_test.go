package pgauth_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgquorum/pgquorum/proxy/pgauth"
)

// plusExchange runs a SCRAM-SHA-256-PLUS exchange: the server binds to serverData, the client
// to clientData (a man in the middle's certificate when they differ).
func plusExchange(t *testing.T, v pgauth.Verifier, password string, serverData, clientData []byte) error {
	t.Helper()
	server := pgauth.NewSCRAMServerWith("alice", v, pgauth.SCRAMServerOptions{ChannelBinding: serverData})
	if got := server.Mechanisms(); !slices.Equal(got, []string{"SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"}) {
		t.Fatalf("offered %q over TLS", got)
	}
	if err := server.SelectMechanism("SCRAM-SHA-256-PLUS"); err != nil {
		t.Fatal(err)
	}
	client := &passwordSCRAMClient{password: password, clientNonce: "nonce", gs2Header: "p=tls-server-end-point,,", binding: clientData}
	serverFirst, err := server.First(client.clientFirst())
	if err != nil {
		return err
	}
	clientFinal, err := client.clientFinal(serverFirst)
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = server.Final(clientFinal)
	return err
}

func TestSCRAMPlusBindsTheExchangeToTheCertificate(t *testing.T) {
	v := testVerifier(t, "s3cret")
	serverCert := bytes.Repeat([]byte{1}, 32)
	if err := plusExchange(t, v, "s3cret", serverCert, serverCert); err != nil {
		t.Fatalf("matching channel binding: %v", err)
	}
	// A man in the middle presents its own certificate to the client: the client binds to it.
	err := plusExchange(t, v, "s3cret", serverCert, bytes.Repeat([]byte{2}, 32))
	if !errors.Is(err, pgauth.ErrProtocolViolation) || !strings.Contains(err.Error(), "channel binding check failed") {
		t.Fatalf("relayed exchange: %v, want a channel binding failure", err)
	}
	// An unknown role fails like a wrong password, at the end, not earlier.
	server := pgauth.NewSCRAMServerWith("ghost", pgauth.Verifier{}, pgauth.SCRAMServerOptions{ChannelBinding: serverCert})
	if err := server.SelectMechanism("SCRAM-SHA-256-PLUS"); err != nil {
		t.Fatal(err)
	}
	client := &passwordSCRAMClient{password: "x", clientNonce: "nonce", gs2Header: "p=tls-server-end-point,,", binding: serverCert}
	first, err := server.First(client.clientFirst())
	if err != nil {
		t.Fatal(err)
	}
	final, _ := client.clientFinal(first)
	if _, _, err := server.Final(final); !errors.Is(err, pgauth.ErrWrongPassword) {
		t.Fatalf("unknown role: %v", err)
	}
}

func TestSCRAMChannelBindingNegotiation(t *testing.T) {
	v := testVerifier(t, "pw")
	cb := bytes.Repeat([]byte{7}, 32)
	tests := []struct {
		name      string
		tls       bool
		mechanism string
		gs2       string
		wantErr   string // "" = First succeeds
	}{
		{"plain SCRAM over TLS", true, "SCRAM-SHA-256", "n,,", ""},
		{"client that cannot bind, no TLS", false, "SCRAM-SHA-256", "y,,", ""},
		{"downgrade: client could bind, -PLUS was offered", true, "SCRAM-SHA-256", "y,,", "negotiation error"},
		{"binding data with plain SCRAM", true, "SCRAM-SHA-256", "p=tls-server-end-point,,", "without channel binding"},
		{"-PLUS without binding data", true, "SCRAM-SHA-256-PLUS", "n,,", "does not include channel binding"},
		{"-PLUS with another binding type", true, "SCRAM-SHA-256-PLUS", "p=tls-unique,,", "unsupported SCRAM channel-binding type"},
		{"-PLUS without TLS", false, "SCRAM-SHA-256-PLUS", "p=tls-server-end-point,,", "only over TLS"},
		{"unknown mechanism", true, "SCRAM-SHA-1", "n,,", "not offered"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts := pgauth.SCRAMServerOptions{}
			if tt.tls {
				opts.ChannelBinding = cb
			}
			server := pgauth.NewSCRAMServerWith("alice", v, opts)
			err := server.SelectMechanism(tt.mechanism)
			if err == nil {
				_, err = server.First([]byte(tt.gs2 + "n=,r=abc"))
			}
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tt.wantErr != "" && (!errors.Is(err, pgauth.ErrProtocolViolation) || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("err = %v, want a protocol violation mentioning %q", err, tt.wantErr)
			}
		})
	}
}

func TestBackendAuthBindsToTheBackendsCertificate(t *testing.T) {
	v := testVerifier(t, "s3cret")
	creds := scramCredentials(t, "alice", "s3cret", v)
	cb := bytes.Repeat([]byte{9}, 32)
	run := func(proxySees []byte) (string, error) {
		server := pgauth.NewSCRAMServerWith("alice", v, pgauth.SCRAMServerOptions{ChannelBinding: cb})
		auth := pgauth.NewBackendAuth(creds, nil)
		auth.SetChannelBinding(proxySees)
		reply, err := auth.Handle(&pgproto3.AuthenticationSASL{AuthMechanisms: server.Mechanisms()})
		if err != nil {
			return "", err
		}
		initial := reply.(*pgproto3.SASLInitialResponse)
		if err := server.SelectMechanism(initial.AuthMechanism); err != nil {
			return initial.AuthMechanism, err
		}
		first, err := server.First(initial.Data)
		if err != nil {
			return initial.AuthMechanism, err
		}
		reply, err = auth.Handle(&pgproto3.AuthenticationSASLContinue{Data: first})
		if err != nil {
			return initial.AuthMechanism, err
		}
		final, _, err := server.Final(reply.(*pgproto3.SASLResponse).Data)
		if err != nil {
			return initial.AuthMechanism, err
		}
		_, err = auth.Handle(&pgproto3.AuthenticationSASLFinal{Data: final})
		return initial.AuthMechanism, err
	}
	if mechanism, err := run(cb); err != nil || mechanism != "SCRAM-SHA-256-PLUS" {
		t.Fatalf("bound login: %s, %v", mechanism, err)
	}
	// Between the proxy and PostgreSQL sits a man in the middle with its own certificate.
	if _, err := run(bytes.Repeat([]byte{8}, 32)); err == nil {
		t.Fatal("a login relayed through another TLS connection succeeded")
	}
}

func TestTLSServerEndPointHashesLikePostgreSQL(t *testing.T) {
	for _, tt := range []struct {
		curve elliptic.Curve
		alg   x509.SignatureAlgorithm
		want  func([]byte) []byte
	}{
		{elliptic.P256(), x509.ECDSAWithSHA256, func(b []byte) []byte { s := sha256.Sum256(b); return s[:] }},
		{elliptic.P384(), x509.ECDSAWithSHA384, func(b []byte) []byte { s := sha512.Sum384(b); return s[:] }},
		{elliptic.P256(), x509.ECDSAWithSHA1, func(b []byte) []byte { s := sha256.Sum256(b); return s[:] }}, // SHA-1: SHA-256 (RFC 5929)
	} {
		key, err := ecdsa.GenerateKey(tt.curve, rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "pg"},
			NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour), SignatureAlgorithm: tt.alg}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
		if err != nil {
			t.Fatalf("%v: %v", tt.alg, err)
		}
		cert, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		if got := pgauth.TLSServerEndPoint(cert); !bytes.Equal(got, tt.want(der)) {
			t.Errorf("%v: end point %x, want %x", tt.alg, got, tt.want(der))
		}
	}
}

func TestMockSaltIsStableForOneSecretAndDiffersOtherwise(t *testing.T) {
	salt := func(k pgauth.MockKey, user string) []byte { return k.Verifier(user).Salt }
	a, b := pgauth.NewMockKey([]byte("cluster secret one")), pgauth.NewMockKey([]byte("cluster secret one"))
	if !bytes.Equal(salt(a, "ghost"), salt(b, "ghost")) {
		t.Error("two proxies with the same secret announce different salts")
	}
	if bytes.Equal(salt(a, "ghost"), salt(a, "phantom")) {
		t.Error("two roles share a mock salt")
	}
	if bytes.Equal(salt(a, "ghost"), salt(pgauth.NewMockKey([]byte("another cluster")), "ghost")) {
		t.Error("the salt does not depend on the secret")
	}
	if bytes.Equal(salt(a, "ghost"), salt(pgauth.MockKey{}, "ghost")) {
		t.Error("the per-process key equals a cluster key")
	}
	v := a.Verifier("ghost")
	if v.Kind != pgauth.SCRAMSHA256 || v.Iterations != 4096 || len(v.Salt) != 16 {
		t.Errorf("mock verifier %v does not look like PostgreSQL's default", v)
	}
	// The mock verifier round-trips like a real one (the voters send it to learners).
	parsed, err := pgauth.ParseVerifier(v.Text())
	if err != nil || !bytes.Equal(parsed.Salt, v.Salt) {
		t.Fatalf("mock verifier does not round-trip: %v", err)
	}
	// Nobody knows a password for it.
	server := pgauth.NewSCRAMServerWith("ghost", parsed, pgauth.SCRAMServerOptions{})
	if _, err := runSCRAM(t, server, ""); !errors.Is(err, pgauth.ErrWrongPassword) {
		t.Fatalf("exchange against the mock verifier: %v", err)
	}
}
