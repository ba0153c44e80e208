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

// SCRAMMechanism is SCRAM-SHA-256 without channel binding, the mechanism the
// proxy always offers clients and uses towards backends without TLS.
const SCRAMMechanism = "SCRAM-SHA-256"

// SCRAMServerOptions are the optional parts of a SCRAMServer.
type SCRAMServerOptions struct {
	// NonceSource supplies the server nonce; nil means crypto/rand.
	NonceSource io.Reader
	// ChannelBinding is the tls-server-end-point data (TLSServerEndPoint) of
	// the certificate the client received, when the exchange runs over TLS:
	// then SCRAM-SHA-256-PLUS is offered too. nil = no TLS.
	ChannelBinding []byte
	// Mock keys the fake exchange run when the verifier is not a usable
	// SCRAM one (NewMockKey); the zero MockKey uses a per-process secret.
	Mock MockKey
}

// SCRAMServer runs one SCRAM-SHA-256(-PLUS) exchange with a client: Mechanisms
// to offer, SelectMechanism with the client's choice, First with the
// client-first-message, then Final with the client-final-message. It is not
// safe for concurrent use; the session goroutine that authenticates the
// client owns it. Any error ends the exchange: later calls fail.
type SCRAMServer struct {
	user           string
	verifier       Verifier // always SCRAM shaped; a mock one when doomed
	doomed         bool     // fake exchange: Final always fails
	nonceSource    io.Reader
	channelBinding []byte // tls-server-end-point data; nil without TLS
	plus           bool   // the client selected SCRAM-SHA-256-PLUS
	state          scramServerState

	// serverNonce is generated in First unless already set (tests set it to
	// replay RFC 7677's exchange byte for byte).
	serverNonce string

	gs2Header       string // "n,,", "y,," or "p=tls-server-end-point,,"
	clientFirstBare string
	serverFirst     string
	combinedNonce   string // client nonce + server nonce
}

type scramServerState int

const (
	serverAwaitingMechanism scramServerState = iota
	serverAwaitingClientFirst
	serverAwaitingClientFinal
	serverFinished
)

// NewSCRAMServer prepares an exchange without TLS for user (the name from the
// startup packet) against verifier v. nonceSource supplies the server nonce;
// nil means crypto/rand. See NewSCRAMServerWith.
func NewSCRAMServer(user string, v Verifier, nonceSource io.Reader) *SCRAMServer {
	return NewSCRAMServerWith(user, v, SCRAMServerOptions{NonceSource: nonceSource})
}

// NewSCRAMServerWith prepares an exchange for user against verifier v. If v
// is not a usable SCRAM-SHA-256 verifier (no role, or an MD5 one, as
// PostgreSQL does too) the exchange is a fake one that fails in Final, with
// the salt and iteration count of opts.Mock's mock verifier.
func NewSCRAMServerWith(user string, v Verifier, opts SCRAMServerOptions) *SCRAMServer {
	nonceSource := opts.NonceSource
	if nonceSource == nil {
		nonceSource = rand.Reader
	}
	s := &SCRAMServer{user: user, verifier: v, nonceSource: nonceSource, channelBinding: opts.ChannelBinding,
		state: serverAwaitingClientFirst}
	if len(opts.ChannelBinding) > 0 {
		s.state = serverAwaitingMechanism
	}
	if v.Kind != SCRAMSHA256 || v.Iterations < 1 || len(v.Salt) == 0 ||
		len(v.StoredKey) != scramKeyLen || len(v.ServerKey) != scramKeyLen {
		s.verifier = opts.Mock.Verifier(user)
		s.doomed = true
	}
	return s
}

// NewSCRAMServerForUnknownUser prepares a fake exchange without TLS for a
// role that does not exist or has no usable verifier, with a per-process mock
// key. Final always returns ErrWrongPassword, the same error a wrong password
// gives.
func NewSCRAMServerForUnknownUser(user string) *SCRAMServer {
	return NewSCRAMServer(user, Verifier{}, nil)
}

// Mechanisms lists the SASL mechanisms to offer in AuthenticationSASL, as
// PostgreSQL does: SCRAM-SHA-256-PLUS first when the exchange runs over TLS.
func (s *SCRAMServer) Mechanisms() []string {
	if len(s.channelBinding) > 0 {
		return []string{SCRAMMechanismPlus, SCRAMMechanism}
	}
	return []string{SCRAMMechanism}
}

// SelectMechanism checks the mechanism the client chose in its
// SASLInitialResponse (a protocol violation when it was not offered). Without
// TLS, calling it is optional.
func (s *SCRAMServer) SelectMechanism(mechanism string) error {
	if s.state != serverAwaitingMechanism && s.state != serverAwaitingClientFirst {
		return fmt.Errorf("%w: mechanism selected out of order", ErrProtocolViolation)
	}
	switch {
	case mechanism == SCRAMMechanism:
		s.plus = false
	case mechanism == SCRAMMechanismPlus && len(s.channelBinding) > 0:
		s.plus = true
	case mechanism == SCRAMMechanismPlus:
		s.state = serverFinished
		return fmt.Errorf("%w: client selected SCRAM-SHA-256-PLUS, but channel binding is offered only over TLS", ErrProtocolViolation)
	default:
		s.state = serverFinished
		return fmt.Errorf("%w: client selected SASL mechanism %q, which was not offered", ErrProtocolViolation, mechanism)
	}
	s.state = serverAwaitingClientFirst
	return nil
}

// CheckSASLMechanism checks a client's mechanism when no channel binding is
// offered (no TLS). It names the problem for -PLUS.
func CheckSASLMechanism(mechanism string) error {
	return NewSCRAMServer("", Verifier{}, nil).SelectMechanism(mechanism)
}

// mockIterations is the iteration count a fake exchange announces:
// PostgreSQL's default scram_iterations, which most real roles have too.
const mockIterations = 4096

// mockSaltLen is PostgreSQL's SCRAM_DEFAULT_SALT_LEN.
const mockSaltLen = 16

// MockKey keys the fake SCRAM exchanges of roles that do not exist (or have
// no usable verifier), like PostgreSQL's mock_auth_nonce: the salt a fake
// exchange announces must be the same every time for a given name, on every
// proxy of the cluster and across restarts, and unpredictable without the
// key, so that a client cannot tell a role that does not exist from one that
// does. The zero MockKey uses a per-process secret (stable only for the
// process's life). Immutable.
type MockKey struct {
	key []byte
}

// NewMockKey derives a MockKey from a cluster secret (nil or empty: the
// per-process secret).
func NewMockKey(secret []byte) MockKey {
	if len(secret) == 0 {
		return MockKey{}
	}
	return MockKey{key: hmacSHA256(secret, "pgquorum SCRAM mock key")}
}

// processSecret keys the mock salts of the zero MockKey. It is created once
// per process and never changes, so it is the only package-level state and
// needs no owner.
var processSecret = sync.OnceValue(func() []byte {
	secret := make([]byte, 32)
	rand.Read(secret) // never fails since Go 1.24 (it crashes the program instead)
	return secret
})

// Verifier returns the mock SCRAM verifier of user. Its keys are derived like
// its salt (not from a password), so nobody can produce a proof for it: an
// exchange against it fails like one with a wrong password. Handing it out in
// place of a missing verifier (as the voters do to learners) reveals nothing.
func (k MockKey) Verifier(user string) Verifier {
	secret := k.key
	if secret == nil {
		secret = processSecret()
	}
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
	if err := s.checkChannelBindingFlag(gs2Header); err != nil {
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
	if !s.channelBindingMatches(final.channelBinding) {
		if s.plus {
			return nil, Credentials{}, fmt.Errorf("%w: SCRAM channel binding check failed", ErrProtocolViolation)
		}
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

// checkChannelBindingFlag checks the gs2 flag of the client-first-message
// against the mechanism the client selected and what was offered, with
// PostgreSQL's rules (auth-scram.c read_client_first_message).
func (s *SCRAMServer) checkChannelBindingFlag(gs2Header string) error {
	flag, _, _ := strings.Cut(gs2Header, ",")
	switch {
	case s.plus && flag != "p="+ChannelBindingType:
		if strings.HasPrefix(flag, "p=") {
			return fmt.Errorf("%w: unsupported SCRAM channel-binding type %q", ErrProtocolViolation, strings.TrimPrefix(flag, "p="))
		}
		return fmt.Errorf("%w: the client selected SCRAM-SHA-256-PLUS, but the SCRAM message does not include channel binding data", ErrProtocolViolation)
	case !s.plus && strings.HasPrefix(flag, "p="):
		return fmt.Errorf("%w: the client selected SCRAM-SHA-256 without channel binding, but the SCRAM message includes channel binding data", ErrProtocolViolation)
	case flag == "y" && len(s.channelBinding) > 0:
		// The client supports channel binding and thinks we do not: someone
		// removed -PLUS from the offer on its way (a downgrade).
		return fmt.Errorf("%w: SCRAM channel binding negotiation error: the client supports SCRAM channel binding but thinks the server does not, and this server does", ErrProtocolViolation)
	}
	return nil
}

// channelBindingMatches checks the c= attribute of the client-final-message:
// base64 of the gs2 header, followed by the channel binding data with -PLUS.
func (s *SCRAMServer) channelBindingMatches(attribute string) bool {
	want := []byte(s.gs2Header)
	if s.plus {
		want = append(want, s.channelBinding...)
	}
	got, ok := decodeBase64(attribute)
	return ok && subtle.ConstantTimeCompare(got, want) == 1
}

// parseClientFirst splits a client-first-message
//
//	gs2-cbind-flag "," [authzid] "," ["m=" ext ","] "n=" user "," "r=" nonce ["," extensions]
//
// (gs2-cbind-flag: "n", "y" or "p=" cb-name) into its gs2 header, the bare
// part and the client nonce. The user name is
// ignored: PostgreSQL takes it from the startup packet.
func parseClientFirst(message []byte) (gs2Header, bare, clientNonce string, err error) {
	if err := checkSCRAMMessage("client-first-message", message); err != nil {
		return "", "", "", err
	}
	text := string(message)
	flag, rest, ok := strings.Cut(text, ",")
	if !ok {
		return "", "", "", fmt.Errorf("%w: client-first-message lacks ',' after the channel-binding flag", ErrProtocolViolation)
	}
	switch {
	case flag == "n", flag == "y", strings.HasPrefix(flag, "p="):
		// Checked against the mechanism in checkChannelBindingFlag.
	default:
		return "", "", "", fmt.Errorf("%w: client-first-message does not start with a gs2 channel-binding flag", ErrProtocolViolation)
	}
	if strings.HasPrefix(rest, "a=") {
		return "", "", "", fmt.Errorf("%w: client uses an authorization identity, which is not supported", ErrProtocolViolation)
	}
	if !strings.HasPrefix(rest, ",") {
		return "", "", "", fmt.Errorf("%w: client-first-message lacks the ',' that ends the gs2 header", ErrProtocolViolation)
	}
	gs2Header, bare = text[:len(flag)+2], rest[1:]

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
