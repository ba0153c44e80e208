package authlookup

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/pgquorum/pgquorum/consensus"
	"github.com/pgquorum/pgquorum/proxy/pgauth"
)

const (
	// CacheTTL is how long a learner uses an answer: a password change reaches every
	// sidecar within it (until then the old password still works there, and the new one
	// does not).
	CacheTTL = 10 * time.Second
	// maxCached bounds the cache (answers for unknown names are cached too).
	maxCached = 4096
	// perVoterTimeout bounds one voter's answer before the next voter is asked.
	perVoterTimeout = 2 * time.Second
)

// Caller is the part of the consensus node a learner needs (*consensus.Node).
type Caller interface {
	Call(ctx context.Context, to uint64, service string, payload []byte) ([]byte, error)
	Members() []consensus.Member
	Status() consensus.Status
}

// Client looks verifiers up through the voters for a learner's proxy (it is a
// proxy.VerifierSource). Safe for concurrent use: mu guards the cache and the lookups
// in flight, so that a storm of connections for one role asks the voters once.
type Client struct {
	node Caller

	mu       sync.Mutex
	cache    map[string]cached
	inflight map[string]*flight
}

type cached struct {
	v       pgauth.Verifier
	expires time.Time
}

// flight is one lookup in progress; done is closed when v and err are set.
type flight struct {
	done chan struct{}
	v    pgauth.Verifier
	err  error
}

// NewClient returns a Client that calls the voters through node.
func NewClient(node Caller) *Client {
	return &Client{node: node, cache: map[string]cached{}, inflight: map[string]*flight{}}
}

// LookupVerifier returns user's verifier: the real one, or the cluster's mock one
// (which no password matches) when the role cannot log in with a password. It fails
// when no voter answered within ctx.
func (c *Client) LookupVerifier(ctx context.Context, user string) (pgauth.Verifier, error) {
	c.mu.Lock()
	if e, ok := c.cache[user]; ok && time.Now().Before(e.expires) {
		c.mu.Unlock()
		return e.v, nil
	}
	f, ok := c.inflight[user]
	if !ok {
		f = &flight{done: make(chan struct{})}
		c.inflight[user] = f
		go c.fly(user, f)
	}
	c.mu.Unlock()
	select {
	case <-f.done:
		return f.v, f.err
	case <-ctx.Done():
		return pgauth.Verifier{}, fmt.Errorf("look up the verifier of %q through the voters: %w", user, ctx.Err())
	}
}

// fly runs one lookup for every caller waiting on f, bounded by the voters' timeouts,
// and caches a success.
func (c *Client) fly(user string, f *flight) {
	ctx, cancel := context.WithTimeout(context.Background(), consensus.DefaultCallTimeout)
	defer cancel()
	f.v, f.err = c.ask(ctx, user)
	c.mu.Lock()
	delete(c.inflight, user)
	if f.err == nil {
		c.store(user, f.v)
	}
	c.mu.Unlock()
	close(f.done)
}

// store caches an answer; c.mu is held.
func (c *Client) store(user string, v pgauth.Verifier) {
	now := time.Now()
	if len(c.cache) >= maxCached {
		for name, e := range c.cache {
			if !now.Before(e.expires) {
				delete(c.cache, name)
			}
		}
	}
	for name := range c.cache {
		if len(c.cache) < maxCached {
			break
		}
		delete(c.cache, name) // full of live answers: forget any
	}
	c.cache[user] = cached{v: v, expires: now.Add(CacheTTL)}
}

// ask asks the voters in order until one answers.
func (c *Client) ask(ctx context.Context, user string) (pgauth.Verifier, error) {
	voters := votersToAsk(c.node.Status(), c.node.Members())
	if len(voters) == 0 {
		return pgauth.Verifier{}, errors.New("no voting proxy is known to ask for verifiers")
	}
	var errs []error
	for _, id := range voters {
		callCtx, cancel := context.WithTimeout(ctx, perVoterTimeout)
		reply, err := c.node.Call(callCtx, id, Service, encodeRequest(user))
		cancel()
		if err == nil {
			var v pgauth.Verifier
			if v, err = decodeReply(reply); err == nil {
				return v, nil
			}
		}
		errs = append(errs, fmt.Errorf("node %d: %w", id, err))
		if ctx.Err() != nil {
			break
		}
	}
	return pgauth.Verifier{}, fmt.Errorf("no voting proxy answered: %w", errors.Join(errs...))
}

// votersToAsk orders the voters to ask: the leader first (it hears from everyone and a
// learner hears from it), then the reachable voters, then the others; never this node.
func votersToAsk(status consensus.Status, members []consensus.Member) []uint64 {
	var reachable, others []uint64
	for _, m := range members {
		switch {
		case !m.Voter || m.ID == status.ID || m.ID == status.Leader:
		case m.Reachable:
			reachable = append(reachable, m.ID)
		default:
			others = append(others, m.ID)
		}
	}
	var order []uint64
	if status.Leader != 0 && status.Leader != status.ID &&
		slices.ContainsFunc(members, func(m consensus.Member) bool { return m.ID == status.Leader && m.Voter }) {
		order = append(order, status.Leader)
	}
	return append(append(order, reachable...), others...)
}
