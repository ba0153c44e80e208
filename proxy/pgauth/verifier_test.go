package pgauth_test

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/pgquorum/pgquorum/proxy/pgauth"
)

const (
	// RFC 7677's password "pencil" with salt W22ZaJ0SNY7soEsUEjb6gQ== at 4096 iterations.
	pencilVerifier = "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU="
	// md5("pencil" + "postgres"), computed with md5sum.
	pencilMD5Verifier = "md54c21b325d75177d5e9b9789a50ab0c9c"
)

func TestParseVerifierAcceptsPostgresFormats(t *testing.T) {
	scram, err := pgauth.ParseVerifier(pencilVerifier)
	if err != nil {
		t.Fatal(err)
	}
	if scram.Kind != pgauth.SCRAMSHA256 || scram.Iterations != 4096 || len(scram.Salt) != 16 ||
		len(scram.StoredKey) != 32 || len(scram.ServerKey) != 32 {
		t.Fatalf("parsed SCRAM verifier has wrong fields: kind %v, iterations %d, salt %d bytes", scram.Kind, scram.Iterations, len(scram.Salt))
	}
	if scram.Text() != pencilVerifier {
		t.Fatalf("Text() does not round-trip: %q", scram.Text())
	}

	md5, err := pgauth.ParseVerifier(pencilMD5Verifier)
	if err != nil {
		t.Fatal(err)
	}
	if md5.Kind != pgauth.MD5 || md5.MD5 != pencilMD5Verifier || md5.Text() != pencilMD5Verifier {
		t.Fatalf("parsed MD5 verifier: kind %v", md5.Kind)
	}
	if got := pgauth.MD5Verifier("postgres", "pencil"); got != pencilMD5Verifier {
		t.Fatalf("MD5Verifier = %q, want %q", got, pencilMD5Verifier)
	}
}

func TestParseVerifierRejectsWithoutEchoingTheSecret(t *testing.T) {
	const validKey = "WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY="
	tests := []struct {
		name, rolpassword string
	}{
		{"empty", ""},
		{"plaintext password", "hunter2-plaintext"},
		{"other scheme", "SCRAM-SHA-1$4096:c2FsdA==$" + validKey + ":" + validKey},
		{"md5 too short", "md5abc"},
		{"md5 uppercase hex", "MD54C21B325D75177D5E9B9789A50AB0C9C"},
		{"md5 uppercase digits", "md54C21B325D75177D5E9B9789A50AB0C9C"},
		{"md5 non hex", "md5zz21b325d75177d5e9b9789a50ab0c9c"},
		{"scram missing keys", "SCRAM-SHA-256$4096:c2FsdA=="},
		{"scram missing salt separator", "SCRAM-SHA-256$4096$" + validKey + ":" + validKey},
		{"scram missing key separator", "SCRAM-SHA-256$4096:c2FsdA==$" + validKey},
		{"scram zero iterations", "SCRAM-SHA-256$0:c2FsdA==$" + validKey + ":" + validKey},
		{"scram negative iterations", "SCRAM-SHA-256$-1:c2FsdA==$" + validKey + ":" + validKey},
		{"scram huge iterations", "SCRAM-SHA-256$99999999999999999999:c2FsdA==$" + validKey + ":" + validKey},
		{"scram empty salt", "SCRAM-SHA-256$4096:$" + validKey + ":" + validKey},
		{"scram bad salt base64", "SCRAM-SHA-256$4096:!!!$" + validKey + ":" + validKey},
		{"scram short stored key", "SCRAM-SHA-256$4096:c2FsdA==$c2hvcnQ=:" + validKey},
		{"scram bad server key", "SCRAM-SHA-256$4096:c2FsdA==$" + validKey + ":%%%"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v, err := pgauth.ParseVerifier(tt.rolpassword)
			if err == nil {
				t.Fatalf("accepted %q as %v", tt.rolpassword, v)
			}
			if tt.rolpassword != "" && strings.Contains(err.Error(), tt.rolpassword) {
				t.Fatalf("error echoes the stored password: %v", err)
			}
			if strings.Contains(err.Error(), "hunter2") || strings.Contains(err.Error(), validKey) {
				t.Fatalf("error echoes secret material: %v", err)
			}
		})
	}
}

func TestNewSCRAMVerifierMatchesParse(t *testing.T) {
	v, err := pgauth.NewSCRAMVerifier("correct horse", []byte("0123456789abcdef"), 4096)
	if err != nil {
		t.Fatal(err)
	}
	parsed, err := pgauth.ParseVerifier(v.Text())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(parsed.StoredKey, v.StoredKey) || !bytes.Equal(parsed.ServerKey, v.ServerKey) || parsed.Iterations != 4096 {
		t.Fatal("Text/ParseVerifier round trip changed the verifier")
	}
	if _, err := pgauth.NewSCRAMVerifier("pässword", []byte("salt"), 4096); err == nil {
		t.Fatal("non-ASCII password accepted without SASLprep")
	}
	if _, err := pgauth.NewSCRAMVerifier("x", nil, 4096); err == nil {
		t.Fatal("empty salt accepted")
	}
}

func TestVerifierFormattingRedactsSecrets(t *testing.T) {
	scram, err := pgauth.ParseVerifier(pencilVerifier)
	if err != nil {
		t.Fatal(err)
	}
	md5, err := pgauth.ParseVerifier(pencilMD5Verifier)
	if err != nil {
		t.Fatal(err)
	}
	secrets := []string{"W22ZaJ0SNY7soEsUEjb6gQ", "WG5d8oPm", "wfPLwcE6", "4c21b325d75177d5e9b9789a50ab0c9c"}
	for _, v := range []pgauth.Verifier{scram, md5} {
		for _, verb := range []string{"%v", "%+v", "%#v", "%s"} {
			out := fmt.Sprintf(verb, v) + fmt.Sprintf(verb, &v) + fmt.Sprintf(verb, struct{ V pgauth.Verifier }{v})
			assertNoSecret(t, verb, out, secrets, scram.Salt, scram.StoredKey, scram.ServerKey)
		}
		out := logThroughSlog(t, "verifier", v)
		assertNoSecret(t, "slog", out, secrets, scram.Salt, scram.StoredKey, scram.ServerKey)
		if !strings.Contains(out, v.Kind.String()) {
			t.Fatalf("slog output lost the kind: %s", out)
		}
	}
}

func TestParseVerifierErrorsAreNotErrNoVerifier(t *testing.T) {
	// ParseVerifier's errors are plain errors, not ErrNoVerifier: Lookup adds that.
	_, err := pgauth.ParseVerifier("plaintext")
	if errors.Is(err, pgauth.ErrNoVerifier) {
		t.Fatal("ParseVerifier error unexpectedly wraps ErrNoVerifier")
	}
}
