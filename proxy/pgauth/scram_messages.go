package pgauth

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"io"
	"strings"
)

// This file holds what the SCRAM server and client share: the attribute
// syntax of RFC 5802 section 7, the size limits, nonces and the key algebra.

// maxSCRAMMessageLen bounds every SCRAM message this package parses. Real
// messages are under 200 bytes; the bound only keeps hostile input cheap.
const maxSCRAMMessageLen = 8192

// nonceRandomBytes is how many random bytes make a nonce (base64: 24
// characters), the same as PostgreSQL's SCRAM_RAW_NONCE_LEN.
const nonceRandomBytes = 18

// scramAttribute is one "name=value" element of a SCRAM message.
type scramAttribute struct {
	name  byte
	value string
}

// splitSCRAMAttributes splits a comma separated attribute list such as
// "n=,r=abc" into attributes. Values cannot contain ',' (RFC 5802 escapes it
// in user names), so splitting on ',' is exact. Every element must be a
// letter, '=' and a value (which may be empty; callers check).
func splitSCRAMAttributes(list string) ([]scramAttribute, error) {
	parts := strings.Split(list, ",")
	attributes := make([]scramAttribute, 0, len(parts))
	for i, part := range parts {
		if len(part) < 2 || !isASCIILetter(part[0]) || part[1] != '=' {
			return nil, fmt.Errorf("%w: element %d is not of the form letter=value", ErrProtocolViolation, i+1)
		}
		attributes = append(attributes, scramAttribute{name: part[0], value: part[2:]})
	}
	return attributes, nil
}

// checkSCRAMMessage applies the checks every incoming message gets before
// parsing: bounded size and no NUL bytes (PostgreSQL treats them as C strings).
func checkSCRAMMessage(which string, message []byte) error {
	if len(message) == 0 {
		return fmt.Errorf("%w: empty %s", ErrProtocolViolation, which)
	}
	if len(message) > maxSCRAMMessageLen {
		return fmt.Errorf("%w: %s is %d bytes, more than the %d allowed", ErrProtocolViolation, which, len(message), maxSCRAMMessageLen)
	}
	for _, b := range message {
		if b == 0 {
			return fmt.Errorf("%w: %s contains a NUL byte", ErrProtocolViolation, which)
		}
	}
	return nil
}

// expectAttribute checks that a has the given name and a non-empty value.
func expectAttribute(a scramAttribute, name byte, which string) (string, error) {
	if a.name != name {
		return "", fmt.Errorf("%w: %s has attribute %q where %q was expected", ErrProtocolViolation, which, a.name, name)
	}
	if a.value == "" {
		return "", fmt.Errorf("%w: %s has an empty %q attribute", ErrProtocolViolation, which, name)
	}
	return a.value, nil
}

// validNonce reports whether n is a non-empty run of printable ASCII without
// ',' (RFC 5802 "printable").
func validNonce(n string) bool {
	if n == "" {
		return false
	}
	for i := 0; i < len(n); i++ {
		if n[i] < 0x21 || n[i] > 0x7e || n[i] == ',' {
			return false
		}
	}
	return true
}

// decodeBase64 decodes canonical standard base64 (with padding). Unlike
// base64.StdEncoding alone it rejects embedded newlines and non-canonical
// forms, so one value has exactly one spelling.
func decodeBase64(s string) ([]byte, bool) {
	decoded, err := base64.StdEncoding.DecodeString(s)
	if err != nil || base64.StdEncoding.EncodeToString(decoded) != s {
		return nil, false
	}
	return decoded, true
}

// newNonce reads nonceRandomBytes from src and encodes them in base64, which
// is always a valid SCRAM nonce.
func newNonce(src io.Reader) (string, error) {
	raw := make([]byte, nonceRandomBytes)
	if _, err := io.ReadFull(src, raw); err != nil {
		return "", fmt.Errorf("read nonce randomness: %w", err)
	}
	return base64.StdEncoding.EncodeToString(raw), nil
}

func isASCIILetter(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z'
}

// hmacSHA256 returns HMAC-SHA-256(key, message).
func hmacSHA256(key []byte, message string) []byte {
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(message))
	return mac.Sum(nil)
}

// sha256Sum returns SHA-256(data) as a slice.
func sha256Sum(data []byte) []byte {
	sum := sha256.Sum256(data)
	return sum[:]
}

// xorKeys returns a XOR b; both are scramKeyLen long.
func xorKeys(a, b []byte) []byte {
	out := make([]byte, len(a))
	for i := range a {
		out[i] = a[i] ^ b[i]
	}
	return out
}

// authMessage joins the three messages the proof and signatures cover
// (RFC 5802 section 3).
func authMessage(clientFirstBare, serverFirst, clientFinalWithoutProof string) string {
	return clientFirstBare + "," + serverFirst + "," + clientFinalWithoutProof
}
