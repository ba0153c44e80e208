package pgauth

import (
	"crypto/md5"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"io"
)

// MD5Challenge reads the 4-byte salt for an AuthenticationMD5Password request
// from r (nil means crypto/rand).
func MD5Challenge(r io.Reader) ([4]byte, error) {
	if r == nil {
		r = rand.Reader
	}
	var salt [4]byte
	if _, err := io.ReadFull(r, salt[:]); err != nil {
		return [4]byte{}, fmt.Errorf("md5 challenge: read salt: %w", err)
	}
	return salt, nil
}

// VerifyMD5 checks a client's PasswordMessage answer to an MD5 challenge with
// salt: "md5" + hex(md5(hex(md5(password+user)) + salt)). The verifier
// already holds md5(password+user), so no password is needed.
//
// A Verifier that is not MD5 (the zero one for an unknown role, or a SCRAM
// one, which cannot answer an MD5 challenge) still goes through the same
// comparison against a value no client can produce and returns
// ErrWrongPassword, so the answer looks the same as for a wrong password.
func VerifyMD5(v Verifier, user string, salt [4]byte, clientResponse string) (Credentials, error) {
	verifier := v.MD5
	usable := v.Kind == MD5 && isMD5Verifier(verifier)
	if !usable {
		// Not a valid md5 hex string, so no response can ever match it.
		verifier = "md5-no-usable-verifier-for-this-role"
	}
	expected := md5Response(verifier, salt)
	matches := subtle.ConstantTimeCompare([]byte(expected), []byte(clientResponse)) == 1
	if !matches || !usable {
		return Credentials{}, fmt.Errorf("%w for user %q", ErrWrongPassword, user)
	}
	return Credentials{User: user, Method: MethodMD5, MD5: verifier}, nil
}

// MD5Verifier returns PostgreSQL's md5 verifier for a password:
// "md5" + hex(md5(password + user)). The proxy itself never sees passwords;
// this is for tools and tests that must create one.
func MD5Verifier(user, password string) string {
	sum := md5.Sum([]byte(password + user))
	return "md5" + hex.EncodeToString(sum[:])
}

// md5Response computes the answer to an MD5 challenge from a verifier:
// "md5" + hex(md5(verifier-without-"md5" + salt)).
func md5Response(verifier string, salt [4]byte) string {
	hash := md5.New()
	hash.Write([]byte(verifier[len("md5"):]))
	hash.Write(salt[:])
	return "md5" + hex.EncodeToString(hash.Sum(nil))
}
