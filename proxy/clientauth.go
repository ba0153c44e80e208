package proxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgquorum/pgquorum/proxy/pgauth"
)

// credentials are what a session keeps to log in to a backend as the client's user.
type credentials = pgauth.Credentials

// authenticateClient authenticates the client with the configured method. out holds messages
// not yet written to the client; they are written before the proxy waits for the client. It
// returns the credentials for the backend and the messages still to write.
func (s *session) authenticateClient(ctx context.Context, br *bufio.Reader, out []byte) (credentials, []byte, error) {
	method := s.srv.cfg.AuthMethod
	if method == AuthTrust {
		return credentials{User: s.user, Method: pgauth.MethodTrust}, out, nil
	}
	// Like PostgreSQL, read the stored verifier first: it decides between MD5 and SCRAM.
	var verifier pgauth.Verifier
	err := s.waitOnServer(func() error {
		if src := s.srv.cfg.Verifiers; src != nil {
			var err error
			verifier, err = s.srv.lookupFromSource(ctx, src, s.user)
			return err
		}
		var err error
		var target Target
		verifier, target, err = s.srv.lookupVerifier(ctx, s.user)
		if err == nil || errors.Is(err, pgauth.ErrNoVerifier) {
			return nil
		}
		var ce *clientError
		if errors.As(err, &ce) {
			return err
		}
		return fatalf(codeConnectionFailure, "could not look up the password of user %q on the primary PostgreSQL server %s",
			s.user, target.Name).withCause(err)
	})
	if err != nil {
		return credentials{}, out, err
	}
	if method == AuthMD5 && verifier.Kind == pgauth.MD5 {
		return s.authenticateMD5(br, out, verifier)
	}
	// SCRAM for scram-sha-256, and for md5 when the role has a SCRAM verifier (or none: the
	// fake exchange, as PostgreSQL does with password_encryption = scram-sha-256).
	return s.authenticateSCRAM(br, out, verifier)
}

// authenticateMD5 runs an MD5 password challenge.
func (s *session) authenticateMD5(br *bufio.Reader, out []byte, verifier pgauth.Verifier) (credentials, []byte, error) {
	salt, err := pgauth.MD5Challenge(nil)
	if err != nil {
		return credentials{}, out, err
	}
	out, _ = (&pgproto3.AuthenticationMD5Password{Salt: salt}).Encode(out)
	body, err := s.exchangeAuthMessage(br, out)
	if err != nil {
		return credentials{}, nil, err
	}
	var msg pgproto3.PasswordMessage
	if err := msg.Decode(body); err != nil {
		return credentials{}, nil, fatalf(codeProtocolViolation, "invalid password packet").withCause(err)
	}
	creds, err := pgauth.VerifyMD5(verifier, s.user, salt, msg.Password)
	if err != nil {
		return credentials{}, nil, s.passwordFailed(err)
	}
	return creds, nil, nil
}

// authenticateSCRAM runs a SCRAM-SHA-256 exchange (a fake one that fails at the end when the
// verifier is not a SCRAM one).
func (s *session) authenticateSCRAM(br *bufio.Reader, out []byte, verifier pgauth.Verifier) (credentials, []byte, error) {
	// Over TLS, SCRAM-SHA-256-PLUS is offered too; a role without a usable SCRAM verifier gets
	// the cluster's mock one (the same salt on every proxy), and the exchange fails at its end.
	scram := pgauth.NewSCRAMServerWith(s.user, verifier, pgauth.SCRAMServerOptions{
		ChannelBinding: s.clientBinding,
		Mock:           s.srv.mockKey,
	})
	s.clientBinding = nil
	out, _ = (&pgproto3.AuthenticationSASL{AuthMechanisms: scram.Mechanisms()}).Encode(out)
	body, err := s.exchangeAuthMessage(br, out)
	if err != nil {
		return credentials{}, nil, err
	}
	var initial pgproto3.SASLInitialResponse
	if err := initial.Decode(body); err != nil {
		return credentials{}, nil, fatalf(codeProtocolViolation, "malformed SASL message").withCause(err)
	}
	if err := scram.SelectMechanism(initial.AuthMechanism); err != nil {
		return credentials{}, nil, fatalf(codeProtocolViolation, "client selected an invalid SASL authentication mechanism").withCause(err)
	}
	serverFirst, err := scram.First(initial.Data)
	if err != nil {
		return credentials{}, nil, s.scramFailed(err)
	}
	out, _ = (&pgproto3.AuthenticationSASLContinue{Data: serverFirst}).Encode(nil)
	body, err = s.exchangeAuthMessage(br, out)
	if err != nil {
		return credentials{}, nil, err
	}
	var final pgproto3.SASLResponse
	if err := final.Decode(body); err != nil {
		return credentials{}, nil, fatalf(codeProtocolViolation, "malformed SASL message").withCause(err)
	}
	serverFinal, creds, err := scram.Final(final.Data)
	if err != nil {
		return credentials{}, nil, s.scramFailed(err)
	}
	out, _ = (&pgproto3.AuthenticationSASLFinal{Data: serverFinal}).Encode(nil)
	return creds, out, nil
}

// exchangeAuthMessage writes out and reads the client's answer, which must be an
// authentication message ('p'). It returns the answer's body.
func (s *session) exchangeAuthMessage(br *bufio.Reader, out []byte) ([]byte, error) {
	if _, err := s.client.Write(out); err != nil {
		return nil, errors.Join(errClientGone, err)
	}
	typ, body, err := readMessage(br, maxAuthMessageBody)
	if err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			// libpq does this when it has no password yet: it closes and asks the user.
			return nil, errors.Join(errClientGone, err)
		}
		return nil, err
	}
	if typ != 'p' {
		return nil, fatalf(codeProtocolViolation, "expected password response, got message type %d", typ)
	}
	return body, nil
}

// passwordFailed turns a failed password check into PostgreSQL's error.
func (s *session) passwordFailed(err error) error {
	return fatalf(codeInvalidPassword, "password authentication failed for user %q", s.user).withCause(err)
}

// scramFailed turns a SCRAM error into PostgreSQL's error: a protocol violation or a failed
// password check.
func (s *session) scramFailed(err error) error {
	if errors.Is(err, pgauth.ErrProtocolViolation) {
		return fatalf(codeProtocolViolation, "malformed SCRAM message").withCause(err)
	}
	return s.passwordFailed(err)
}

// noPrimaryError is the client's error when the router named no primary in time.
func noPrimaryError(err error, hold time.Duration) *clientError {
	ce := fatalf(codeCannotConnectNow, "no primary PostgreSQL server is available").withCause(err)
	if errors.Is(err, context.DeadlineExceeded) {
		ce.Detail = fmt.Sprintf("No primary was agreed within the hold timeout (%s).", hold)
	}
	return ce
}
