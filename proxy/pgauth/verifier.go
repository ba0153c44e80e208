package pgauth

import (
	"crypto/pbkdf2"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
)

// VerifierKind says which password scheme a Verifier belongs to.
type VerifierKind int

const (
	// NoVerifier is the zero kind: the role has no usable verifier. Checking
	// a password against it always fails.
	NoVerifier VerifierKind = iota
	// SCRAMSHA256 is PostgreSQL's "SCRAM-SHA-256$<iter>:<salt>$<StoredKey>:<ServerKey>".
	SCRAMSHA256
	// MD5 is PostgreSQL's "md5" + hex(md5(password + user)).
	MD5
)

// String names the kind the way pg_hba.conf does.
func (k VerifierKind) String() string {
	switch k {
	case SCRAMSHA256:
		return "scram-sha-256"
	case MD5:
		return "md5"
	default:
		return "none"
	}
}

// scramKeyLen is the length of SHA-256 output, and so of StoredKey, ServerKey,
// ClientKey, proofs and signatures.
const scramKeyLen = 32

// md5VerifierLen is len("md5") + 32 hex digits.
const md5VerifierLen = 35

// Verifier is a role's stored password verifier as read from
// pg_authid.rolpassword. It is password-equivalent for MD5 and lets anyone
// impersonate the server for SCRAM, so String, GoString and LogValue redact
// every secret field. A Verifier is immutable once parsed; share it freely.
type Verifier struct {
	Kind VerifierKind

	// SCRAM-SHA-256 fields (Kind == SCRAMSHA256).
	Iterations int
	Salt       []byte
	StoredKey  []byte // SHA-256(ClientKey)
	ServerKey  []byte // HMAC(SaltedPassword, "Server Key")

	// MD5 is the whole md5 verifier, "md5" + 32 lowercase hex digits (Kind == MD5).
	MD5 string
}

// ParseVerifier parses the text PostgreSQL stores in pg_authid.rolpassword.
// It accepts SCRAM-SHA-256 and MD5 verifiers; anything else (a plaintext
// password from an ancient cluster, an unknown scheme, a corrupt value) is an
// error that describes the problem without echoing the stored text.
func ParseVerifier(rolpassword string) (Verifier, error) {
	switch {
	case strings.HasPrefix(rolpassword, "SCRAM-SHA-256$"):
		return parseSCRAMVerifier(rolpassword)
	case strings.HasPrefix(rolpassword, "md5"):
		if !isMD5Verifier(rolpassword) {
			return Verifier{}, fmt.Errorf("parse verifier: md5 verifier must be \"md5\" followed by 32 lowercase hex digits (got %d characters)", len(rolpassword))
		}
		return Verifier{Kind: MD5, MD5: rolpassword}, nil
	default:
		return Verifier{}, fmt.Errorf("parse verifier: stored password is neither a SCRAM-SHA-256 nor an MD5 verifier (plaintext or unknown format, %d characters)", len(rolpassword))
	}
}

// parseSCRAMVerifier parses "SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>".
func parseSCRAMVerifier(text string) (Verifier, error) {
	rest := strings.TrimPrefix(text, "SCRAM-SHA-256$")
	iterAndSalt, keys, ok := strings.Cut(rest, "$")
	if !ok {
		return Verifier{}, fmt.Errorf("parse verifier: SCRAM verifier lacks the '$' before its keys")
	}
	iterText, saltText, ok := strings.Cut(iterAndSalt, ":")
	if !ok {
		return Verifier{}, fmt.Errorf("parse verifier: SCRAM verifier lacks the ':' between iterations and salt")
	}
	storedText, serverText, ok := strings.Cut(keys, ":")
	if !ok {
		return Verifier{}, fmt.Errorf("parse verifier: SCRAM verifier lacks the ':' between StoredKey and ServerKey")
	}
	iterations, err := strconv.Atoi(iterText)
	if err != nil || iterations < 1 {
		return Verifier{}, fmt.Errorf("parse verifier: SCRAM iteration count is not a positive integer")
	}
	salt, err := base64.StdEncoding.DecodeString(saltText)
	if err != nil || len(salt) == 0 {
		return Verifier{}, fmt.Errorf("parse verifier: SCRAM salt is not valid non-empty base64")
	}
	storedKey, err := base64.StdEncoding.DecodeString(storedText)
	if err != nil || len(storedKey) != scramKeyLen {
		return Verifier{}, fmt.Errorf("parse verifier: SCRAM StoredKey is not %d bytes of base64", scramKeyLen)
	}
	serverKey, err := base64.StdEncoding.DecodeString(serverText)
	if err != nil || len(serverKey) != scramKeyLen {
		return Verifier{}, fmt.Errorf("parse verifier: SCRAM ServerKey is not %d bytes of base64", scramKeyLen)
	}
	return Verifier{
		Kind:       SCRAMSHA256,
		Iterations: iterations,
		Salt:       salt,
		StoredKey:  storedKey,
		ServerKey:  serverKey,
	}, nil
}

// NewSCRAMVerifier derives the SCRAM-SHA-256 verifier PostgreSQL would store
// for password with the given salt and iteration count (RFC 5802 section 3).
// The proxy itself never sees passwords; this is for tools and tests that must
// create a verifier. PostgreSQL normalizes passwords with SASLprep, which is
// the identity for ASCII; other passwords are refused rather than normalized
// wrongly.
func NewSCRAMVerifier(password string, salt []byte, iterations int) (Verifier, error) {
	for i := 0; i < len(password); i++ {
		if password[i] >= 0x80 {
			return Verifier{}, fmt.Errorf("scram verifier: non-ASCII passwords need SASLprep, which is not implemented")
		}
	}
	if len(salt) == 0 || iterations < 1 {
		return Verifier{}, fmt.Errorf("scram verifier: need a non-empty salt and a positive iteration count")
	}
	saltedPassword, err := pbkdf2.Key(sha256.New, password, salt, iterations, scramKeyLen)
	if err != nil {
		return Verifier{}, fmt.Errorf("scram verifier: %w", err)
	}
	clientKey := hmacSHA256(saltedPassword, "Client Key")
	return Verifier{
		Kind:       SCRAMSHA256,
		Iterations: iterations,
		Salt:       append([]byte(nil), salt...),
		StoredKey:  sha256Sum(clientKey),
		ServerKey:  hmacSHA256(saltedPassword, "Server Key"),
	}, nil
}

// Text returns the verifier in the form PostgreSQL stores in
// pg_authid.rolpassword, the inverse of ParseVerifier. It is a secret: do not
// log it. It returns "" for NoVerifier.
func (v Verifier) Text() string {
	switch v.Kind {
	case SCRAMSHA256:
		return fmt.Sprintf("SCRAM-SHA-256$%d:%s$%s:%s", v.Iterations,
			base64.StdEncoding.EncodeToString(v.Salt),
			base64.StdEncoding.EncodeToString(v.StoredKey),
			base64.StdEncoding.EncodeToString(v.ServerKey))
	case MD5:
		return v.MD5
	default:
		return ""
	}
}

// isMD5Verifier reports whether s is "md5" followed by 32 lowercase hex digits,
// the only form PostgreSQL writes and accepts.
func isMD5Verifier(s string) bool {
	if len(s) != md5VerifierLen || !strings.HasPrefix(s, "md5") {
		return false
	}
	for _, c := range s[3:] {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// String describes the verifier without any secret.
func (v Verifier) String() string {
	if v.Kind == SCRAMSHA256 {
		return fmt.Sprintf("Verifier{Kind: %s, Iterations: %d, Salt: [redacted], StoredKey: [redacted], ServerKey: [redacted]}", v.Kind, v.Iterations)
	}
	if v.Kind == MD5 {
		return "Verifier{Kind: md5, MD5: [redacted]}"
	}
	return "Verifier{Kind: none}"
}

// GoString makes %#v as safe as %v.
func (v Verifier) GoString() string { return v.String() }

// LogValue makes slog print the kind and iteration count only.
func (v Verifier) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("kind", v.Kind.String()),
		slog.Int("iterations", v.Iterations),
		slog.String("secrets", redacted),
	)
}

// redacted replaces every secret in String and LogValue output.
const redacted = "[redacted]"
