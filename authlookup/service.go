package authlookup

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync/atomic"
	"time"

	"github.com/pgquorum/pgquorum/consensus"
	"github.com/pgquorum/pgquorum/proxy/pgauth"
)

// Service is the peer-call service name.
const Service = "verifier-lookup"

// protocolVersion is the first byte of every request and reply; a node answers only
// the versions it knows, so the format can change in a rolling upgrade.
const protocolVersion = 1

// maxRoleName bounds a requested role name: PostgreSQL truncates names to 63 bytes,
// and clients send at most a startup packet's worth.
const maxRoleName = 1024

// Lookup reads a role's verifier on the primary (proxy.Server.LookupVerifier). The
// error wraps pgauth.ErrNoVerifier for a role without a usable verifier.
type Lookup func(ctx context.Context, user string) (pgauth.Verifier, error)

// Handlers is the part of the consensus node a voter needs (*consensus.Node).
type Handlers interface {
	HandleCalls(service string, h consensus.CallHandler)
	Members() []consensus.Member
}

// Serve registers the verifier-lookup service on node: lookup reads verifiers, mock
// answers for roles that have none (the cluster's mock key).
func Serve(node Handlers, lookup Lookup, mock pgauth.MockKey, logger *slog.Logger) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	// At most one line a second about refusals and failures, however often peers ask.
	var lastLogged atomic.Int64 // unix nanoseconds
	logLimited := func(level slog.Level, msg string, args ...any) {
		if now := time.Now().UnixNano(); now-lastLogged.Load() >= int64(time.Second) {
			lastLogged.Store(now)
			logger.Log(context.Background(), level, msg, args...)
		}
	}
	node.HandleCalls(Service, func(ctx context.Context, from consensus.Sender, payload []byte) ([]byte, error) {
		if err := callerMayAsk(from, node.Members()); err != nil {
			logLimited(slog.LevelWarn, "verifier lookup refused", "peer", from.ID, "role", from.Role.String(), "reason", err)
			return nil, err
		}
		user, err := decodeRequest(payload)
		if err != nil {
			return nil, err
		}
		v, err := lookup(ctx, user)
		answer, err := answerFor(user, v, err, mock)
		if err != nil {
			logLimited(slog.LevelInfo, "verifier lookup for a peer failed", "peer", from.ID, "err", err)
			return nil, err
		}
		return encodeReply(answer), nil
	})
}

// callerMayAsk decides whether a peer may be answered: its certificate was verified
// and it is a member of the applied configuration.
func callerMayAsk(from consensus.Sender, members []consensus.Member) error {
	if from.Role != consensus.PeerVoter && from.Role != consensus.PeerLearner {
		return errors.New("verifiers are handed only to peers with a verified certificate (peer_tls)")
	}
	if !slices.ContainsFunc(members, func(m consensus.Member) bool { return m.ID == from.ID }) {
		return fmt.Errorf("node %d is not a member of the cluster", from.ID)
	}
	return nil
}

// answerFor turns the voter's lookup into the verifier to send: the role's SCRAM
// verifier, or the mock one when it has none or an MD5 one (never sent: it is
// password-equivalent). A failed lookup is an error.
func answerFor(user string, v pgauth.Verifier, lookupErr error, mock pgauth.MockKey) (pgauth.Verifier, error) {
	switch {
	case errors.Is(lookupErr, pgauth.ErrNoVerifier):
		return mock.Verifier(user), nil
	case lookupErr != nil:
		return pgauth.Verifier{}, fmt.Errorf("could not look the verifier up: %w", lookupErr)
	case v.Kind != pgauth.SCRAMSHA256:
		return mock.Verifier(user), nil
	}
	return v, nil
}

func encodeRequest(user string) []byte {
	return append([]byte{protocolVersion}, user...)
}

func decodeRequest(payload []byte) (string, error) {
	if len(payload) < 1 || payload[0] != protocolVersion {
		return "", errors.New("unknown verifier-lookup request version")
	}
	if len(payload)-1 > maxRoleName {
		return "", fmt.Errorf("role name of %d bytes", len(payload)-1)
	}
	return string(payload[1:]), nil
}

func encodeReply(v pgauth.Verifier) []byte {
	return append([]byte{protocolVersion}, v.Text()...)
}

func decodeReply(payload []byte) (pgauth.Verifier, error) {
	if len(payload) < 1 || payload[0] != protocolVersion {
		return pgauth.Verifier{}, errors.New("unknown verifier-lookup reply version")
	}
	v, err := pgauth.ParseVerifier(string(payload[1:]))
	if err != nil {
		return pgauth.Verifier{}, err
	}
	if v.Kind != pgauth.SCRAMSHA256 {
		return pgauth.Verifier{}, errors.New("a voter answered with a verifier that is not SCRAM-SHA-256")
	}
	return v, nil
}
