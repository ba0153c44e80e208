package pgauth_test

import (
	"crypto/hmac"
	"crypto/md5"
	"crypto/pbkdf2"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
)

// passwordSCRAMClient is a deliberately independent SCRAM-SHA-256 client that
// knows the password, written straight from RFC 5802 so the tests do not
// check the package against itself. It plays the part of psql.
type passwordSCRAMClient struct {
	password    string
	clientNonce string
	gs2Header   string // "n,," unless set
	binding     []byte // channel binding data after the gs2 header in c= (SCRAM-SHA-256-PLUS)

	clientFirstBare         string
	expectedServerSignature []byte
}

func (c *passwordSCRAMClient) clientFirst() []byte {
	if c.gs2Header == "" {
		c.gs2Header = "n,,"
	}
	c.clientFirstBare = "n=,r=" + c.clientNonce
	return []byte(c.gs2Header + c.clientFirstBare)
}

func (c *passwordSCRAMClient) clientFinal(serverFirst []byte) ([]byte, error) {
	fields := strings.Split(string(serverFirst), ",")
	if len(fields) < 3 || !strings.HasPrefix(fields[0], "r="+c.clientNonce) ||
		!strings.HasPrefix(fields[1], "s=") || !strings.HasPrefix(fields[2], "i=") {
		return nil, fmt.Errorf("unexpected server-first-message %q", serverFirst)
	}
	salt, err := base64.StdEncoding.DecodeString(fields[1][2:])
	if err != nil {
		return nil, err
	}
	iterations, err := strconv.Atoi(fields[2][2:])
	if err != nil {
		return nil, err
	}
	saltedPassword, err := pbkdf2.Key(sha256.New, c.password, salt, iterations, 32)
	if err != nil {
		return nil, err
	}
	clientKey := testHMAC(saltedPassword, "Client Key")
	storedKey := sha256.Sum256(clientKey)
	serverKey := testHMAC(saltedPassword, "Server Key")

	withoutProof := "c=" + base64.StdEncoding.EncodeToString(append([]byte(c.gs2Header), c.binding...)) + "," + fields[0]
	authMessage := c.clientFirstBare + "," + string(serverFirst) + "," + withoutProof
	clientSignature := testHMAC(storedKey[:], authMessage)
	proof := make([]byte, 32)
	for i := range proof {
		proof[i] = clientKey[i] ^ clientSignature[i]
	}
	c.expectedServerSignature = testHMAC(serverKey, authMessage)
	return []byte(withoutProof + ",p=" + base64.StdEncoding.EncodeToString(proof)), nil
}

func (c *passwordSCRAMClient) checkServerFinal(serverFinal []byte) error {
	want := "v=" + base64.StdEncoding.EncodeToString(c.expectedServerSignature)
	if string(serverFinal) != want {
		return fmt.Errorf("server signature %q, want %q", serverFinal, want)
	}
	return nil
}

func testHMAC(key []byte, message string) []byte {
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(message))
	return mac.Sum(nil)
}

// md5ClientResponse is what libpq answers to an MD5 challenge, computed from
// the password.
func md5ClientResponse(user, password string, salt [4]byte) string {
	inner := md5.Sum([]byte(password + user))
	outer := md5.Sum(append([]byte(hex.EncodeToString(inner[:])), salt[:]...))
	return "md5" + hex.EncodeToString(outer[:])
}
