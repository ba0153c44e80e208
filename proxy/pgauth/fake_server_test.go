package pgauth_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgquorum/pgquorum/proxy/pgauth"
)

// This file is a tiny PostgreSQL look-alike that authenticates one client
// with this package's server side, so real clients (libpq's psql, pgx) can be
// pointed at it. After authentication it answers like an idle server until
// the client leaves.

// clientAuthenticator runs the authentication part of one client session.
type clientAuthenticator func(backend *pgproto3.Backend, user string) (pgauth.Credentials, error)

// authOutcome is what the fake server learned from one client.
type authOutcome struct {
	creds pgauth.Credentials
	err   error
}

// serveOneClient listens on a loopback port and authenticates the first
// client with authenticate. The outcome arrives on the returned channel.
func serveOneClient(t *testing.T, authenticate clientAuthenticator) (string, <-chan authOutcome) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	outcome := make(chan authOutcome, 1)
	done := make(chan struct{})
	t.Cleanup(func() {
		ln.Close() // unblocks Accept
		<-done
	})
	go func() {
		defer close(done)
		conn, err := ln.Accept()
		if err != nil {
			outcome <- authOutcome{err: fmt.Errorf("accept: %w", err)}
			return
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(60 * time.Second))
		creds, err := serveSession(conn, authenticate)
		outcome <- authOutcome{creds: creds, err: err}
	}()
	return ln.Addr().String(), outcome
}

func serveSession(conn net.Conn, authenticate clientAuthenticator) (pgauth.Credentials, error) {
	backend := pgproto3.NewBackend(conn, conn)
	backend.SetMaxBodyLen(64 * 1024)
	var user string
	for user == "" {
		msg, err := backend.ReceiveStartupMessage()
		if err != nil {
			return pgauth.Credentials{}, fmt.Errorf("startup: %w", err)
		}
		switch m := msg.(type) {
		case *pgproto3.SSLRequest, *pgproto3.GSSEncRequest:
			if _, err := conn.Write([]byte("N")); err != nil {
				return pgauth.Credentials{}, err
			}
		case *pgproto3.StartupMessage:
			user = m.Parameters["user"]
			if user == "" {
				return pgauth.Credentials{}, errors.New("startup message without user")
			}
		default:
			return pgauth.Credentials{}, fmt.Errorf("unexpected startup message %T", msg)
		}
	}

	creds, authErr := authenticate(backend, user)
	if authErr != nil {
		code := "28P01"
		if errors.Is(authErr, pgauth.ErrProtocolViolation) {
			code = "08P01"
		}
		// Clients see only the generic text, never the detail.
		backend.Send(&pgproto3.ErrorResponse{Severity: "FATAL", Code: code,
			Message: fmt.Sprintf("%s for user %q", pgauth.ErrWrongPassword, user)})
		backend.Flush()
		return pgauth.Credentials{}, authErr
	}

	backend.Send(&pgproto3.AuthenticationOk{})
	for _, p := range [][2]string{{"server_version", "15.0"}, {"server_encoding", "UTF8"}, {"client_encoding", "UTF8"},
		{"standard_conforming_strings", "on"}, {"integer_datetimes", "on"}, {"DateStyle", "ISO, MDY"}} {
		backend.Send(&pgproto3.ParameterStatus{Name: p[0], Value: p[1]})
	}
	backend.Send(&pgproto3.BackendKeyData{ProcessID: 1, SecretKey: []byte{0, 0, 0, 1}})
	backend.Send(&pgproto3.ReadyForQuery{TxStatus: 'I'})
	if err := backend.Flush(); err != nil {
		return creds, err
	}
	for {
		msg, err := backend.Receive()
		if err != nil {
			return creds, nil // client went away
		}
		switch msg.(type) {
		case *pgproto3.Terminate:
			return creds, nil
		case *pgproto3.Query:
			backend.Send(&pgproto3.EmptyQueryResponse{})
			backend.Send(&pgproto3.ReadyForQuery{TxStatus: 'I'})
			if err := backend.Flush(); err != nil {
				return creds, nil
			}
		default:
			return creds, fmt.Errorf("fake server does not handle %T", msg)
		}
	}
}

// scramAuthenticator authenticates with SCRAMServer against the verifier
// lookup returns, and runs a fake exchange when lookup finds none.
func scramAuthenticator(lookup func(user string) (pgauth.Verifier, error)) clientAuthenticator {
	return func(backend *pgproto3.Backend, user string) (pgauth.Credentials, error) {
		var server *pgauth.SCRAMServer
		v, err := lookup(user)
		switch {
		case errors.Is(err, pgauth.ErrNoVerifier):
			server = pgauth.NewSCRAMServerForUnknownUser(user)
		case err != nil:
			return pgauth.Credentials{}, err
		default:
			server = pgauth.NewSCRAMServer(user, v, nil)
		}
		backend.Send(&pgproto3.AuthenticationSASL{AuthMechanisms: []string{pgauth.SCRAMMechanism}})
		if err := backend.Flush(); err != nil {
			return pgauth.Credentials{}, err
		}
		backend.SetAuthType(pgproto3.AuthTypeSASL)
		msg, err := backend.Receive()
		if err != nil {
			return pgauth.Credentials{}, err
		}
		initial, ok := msg.(*pgproto3.SASLInitialResponse)
		if !ok {
			return pgauth.Credentials{}, fmt.Errorf("expected SASLInitialResponse, got %T", msg)
		}
		if err := pgauth.CheckSASLMechanism(initial.AuthMechanism); err != nil {
			return pgauth.Credentials{}, err
		}
		serverFirst, err := server.First(initial.Data)
		if err != nil {
			return pgauth.Credentials{}, err
		}
		backend.Send(&pgproto3.AuthenticationSASLContinue{Data: serverFirst})
		if err := backend.Flush(); err != nil {
			return pgauth.Credentials{}, err
		}
		backend.SetAuthType(pgproto3.AuthTypeSASLContinue)
		msg, err = backend.Receive()
		if err != nil {
			return pgauth.Credentials{}, err
		}
		response, ok := msg.(*pgproto3.SASLResponse)
		if !ok {
			return pgauth.Credentials{}, fmt.Errorf("expected SASLResponse, got %T", msg)
		}
		serverFinal, creds, err := server.Final(response.Data)
		if err != nil {
			return pgauth.Credentials{}, err
		}
		backend.Send(&pgproto3.AuthenticationSASLFinal{Data: serverFinal})
		return creds, nil
	}
}

// md5Authenticator authenticates with an MD5 challenge; a role without an
// md5 verifier still gets the challenge and fails only at the end.
func md5Authenticator(lookup func(user string) (pgauth.Verifier, error)) clientAuthenticator {
	return func(backend *pgproto3.Backend, user string) (pgauth.Credentials, error) {
		v, err := lookup(user)
		if err != nil && !errors.Is(err, pgauth.ErrNoVerifier) {
			return pgauth.Credentials{}, err
		}
		salt, err := pgauth.MD5Challenge(nil)
		if err != nil {
			return pgauth.Credentials{}, err
		}
		backend.Send(&pgproto3.AuthenticationMD5Password{Salt: salt})
		if err := backend.Flush(); err != nil {
			return pgauth.Credentials{}, err
		}
		backend.SetAuthType(pgproto3.AuthTypeMD5Password)
		msg, err := backend.Receive()
		if err != nil {
			return pgauth.Credentials{}, err
		}
		password, ok := msg.(*pgproto3.PasswordMessage)
		if !ok {
			return pgauth.Credentials{}, fmt.Errorf("expected PasswordMessage, got %T", msg)
		}
		return pgauth.VerifyMD5(v, user, salt, password.Password)
	}
}

// staticLookup serves one role's verifier; every other role is unknown.
func staticLookup(role string, v pgauth.Verifier) func(string) (pgauth.Verifier, error) {
	return func(user string) (pgauth.Verifier, error) {
		if user != role {
			return pgauth.Verifier{}, fmt.Errorf("role %q: %w", user, pgauth.ErrNoVerifier)
		}
		return v, nil
	}
}

// awaitOutcome waits (bounded) for the fake server's outcome.
func awaitOutcome(t *testing.T, outcome <-chan authOutcome) authOutcome {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	select {
	case o := <-outcome:
		return o
	case <-ctx.Done():
		t.Fatal("fake server did not finish within 60s")
		return authOutcome{}
	}
}
