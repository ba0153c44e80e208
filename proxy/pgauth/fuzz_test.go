package pgauth_test

import (
	"bytes"
	"crypto/sha256"
	"testing"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgquorum/pgquorum/proxy/pgauth"
)

// FuzzSCRAMServer feeds arbitrary client-first and client-final messages to a
// SCRAMServer. It must never panic, and it may only succeed with a ClientKey
// that really hashes to the verifier's StoredKey.
func FuzzSCRAMServer(f *testing.F) {
	v, err := pgauth.NewSCRAMVerifier("fuzz", []byte("fuzz salt 123456"), 16)
	if err != nil {
		f.Fatal(err)
	}
	// Seed with a valid exchange for the deterministic server nonce, so the
	// fuzzer starts from messages that get all the way to the proof check.
	client := &passwordSCRAMClient{password: "fuzz", clientNonce: "seednonce"}
	clientFirst := client.clientFirst()
	serverFirst, err := pgauth.NewSCRAMServer("u", v, fixedNonces(3)).First(clientFirst)
	if err != nil {
		f.Fatal(err)
	}
	clientFinal, err := client.clientFinal(serverFirst)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(clientFirst, clientFinal)
	f.Add([]byte("y,,n=user,r=abc,x=1"), []byte("c=eSws,r=abc,p=AAAA"))
	f.Add([]byte("p=tls-server-end-point,,n=,r=abc"), []byte(""))
	f.Add([]byte("n,a=x,n=,r=abc"), []byte("c=biws"))
	f.Add([]byte("n,,m=1,n=,r=,"), []byte(",,,,p="))
	f.Add([]byte("n,,n=,r=abc"), []byte("c=biws,r=abcAwMDAwMDAwMDAwMDAwMDAwMD,x=,p=="))

	f.Fuzz(func(t *testing.T, clientFirst, clientFinal []byte) {
		server := pgauth.NewSCRAMServer("u", v, fixedNonces(3))
		serverFirst, err := server.First(clientFirst)
		if err != nil {
			if serverFirst != nil {
				t.Fatal("First returned a message with an error")
			}
			return
		}
		if !bytes.HasPrefix(serverFirst, []byte("r=")) {
			t.Fatalf("server-first %q", serverFirst)
		}
		serverFinal, creds, err := server.Final(clientFinal)
		if err != nil {
			if serverFinal != nil || creds.ClientKey != nil {
				t.Fatal("Final returned output with an error")
			}
			return
		}
		storedKey := sha256.Sum256(creds.ClientKey)
		if !bytes.Equal(storedKey[:], v.StoredKey) {
			t.Fatalf("accepted a proof whose ClientKey does not match StoredKey: %q", clientFinal)
		}
	})
}

// FuzzBackendAuth feeds arbitrary server-first and server-final messages to
// BackendAuth. It must never panic nor accept a server-final that is not the
// signature a real server with ServerKey would send.
func FuzzBackendAuth(f *testing.F) {
	v, err := pgauth.NewSCRAMVerifier("fuzz", []byte("fuzz salt 123456"), 16)
	if err != nil {
		f.Fatal(err)
	}
	client := &passwordSCRAMClient{password: "fuzz", clientNonce: "seednonce"}
	server := pgauth.NewSCRAMServer("u", v, fixedNonces(3))
	serverFirst, err := server.First(client.clientFirst())
	if err != nil {
		f.Fatal(err)
	}
	clientFinal, err := client.clientFinal(serverFirst)
	if err != nil {
		f.Fatal(err)
	}
	_, creds, err := server.Final(clientFinal)
	if err != nil {
		f.Fatal(err)
	}
	// A real exchange for BackendAuth's deterministic nonce as the seed.
	auth := pgauth.NewBackendAuth(creds, fixedNonces(5))
	reply, _ := auth.Handle(&pgproto3.AuthenticationSASL{AuthMechanisms: []string{"SCRAM-SHA-256"}})
	realServer := pgauth.NewSCRAMServer("u", v, fixedNonces(3))
	seedFirst, err := realServer.First(reply.(*pgproto3.SASLInitialResponse).Data)
	if err != nil {
		f.Fatal(err)
	}
	reply, err = auth.Handle(&pgproto3.AuthenticationSASLContinue{Data: seedFirst})
	if err != nil {
		f.Fatal(err)
	}
	seedFinal, _, err := realServer.Final(reply.(*pgproto3.SASLResponse).Data)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(seedFirst, seedFinal)
	f.Add([]byte("r=x,s=,i=-1"), []byte("e=other-error"))
	f.Add([]byte("m=1"), []byte("v="))

	f.Fuzz(func(t *testing.T, serverFirst, serverFinal []byte) {
		auth := pgauth.NewBackendAuth(creds, fixedNonces(5))
		if _, err := auth.Handle(&pgproto3.AuthenticationSASL{AuthMechanisms: []string{"SCRAM-SHA-256"}}); err != nil {
			t.Fatal(err)
		}
		reply, err := auth.Handle(&pgproto3.AuthenticationSASLContinue{Data: serverFirst})
		if err != nil {
			return
		}
		clientFinal := reply.(*pgproto3.SASLResponse).Data
		if _, err := auth.Handle(&pgproto3.AuthenticationSASLFinal{Data: serverFinal}); err != nil {
			return
		}
		// Accepted: the only acceptable signature is the one a real server
		// computes over the same messages, which exists only if the nonce
		// is the real server's.
		// Extensions after the signature are allowed by RFC 5802.
		signatureMatches := bytes.Equal(serverFinal, seedFinal) || bytes.HasPrefix(serverFinal, append(bytes.Clone(seedFinal), ','))
		if !bytes.Equal(serverFirst, seedFirst) || !signatureMatches {
			t.Fatalf("accepted server-first %q / server-final %q for client-final %q", serverFirst, serverFinal, clientFinal)
		}
	})
}

// FuzzParseVerifier checks ParseVerifier never panics and that what it
// accepts survives a Text round trip.
func FuzzParseVerifier(f *testing.F) {
	f.Add(pencilVerifier)
	f.Add(pencilMD5Verifier)
	f.Add("SCRAM-SHA-256$1:$:")
	f.Add("md5")
	f.Fuzz(func(t *testing.T, text string) {
		v, err := pgauth.ParseVerifier(text)
		if err != nil {
			return
		}
		again, err := pgauth.ParseVerifier(v.Text())
		if err != nil {
			t.Fatalf("Text() of an accepted verifier does not parse: %v", err)
		}
		if again.Text() != v.Text() || again.Kind != v.Kind {
			t.Fatal("Text round trip changed the verifier")
		}
	})
}
