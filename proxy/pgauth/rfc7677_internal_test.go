package pgauth

import (
	"encoding/base64"
	"testing"

	"github.com/jackc/pgx/v5/pgproto3"
)

// The exchange of RFC 7677 section 3 (user "user", password "pencil"). The
// verifier and ClientKey were computed independently (Python hashlib) from
// the password, salt and iteration count.
const (
	rfcClientNonce = "rOprNGfwEbeRWgbNEkqO"
	rfcServerNonce = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
	rfcClientFirst = "n,,n=user,r=rOprNGfwEbeRWgbNEkqO"
	rfcServerFirst = "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
	rfcClientFinal = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
	rfcServerFinal = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="

	rfcVerifier  = "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU="
	rfcClientKey = "pg/JI9Z+hkSpLRa5btpe9GVrDHJcSEN0viVTVXaZbos="
)

func TestRFC7677VerifierFromPassword(t *testing.T) {
	salt, _ := base64.StdEncoding.DecodeString("W22ZaJ0SNY7soEsUEjb6gQ==")
	v, err := NewSCRAMVerifier("pencil", salt, 4096)
	if err != nil {
		t.Fatal(err)
	}
	if got := v.Text(); got != rfcVerifier {
		t.Fatalf("verifier = %q, want %q", got, rfcVerifier)
	}
}

func TestRFC7677ServerSide(t *testing.T) {
	v, err := ParseVerifier(rfcVerifier)
	if err != nil {
		t.Fatal(err)
	}
	server := NewSCRAMServer("user", v, nil)
	server.serverNonce = rfcServerNonce

	serverFirst, err := server.First([]byte(rfcClientFirst))
	if err != nil {
		t.Fatal(err)
	}
	if string(serverFirst) != rfcServerFirst {
		t.Fatalf("server-first = %q, want %q", serverFirst, rfcServerFirst)
	}
	serverFinal, creds, err := server.Final([]byte(rfcClientFinal))
	if err != nil {
		t.Fatal(err)
	}
	if string(serverFinal) != rfcServerFinal {
		t.Fatalf("server-final = %q, want %q", serverFinal, rfcServerFinal)
	}
	if got := base64.StdEncoding.EncodeToString(creds.ClientKey); got != rfcClientKey {
		t.Fatalf("recovered ClientKey = %s, want %s", got, rfcClientKey)
	}
	if creds.User != "user" || creds.Method != MethodSCRAMSHA256 || string(creds.ServerKey) != string(v.ServerKey) {
		t.Fatalf("credentials = %v", creds)
	}
}

func TestRFC7677ClientSide(t *testing.T) {
	v, err := ParseVerifier(rfcVerifier)
	if err != nil {
		t.Fatal(err)
	}
	clientKey, _ := base64.StdEncoding.DecodeString(rfcClientKey)
	auth := NewBackendAuth(Credentials{User: "user", Method: MethodSCRAMSHA256, ClientKey: clientKey, ServerKey: v.ServerKey}, nil)
	auth.saslUser = "user"
	auth.clientNonce = rfcClientNonce

	reply, err := auth.Handle(&pgproto3.AuthenticationSASL{AuthMechanisms: []string{"SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"}})
	if err != nil {
		t.Fatal(err)
	}
	initial, ok := reply.(*pgproto3.SASLInitialResponse)
	if !ok || initial.AuthMechanism != "SCRAM-SHA-256" || string(initial.Data) != rfcClientFirst {
		t.Fatalf("first reply = %#v, want SASLInitialResponse with %q", reply, rfcClientFirst)
	}
	reply, err = auth.Handle(&pgproto3.AuthenticationSASLContinue{Data: []byte(rfcServerFirst)})
	if err != nil {
		t.Fatal(err)
	}
	if response, ok := reply.(*pgproto3.SASLResponse); !ok || string(response.Data) != rfcClientFinal {
		t.Fatalf("second reply = %#v, want SASLResponse with %q", reply, rfcClientFinal)
	}
	if reply, err = auth.Handle(&pgproto3.AuthenticationSASLFinal{Data: []byte(rfcServerFinal)}); err != nil || reply != nil {
		t.Fatalf("server-final: reply %v, err %v", reply, err)
	}
	if reply, err = auth.Handle(&pgproto3.AuthenticationOk{}); err != nil || reply != nil || !auth.Done() {
		t.Fatalf("AuthenticationOk: reply %v, err %v, done %v", reply, err, auth.Done())
	}
}
