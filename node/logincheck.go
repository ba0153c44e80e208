package node

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgquorum/pgquorum/proxy"
)

// Bounds of the readiness login check.
const (
	// loginCheckEvery is how old a login check may be before /readyz starts a
	// new one. Checks happen only when /readyz is asked (the kubelet asks
	// every few seconds), so a proxy nobody probes logs in to nothing.
	loginCheckEvery = 5 * time.Second
	// loginCheckTimeout bounds one login.
	loginCheckTimeout = 3 * time.Second
	// loginCheckWait is how long /readyz waits for the first check of a new
	// primary before it answers "checking".
	loginCheckWait = 1500 * time.Millisecond
)

// loginCheck answers the question /readyz must answer besides routing: can
// this proxy open and authenticate a new backend session to the agreed
// primary? A client session logs in as the client's own role, which the
// proxy cannot do on its own; the check logs in as auth.query_user with the
// same connection settings the proxy uses to read verifiers (auth query) —
// the login every new client session needs first. It catches a primary that
// refuses new connections (max_connections reached, pg_hba.conf, the query
// user's password changed, the server shutting down) while this proxy's
// existing connections still work.
//
// The result is cached for loginCheckEvery and refreshed in the background
// when /readyz asks after that (stale-while-revalidate), so /readyz never
// waits for a login except the first time after the primary changed.
//
// Owner: the node; safe for concurrent use (Ready runs on the admin API's
// goroutines, checks on their own).
type loginCheck struct {
	// login opens and closes one session to address (pgconn in production).
	login func(ctx context.Context, address string) error
	// start runs f in a goroutine the node waits for, under the node's
	// context (node.goBackground).
	start func(f func(ctx context.Context))
	now   func() time.Time

	mu      sync.Mutex
	target  proxy.Target // what the latest result is about
	at      time.Time    // when it was found
	err     error
	done    chan struct{} // closed when the check in flight ends; nil when none
	pending proxy.Target  // the target of the check in flight
}

// newLoginCheck logs in with connString(address) (the query user's libpq
// connection string).
func newLoginCheck(connString func(address string) string, start func(func(context.Context))) *loginCheck {
	return &loginCheck{
		login: func(ctx context.Context, address string) error {
			conn, err := pgconn.Connect(ctx, connString(address))
			if err != nil {
				return err
			}
			return conn.Close(ctx)
		},
		start: start,
		now:   time.Now,
	}
}

// Ready says whether the latest login to target worked, starting a new check
// when the latest is older than loginCheckEvery or about another target.
func (c *loginCheck) Ready(target proxy.Target) (bool, string) {
	c.mu.Lock()
	fresh := c.target == target && !c.at.IsZero() && c.now().Sub(c.at) < loginCheckEvery
	known := c.target == target && !c.at.IsZero()
	var wait chan struct{}
	if !fresh {
		wait = c.startLocked(target)
	}
	c.mu.Unlock()
	if !known {
		// The first word about this primary: wait a little for it.
		select {
		case <-wait:
		case <-time.After(loginCheckWait):
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.target != target || c.at.IsZero():
		return false, fmt.Sprintf("checking that this proxy can log in to the primary %s (%s)", target.Name, target.Address)
	case c.err != nil:
		return false, fmt.Sprintf("this proxy cannot open a session to the primary %s (%s): %v (checked %s ago)",
			target.Name, target.Address, c.err, c.now().Sub(c.at).Round(time.Millisecond))
	}
	return true, ""
}

// startLocked starts a check of target unless one for it is in flight, and
// returns the channel closed when that check ends. c.mu is held.
func (c *loginCheck) startLocked(target proxy.Target) chan struct{} {
	if c.done != nil && c.pending == target {
		return c.done
	}
	done := make(chan struct{})
	c.done, c.pending = done, target
	c.start(func(ctx context.Context) {
		defer close(done)
		ctx, cancel := context.WithTimeout(ctx, loginCheckTimeout)
		defer cancel()
		err := c.login(ctx, target.Address)
		if ctx.Err() != nil && err != nil {
			err = fmt.Errorf("no answer within %s: %w", loginCheckTimeout, err)
		}
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.done == done {
			c.done = nil
		}
		if c.pending != target {
			return // a check of a newer primary has started meanwhile
		}
		c.target, c.at, c.err = target, c.now(), err
	})
	return done
}
