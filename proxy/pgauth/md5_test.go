package pgauth_test

import (
	"bytes"
	"errors"
	"testing"

	"github.com/pgquorum/pgquorum/proxy/pgauth"
)

func TestVerifyMD5KnownAnswer(t *testing.T) {
	// md5(hex(md5("pencil"+"postgres")) + 01020304), computed with md5sum.
	const response = "md5dba33b405438ce4ca5423846a9bffead"
	salt := [4]byte{1, 2, 3, 4}
	v, err := pgauth.ParseVerifier(pencilMD5Verifier)
	if err != nil {
		t.Fatal(err)
	}
	creds, err := pgauth.VerifyMD5(v, "postgres", salt, response)
	if err != nil {
		t.Fatal(err)
	}
	if creds.User != "postgres" || creds.Method != pgauth.MethodMD5 || creds.MD5 != pencilMD5Verifier {
		t.Fatalf("credentials = %v", creds)
	}
	if got := md5ClientResponse("postgres", "pencil", salt); got != response {
		t.Fatalf("test client computes %q, want %q", got, response)
	}
}

func TestVerifyMD5Rejects(t *testing.T) {
	salt := [4]byte{9, 8, 7, 6}
	md5Verifier, _ := pgauth.ParseVerifier(pencilMD5Verifier)
	scramVerifier, _ := pgauth.ParseVerifier(pencilVerifier)
	good := md5ClientResponse("postgres", "pencil", salt)
	tests := []struct {
		name     string
		verifier pgauth.Verifier
		response string
	}{
		{"wrong password", md5Verifier, md5ClientResponse("postgres", "pencil!", salt)},
		{"other salt", md5Verifier, md5ClientResponse("postgres", "pencil", [4]byte{1, 2, 3, 4})},
		{"uppercase hex", md5Verifier, "md5" + string(bytes.ToUpper([]byte(good[3:])))},
		{"empty response", md5Verifier, ""},
		{"verifier itself", md5Verifier, pencilMD5Verifier},
		{"unknown role", pgauth.Verifier{}, good},
		{"unknown role with empty response", pgauth.Verifier{}, ""},
		{"scram verifier cannot answer md5", scramVerifier, good},
		{"corrupt md5 verifier", pgauth.Verifier{Kind: pgauth.MD5, MD5: "md5"}, good},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			creds, err := pgauth.VerifyMD5(tt.verifier, "postgres", salt, tt.response)
			if !errors.Is(err, pgauth.ErrWrongPassword) {
				t.Fatalf("err = %v, want ErrWrongPassword", err)
			}
			if creds.Method != "" || creds.MD5 != "" {
				t.Fatalf("failed check returned credentials %v", creds)
			}
		})
	}
	// An unknown role fails with exactly the message a wrong password gives.
	_, unknownErr := pgauth.VerifyMD5(pgauth.Verifier{}, "postgres", salt, good)
	_, wrongErr := pgauth.VerifyMD5(md5Verifier, "postgres", salt, "md5"+string(bytes.Repeat([]byte("0"), 32)))
	if unknownErr.Error() != wrongErr.Error() {
		t.Fatalf("unknown role error %q differs from wrong password error %q", unknownErr, wrongErr)
	}
}

func TestMD5ChallengeReadsFourBytes(t *testing.T) {
	salt, err := pgauth.MD5Challenge(bytes.NewReader([]byte{5, 6, 7, 8, 9}))
	if err != nil || salt != [4]byte{5, 6, 7, 8} {
		t.Fatalf("salt %v, err %v", salt, err)
	}
	if _, err := pgauth.MD5Challenge(bytes.NewReader([]byte{1, 2})); err == nil {
		t.Fatal("short randomness accepted")
	}
	a, errA := pgauth.MD5Challenge(nil)
	b, errB := pgauth.MD5Challenge(nil)
	if errA != nil || errB != nil || a == b {
		t.Fatalf("crypto/rand salts %v %v (errors %v %v)", a, b, errA, errB)
	}
}
