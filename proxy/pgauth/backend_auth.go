package pgauth

import (
	"crypto/hmac"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
)

// BackendAuth authenticates the proxy to one PostgreSQL backend connection as
// Credentials.User, answering whatever the backend asks for from the
// Credentials alone: a SCRAM-SHA-256 exchange built from ClientKey (checking
// the backend's signature with ServerKey), or an MD5 challenge answered from
// the md5 verifier. It never knows a password, so a cleartext password
// request is refused.
//
// Feed it every message the backend sends after the startup message until
// AuthenticationOk (then Done reports true) or an error. It is not safe for
// concurrent use; the goroutine that opens the backend connection owns it.
type BackendAuth struct {
	creds       Credentials
	nonceSource io.Reader
	state       backendAuthState

	// saslUser is the user name sent in client-first-message. libpq sends an
	// empty one because PostgreSQL uses the startup packet's; tests set it
	// to replay RFC 7677's exchange.
	saslUser string
	// clientNonce is generated when the exchange starts unless already set
	// (by tests).
	clientNonce string

	// channelBinding is the tls-server-end-point data of the backend's
	// certificate when the connection uses TLS (SetChannelBinding).
	channelBinding []byte
	gs2Header      string // "n,,", "y,," or "p=tls-server-end-point,,"

	clientFirstBare         string
	expectedServerSignature []byte
}

type backendAuthState int

const (
	backendAwaitingRequest backendAuthState = iota // nothing asked yet
	backendSentClientFirst                         // awaiting AuthenticationSASLContinue
	backendSentClientFinal                         // awaiting AuthenticationSASLFinal
	backendVerifiedServer                          // SCRAM done, awaiting AuthenticationOk
	backendSentPassword                            // MD5 answered, awaiting AuthenticationOk
	backendDone                                    // AuthenticationOk received
	backendFailed                                  // an error ended the exchange
)

// NewBackendAuth prepares authentication to one backend connection with c.
// nonceSource supplies the SCRAM client nonce; nil means crypto/rand.
func NewBackendAuth(c Credentials, nonceSource io.Reader) *BackendAuth {
	if nonceSource == nil {
		nonceSource = rand.Reader
	}
	return &BackendAuth{creds: c, nonceSource: nonceSource}
}

// SetChannelBinding says the connection uses TLS and gives the
// tls-server-end-point data of the backend's certificate (TLSServerEndPoint).
// When the backend offers SCRAM-SHA-256-PLUS the exchange is then bound to
// this TLS connection, so that a man in the middle (with sslmode=require,
// which does not verify the certificate) cannot relay it.
func (b *BackendAuth) SetChannelBinding(data []byte) { b.channelBinding = data }

// Done reports whether the backend has sent AuthenticationOk.
func (b *BackendAuth) Done() bool { return b.state == backendDone }

// Handle is fed each message the backend sends during authentication and
// returns the frontend message to send back, or nil when there is none
// (after AuthenticationSASLFinal and AuthenticationOk). It verifies the
// server signature in AuthenticationSASLFinal and refuses an
// AuthenticationOk that skips it. An ErrorResponse from the backend is
// returned as an error wrapping *pgconn.PgError. Any error ends the exchange.
func (b *BackendAuth) Handle(msg pgproto3.BackendMessage) (pgproto3.FrontendMessage, error) {
	if b.state == backendFailed || b.state == backendDone {
		return nil, fmt.Errorf("backend auth: message %T after authentication ended", msg)
	}
	reply, err := b.handle(msg)
	if err != nil {
		b.state = backendFailed
		return nil, fmt.Errorf("backend auth as user %q: %w", b.creds.User, err)
	}
	return reply, nil
}

func (b *BackendAuth) handle(msg pgproto3.BackendMessage) (pgproto3.FrontendMessage, error) {
	switch m := msg.(type) {
	case *pgproto3.AuthenticationSASL:
		return b.startSCRAM(m.AuthMechanisms)
	case *pgproto3.AuthenticationSASLContinue:
		return b.answerServerFirst(m.Data)
	case *pgproto3.AuthenticationSASLFinal:
		return nil, b.checkServerFinal(m.Data)
	case *pgproto3.AuthenticationMD5Password:
		return b.answerMD5(m.Salt)
	case *pgproto3.AuthenticationCleartextPassword:
		return nil, fmt.Errorf("backend asks for a cleartext password, which the proxy never knows; use scram-sha-256 or md5 for this role in pg_hba.conf")
	case *pgproto3.AuthenticationOk:
		switch b.state {
		case backendSentClientFirst, backendSentClientFinal:
			return nil, fmt.Errorf("backend sent AuthenticationOk before completing the SCRAM exchange, so it did not prove it knows the verifier")
		}
		b.state = backendDone
		return nil, nil
	case *pgproto3.ErrorResponse:
		return nil, fmt.Errorf("backend refused authentication: %w", pgconn.ErrorResponseToPgError(m))
	case nil:
		return nil, fmt.Errorf("nil message")
	default:
		return nil, fmt.Errorf("unsupported or unexpected message %T during authentication", msg)
	}
}

// startSCRAM answers AuthenticationSASL with a SASLInitialResponse that holds
// the client-first-message.
func (b *BackendAuth) startSCRAM(mechanisms []string) (pgproto3.FrontendMessage, error) {
	if b.state != backendAwaitingRequest {
		return nil, fmt.Errorf("%w: AuthenticationSASL received in the middle of authentication", ErrProtocolViolation)
	}
	if !slices.Contains(mechanisms, SCRAMMechanism) {
		return nil, fmt.Errorf("backend offers SASL mechanisms %q but not %s", mechanisms, SCRAMMechanism)
	}
	if b.creds.Method != MethodSCRAMSHA256 || len(b.creds.ClientKey) != scramKeyLen || len(b.creds.ServerKey) != scramKeyLen {
		return nil, fmt.Errorf("backend asks for SCRAM-SHA-256 but the session's credentials are %q (the client authenticated with another method, or the role's password changed kind)", b.creds.Method)
	}
	if b.clientNonce == "" {
		nonce, err := newNonce(b.nonceSource)
		if err != nil {
			return nil, err
		}
		b.clientNonce = nonce
	}
	mechanism := SCRAMMechanism
	switch {
	case len(b.channelBinding) > 0 && slices.Contains(mechanisms, SCRAMMechanismPlus):
		mechanism, b.gs2Header = SCRAMMechanismPlus, "p="+ChannelBindingType+",,"
	case len(b.channelBinding) > 0:
		b.gs2Header = "y,," // we could bind, the server did not offer it
	default:
		b.gs2Header = "n,,"
	}
	b.clientFirstBare = "n=" + b.saslUser + ",r=" + b.clientNonce
	b.state = backendSentClientFirst
	return &pgproto3.SASLInitialResponse{
		AuthMechanism: mechanism,
		Data:          []byte(b.gs2Header + b.clientFirstBare),
	}, nil
}

// answerServerFirst parses the server-first-message and returns the
// client-final-message with our proof.
func (b *BackendAuth) answerServerFirst(data []byte) (pgproto3.FrontendMessage, error) {
	if b.state != backendSentClientFirst {
		return nil, fmt.Errorf("%w: AuthenticationSASLContinue received out of order", ErrProtocolViolation)
	}
	serverFirst, combinedNonce, err := parseServerFirst(data, b.clientNonce)
	if err != nil {
		return nil, err
	}
	binding := []byte(b.gs2Header)
	if strings.HasPrefix(b.gs2Header, "p=") {
		binding = append(binding, b.channelBinding...)
	}
	withoutProof := "c=" + base64.StdEncoding.EncodeToString(binding) + ",r=" + combinedNonce
	message := authMessage(b.clientFirstBare, serverFirst, withoutProof)
	storedKey := sha256Sum(b.creds.ClientKey)
	proof := xorKeys(b.creds.ClientKey, hmacSHA256(storedKey, message))
	b.expectedServerSignature = hmacSHA256(b.creds.ServerKey, message)
	b.state = backendSentClientFinal
	return &pgproto3.SASLResponse{
		Data: []byte(withoutProof + ",p=" + base64.StdEncoding.EncodeToString(proof)),
	}, nil
}

// checkServerFinal verifies the server signature in the server-final-message.
func (b *BackendAuth) checkServerFinal(data []byte) error {
	if b.state != backendSentClientFinal {
		return fmt.Errorf("%w: AuthenticationSASLFinal received out of order", ErrProtocolViolation)
	}
	signature, err := parseServerFinal(data)
	if err != nil {
		return err
	}
	if !hmac.Equal(signature, b.expectedServerSignature) {
		return fmt.Errorf("backend's SCRAM server signature does not match the role's verifier: it is not the server we expect, or the role's password changed")
	}
	b.state = backendVerifiedServer
	return nil
}

// answerMD5 answers an MD5 challenge from the md5 verifier.
func (b *BackendAuth) answerMD5(salt [4]byte) (pgproto3.FrontendMessage, error) {
	if b.state != backendAwaitingRequest {
		return nil, fmt.Errorf("%w: AuthenticationMD5Password received in the middle of authentication", ErrProtocolViolation)
	}
	if !isMD5Verifier(b.creds.MD5) {
		return nil, fmt.Errorf("backend asks for MD5 but the session's credentials (method %q) hold no md5 verifier", b.creds.Method)
	}
	b.state = backendSentPassword
	return &pgproto3.PasswordMessage{Password: md5Response(b.creds.MD5, salt)}, nil
}

// parseServerFirst parses "r=" nonce "," "s=" salt "," "i=" iterations
// [","extensions] and returns the message as text and the combined nonce,
// which must extend clientNonce. Salt and iterations are checked but unused:
// ClientKey is already derived.
func parseServerFirst(message []byte, clientNonce string) (text, combinedNonce string, err error) {
	if err := checkSCRAMMessage("server-first-message", message); err != nil {
		return "", "", err
	}
	text = string(message)
	attributes, err := splitSCRAMAttributes(text)
	if err != nil {
		return "", "", fmt.Errorf("server-first-message: %w", err)
	}
	if attributes[0].name == 'm' {
		return "", "", fmt.Errorf("%w: server requires a SCRAM extension, which is not supported", ErrProtocolViolation)
	}
	if len(attributes) < 3 {
		return "", "", fmt.Errorf("%w: server-first-message needs nonce, salt and iteration attributes", ErrProtocolViolation)
	}
	if combinedNonce, err = expectAttribute(attributes[0], 'r', "server-first-message"); err != nil {
		return "", "", err
	}
	if len(combinedNonce) <= len(clientNonce) || combinedNonce[:len(clientNonce)] != clientNonce || !validNonce(combinedNonce) {
		return "", "", fmt.Errorf("%w: server nonce does not extend the client nonce", ErrProtocolViolation)
	}
	saltText, err := expectAttribute(attributes[1], 's', "server-first-message")
	if err != nil {
		return "", "", err
	}
	if salt, ok := decodeBase64(saltText); !ok || len(salt) == 0 {
		return "", "", fmt.Errorf("%w: salt in server-first-message is not valid base64", ErrProtocolViolation)
	}
	iterationsText, err := expectAttribute(attributes[2], 'i', "server-first-message")
	if err != nil {
		return "", "", err
	}
	if iterations, err := strconv.Atoi(iterationsText); err != nil || iterations < 1 {
		return "", "", fmt.Errorf("%w: iteration count in server-first-message is not a positive integer", ErrProtocolViolation)
	}
	return text, combinedNonce, nil
}

// parseServerFinal parses "v=" signature [","extensions] or "e=" error.
func parseServerFinal(message []byte) ([]byte, error) {
	if err := checkSCRAMMessage("server-final-message", message); err != nil {
		return nil, err
	}
	attributes, err := splitSCRAMAttributes(string(message))
	if err != nil {
		return nil, fmt.Errorf("server-final-message: %w", err)
	}
	if attributes[0].name == 'e' {
		return nil, fmt.Errorf("backend reported a SCRAM error: %.100q", attributes[0].value)
	}
	signatureText, err := expectAttribute(attributes[0], 'v', "server-final-message")
	if err != nil {
		return nil, err
	}
	signature, ok := decodeBase64(signatureText)
	if !ok || len(signature) != scramKeyLen {
		return nil, fmt.Errorf("%w: server signature is not %d bytes of base64", ErrProtocolViolation, scramKeyLen)
	}
	return signature, nil
}
