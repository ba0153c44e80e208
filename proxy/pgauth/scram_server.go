package pgauth

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
)

// SCRAMMechanism is the only SASL mechanism the proxy offers clients and uses
// towards backends. SCRAM-SHA-256-PLUS (channel binding) is not supported.
const SCRAMMechanism = "SCRAM-SHA-256"

// CheckSASLMechanism checks the mechanism a client chose in its
// SASLInitialResponse. It names the problem for -PLUS (channel binding),
// which a client may ask for although we never advertise it.
func CheckSASLMechanism(mechanism string) error {
	switch mechanism {
	case SCRAMMechanism:
		return nil
	case SCRAMMechanism + "-PLUS":
		return fmt.Errorf("%w: channel binding (SCRAM-SHA-256-PLUS) is not supported by the proxy; only SCRAM-SHA-256 is offered", ErrProtocolViolation)
	default:
		return fmt.Errorf("%w: client selected SASL mechanism %q; only SCRAM-SHA-256 is offered", ErrProtocolViolation, mechanism)
	}
}

// SCRAMServer runs one SCRAM-SHA-256 exchange with a client, without channel
// binding: First with the client-first-message, then Final with the
// client-final-message. It is not safe for concurrent use; the session
// goroutine that authenticates the client owns it. Any error ends the
// exchange: later calls fail.
type SCRAMServer struct {
	user        string
	verifier    Verifier // always SCRAM shaped; a mock one when doomed
	doomed      bool     // fake exchange: Final always fails
	nonceSource io.Reader
	state       scramServerState

	// serverNonce is generated in First unless already set (tests set it to
	// replay RFC 7677's exchange byte for byte).
	serverNonce string

	gs2Header       string // "n,," or "y,,"
	clientFirstBare string
	serverFirst     string
	combinedNonce   string // client nonce + server nonce
}

type scramServerState int

const (
	serverAwaitingClientFirst scramServerState = iota
	serverAwaitingClientFinal
	serverFinished
)

// NewSCRAMServer prepares an exchange for user (the name from the startup
// packet) against verifier v. nonceSource supplies the server nonce; nil
// means crypto/rand. If v is not a usable SCRAM-SHA-256 verifier (for
// example an MD5 one, as PostgreSQL does too) the exchange is a fake one that
// fails in Final, exactly like NewSCRAMServerForUnknownUser.
func NewSCRAMServer(user string, v Verifier, nonceSource io.Reader) *SCRAMServer {
	if nonceSource == nil {
		nonceSource = rand.Reader
	}
	s := &SCRAMServer{user: user, verifier: v, nonceSource: nonceSource}
	if v.Kind != SCRAMSHA256 || v.Iterations < 1 || len(v.Salt) == 0 ||
		len(v.StoredKey) != scramKeyLen || len(v.ServerKey) != scramKeyLen {
		s.verifier = mockVerifier(user)
		s.doomed = true
	}
	return s
}

// NewSCRAMServerForUnknownUser prepares a fake exchange for a role that does
// not exist or has no usable verifier. The salt and iteration count it
// announces are derived from the user name and a per-process secret, so they
// are stable for a given name (as a real role's would be) and unpredictable
// without the secret. Final always returns ErrWrongPassword, the same error a
// wrong password gives. Nonces come from crypto/rand.
func NewSCRAMServerForUnknownUser(user string) *SCRAMServer {
	return NewSCRAMServer(user, Verifier{}, nil)
}

// mockIterations is the iteration count a fake exchange announces:
// PostgreSQL's default scram_iterations, which most real roles have too.
const mockIterations = 4096

// mockSaltLen is PostgreSQL's SCRAM_DEFAULT_SALT_LEN.
const mockSaltLen = 16

// processSecret keys the mock salts. It is created once per process and never
// changes, so it is the only package-level state and needs no owner.
var processSecret = sync.OnceValue(func() []byte {
	secret := make([]byte, 32)
	rand.Read(secret) // never fails since Go 1.24 (it crashes the program instead)
	return secret
})

// mockVerifier builds a SCRAM verifier for a fake exchange. Its keys are
// derived like its salt, so nobody can produce a proof for it.
func mockVerifier(user string) Verifier {
	secret := processSecret()
	return Verifier{
		Kind:       SCRAMSHA256,
		Iterations: mockIterations,
		Salt:       hmacSHA256(secret, "mock salt\x00"+user)[:mockSaltLen],
		StoredKey:  hmacSHA256(secret, "mock stored key\x00"+user),
		ServerKey:  hmacSHA256(secret, "mock server key\x00"+user),
	}
}

// First consumes the client-first-message and returns the
// server-first-message to send in AuthenticationSASLContinue.
func (s *SCRAMServer) First(clientFirst []byte) ([]byte, error) {
	if s.state != serverAwaitingClientFirst {
		return nil, fmt.Errorf("%w: client-first-message received out of order", ErrProtocolViolation)
	}
	s.state = serverFinished // stays so unless everything below succeeds
	gs2Header, bare, clientNonce, err := parseClientFirst(clientFirst)
	if err != nil {
		return nil, err
	}
	if s.serverNonce == "" {
		s.serverNonce, err = newNonce(s.nonceSource)
		if err != nil {
			return nil, fmt.Errorf("scram server: %w", err)
		}
	}
	s.gs2Header = gs2Header
	s.clientFirstBare = bare
	s.combinedNonce = clientNonce + s.serverNonce
	s.serverFirst = "r=" + s.combinedNonce +
		",s=" + base64.StdEncoding.EncodeToString(s.verifier.Salt) +
		",i=" + strconv.Itoa(s.verifier.Iterations)
	s.state = serverAwaitingClientFinal
	return []byte(s.serverFirst), nil
}

// Final consumes the client-final-message. On success it returns the
// server-final-message (to send in AuthenticationSASLFinal) and the
// Credentials for later backend connections. A proof that does not match, and
// every fake exchange, returns an error wrapping ErrWrongPassword; other
// protocol problems wrap ErrProtocolViolation.
func (s *SCRAMServer) Final(clientFinal []byte) ([]byte, Credentials, error) {
	if s.state != serverAwaitingClientFinal {
		return nil, Credentials{}, fmt.Errorf("%w: client-final-message received out of order", ErrProtocolViolation)
	}
	s.state = serverFinished
	final, err := parseClientFinal(clientFinal)
	if err != nil {
		return nil, Credentials{}, err
	}
	if final.channelBinding != base64.StdEncoding.EncodeToString([]byte(s.gs2Header)) {
		return nil, Credentials{}, fmt.Errorf("%w: channel-binding attribute in client-final-message does not repeat the gs2 header of client-first-message", ErrProtocolViolation)
	}
	if final.nonce != s.combinedNonce {
		return nil, Credentials{}, fmt.Errorf("%w: nonce in client-final-message does not match the exchange", ErrProtocolViolation)
	}

	message := authMessage(s.clientFirstBare, s.serverFirst, final.withoutProof)
	clientSignature := hmacSHA256(s.verifier.StoredKey, message)
	clientKey := xorKeys(final.proof, clientSignature)
	proofMatches := subtle.ConstantTimeCompare(sha256Sum(clientKey), s.verifier.StoredKey) == 1
	if !proofMatches || s.doomed {
		return nil, Credentials{}, fmt.Errorf("%w for user %q", ErrWrongPassword, s.user)
	}

	serverSignature := hmacSHA256(s.verifier.ServerKey, message)
	creds := Credentials{
		User:      s.user,
		Method:    MethodSCRAMSHA256,
		ClientKey: clientKey,
		ServerKey: append([]byte(nil), s.verifier.ServerKey...),
	}
	return []byte("v=" + base64.StdEncoding.EncodeToString(serverSignature)), creds, nil
}

// parseClientFirst splits a client-first-message
//
//	gs2-cbind-flag "," [authzid] "," ["m=" ext ","] "n=" user "," "r=" nonce ["," extensions]
//
// into its gs2 header, the bare part and the client nonce. The user name is
// ignored: PostgreSQL takes it from the startup packet.
func parseClientFirst(message []byte) (gs2Header, bare, clientNonce string, err error) {
	if err := checkSCRAMMessage("client-first-message", message); err != nil {
		return "", "", "", err
	}
	text := string(message)
	switch text[0] {
	case 'n', 'y':
		// 'n': client does not support channel binding. 'y': it does but
		// thinks we do not, which is true, so there is no downgrade.
	case 'p':
		return "", "", "", fmt.Errorf("%w: client requires channel binding, which the proxy does not support", ErrProtocolViolation)
	default:
		return "", "", "", fmt.Errorf("%w: client-first-message does not start with a gs2 channel-binding flag", ErrProtocolViolation)
	}
	if len(text) < 2 || text[1] != ',' {
		return "", "", "", fmt.Errorf("%w: client-first-message lacks ',' after the channel-binding flag", ErrProtocolViolation)
	}
	if strings.HasPrefix(text[2:], "a=") {
		return "", "", "", fmt.Errorf("%w: client uses an authorization identity, which is not supported", ErrProtocolViolation)
	}
	if len(text) < 3 || text[2] != ',' {
		return "", "", "", fmt.Errorf("%w: client-first-message lacks the ',' that ends the gs2 header", ErrProtocolViolation)
	}
	gs2Header, bare = text[:3], text[3:]

	attributes, err := splitSCRAMAttributes(bare)
	if err != nil {
		return "", "", "", fmt.Errorf("client-first-message: %w", err)
	}
	if attributes[0].name == 'm' {
		return "", "", "", fmt.Errorf("%w: client requires a SCRAM extension, which is not supported", ErrProtocolViolation)
	}
	if attributes[0].name != 'n' {
		return "", "", "", fmt.Errorf("%w: client-first-message lacks the user name attribute", ErrProtocolViolation)
	}
	if len(attributes) < 2 {
		return "", "", "", fmt.Errorf("%w: client-first-message lacks a nonce", ErrProtocolViolation)
	}
	clientNonce, err = expectAttribute(attributes[1], 'r', "client-first-message")
	if err != nil {
		return "", "", "", err
	}
	if !validNonce(clientNonce) {
		return "", "", "", fmt.Errorf("%w: client nonce contains characters other than printable ASCII", ErrProtocolViolation)
	}
	// Any further attributes are optional extensions, which we ignore.
	return gs2Header, bare, clientNonce, nil
}

// clientFinal is a parsed client-final-message.
type clientFinal struct {
	channelBinding string // base64 of the gs2 header, without channel binding data
	nonce          string
	proof          []byte
	withoutProof   string // the message up to, not including, ",p="
}

// parseClientFinal parses
//
//	"c=" base64 "," "r=" nonce ["," extensions] "," "p=" base64-proof
func parseClientFinal(message []byte) (clientFinal, error) {
	if err := checkSCRAMMessage("client-final-message", message); err != nil {
		return clientFinal{}, err
	}
	text := string(message)
	attributes, err := splitSCRAMAttributes(text)
	if err != nil {
		return clientFinal{}, fmt.Errorf("client-final-message: %w", err)
	}
	if len(attributes) < 3 {
		return clientFinal{}, fmt.Errorf("%w: client-final-message needs channel binding, nonce and proof attributes", ErrProtocolViolation)
	}
	var final clientFinal
	if final.channelBinding, err = expectAttribute(attributes[0], 'c', "client-final-message"); err != nil {
		return clientFinal{}, err
	}
	if final.nonce, err = expectAttribute(attributes[1], 'r', "client-final-message"); err != nil {
		return clientFinal{}, err
	}
	last := len(attributes) - 1
	for _, extension := range attributes[2:last] {
		if extension.name == 'p' {
			return clientFinal{}, fmt.Errorf("%w: client-final-message has attributes after the proof", ErrProtocolViolation)
		}
	}
	proofText, err := expectAttribute(attributes[last], 'p', "client-final-message")
	if err != nil {
		return clientFinal{}, err
	}
	proof, ok := decodeBase64(proofText)
	if !ok || len(proof) != scramKeyLen {
		return clientFinal{}, fmt.Errorf("%w: proof in client-final-message is not %d bytes of base64", ErrProtocolViolation, scramKeyLen)
	}
	final.proof = proof
	final.withoutProof = text[:len(text)-len(",p=")-len(proofText)]
	return final, nil
}
