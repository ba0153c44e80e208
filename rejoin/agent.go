package rejoin

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/pgquorum/pgquorum/admin"
)

// AgentOptions configure RunAgent (`pgquorum agent`).
type AgentOptions struct {
	Options
	// Interval is how often the agent looks at the cluster and the node when
	// nothing is happening (transitions are followed every TransitionInterval).
	// Default 2s.
	Interval time.Duration
	// PrimaryStartDelay is how long this node, while it is the agreed primary,
	// stays down before the agent restarts it: the proxies fail over to a
	// standby within a few seconds, and a restart racing that failover would
	// only have to be rewound afterwards. Default 10s.
	PrimaryStartDelay time.Duration
	// RecloneFallback lets the agent copy the primary afresh (pg_basebackup; the
	// old data directory is moved aside, never deleted) when pg_rewind cannot
	// rewind the node, when a rewound node still does not stream, and into a
	// data directory that holds no cluster. Off: the agent says so and waits
	// for the operator.
	RecloneFallback bool
}

// Defaults of AgentOptions.
const (
	DefaultAgentInterval     = 2 * time.Second
	DefaultPrimaryStartDelay = 10 * time.Second
	// TransitionInterval is how often the agent looks while something is
	// expected to change soon (a failover completing, a standby connecting).
	TransitionInterval = 250 * time.Millisecond
	// maxBackoff bounds the wait after repeated failures of an action.
	maxBackoff = 30 * time.Second
)

// agent is RunAgent's state. It is used by RunAgent's goroutine only.
type agent struct {
	h      *host
	opts   AgentOptions
	policy policy
	logger *slog.Logger

	mem       memory
	memKey    string // primary and epoch the memory is about
	checked   bool   // preflight passed (or cannot fail any more in a way that stops the agent)
	last      string // the last decision logged at Info
	failures  int    // consecutive failed actions
	lastError string
}

// RunAgent keeps the local PostgreSQL node running and in the cluster until ctx
// ends (SIGTERM): it follows the agreed state through the admin APIs, restarts a
// crashed server (as a standby unless the cluster names it primary), rewinds or
// re-clones a node that must follow a new primary, starts it as a standby,
// waits until it streams and has it unfenced. See decide.go for every rule.
//
// It returns an error only for what a restart of the agent cannot fix: bad
// options, a data directory that is not the cluster's, an admin token the
// cluster refuses, missing PostgreSQL prerequisites. PostgreSQL is left running
// when the agent stops.
func RunAgent(ctx context.Context, opts AgentOptions) error {
	if opts.Interval <= 0 {
		opts.Interval = DefaultAgentInterval
	}
	if opts.PrimaryStartDelay <= 0 {
		opts.PrimaryStartDelay = DefaultPrimaryStartDelay
	}
	h, err := newHost(opts.Options)
	if err != nil {
		return err
	}
	a := &agent{h: h, opts: opts, logger: h.logger,
		policy: policy{RecloneFallback: opts.RecloneFallback, PrimaryStartDelay: opts.PrimaryStartDelay, StreamTimeout: h.opts.StreamTimeout}}
	a.logger.Info("agent started", "data_dir", h.dataDir, "admin", h.opts.Admin, "interval", opts.Interval,
		"primary_start_delay", opts.PrimaryStartDelay, "reclone_fallback", opts.RecloneFallback)
	for {
		next, err := a.step(ctx)
		if err != nil {
			return err
		}
		if err := sleep(ctx, next); err != nil {
			a.logger.Info("agent stopped; PostgreSQL is left as it is")
			return nil
		}
	}
}

// step looks once, decides, acts, and returns how long to wait before the next
// look. Only errors that end the agent are returned.
func (a *agent) step(ctx context.Context) (time.Duration, error) {
	h := a.h
	view, trusted, err := h.admin.cluster(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return 0, nil
		}
		a.note(slog.LevelWarn, "no admin API answers; PostgreSQL is left as it is", "err", err)
		return a.opts.Interval, nil
	}
	if h.node == "" {
		if err := h.identifyNode(ctx, view); err != nil {
			if errors.Is(err, ErrUnknownNode) {
				return 0, err
			}
			a.note(slog.LevelWarn, "cannot tell which node this data directory is yet", "err", err)
			return a.opts.Interval, nil
		}
		a.logger = h.logger
	}
	if err := a.preflight(ctx, view, trusted); err != nil {
		return 0, err
	}

	c := clusterFactsOf(view, trusted, h.node)
	if key := fmt.Sprintf("%s@%d", c.Primary, c.Epoch); key != a.memKey {
		a.mem, a.memKey = memory{}, key
	}
	l, err := h.observe(ctx, nodeAddress(view, h.node))
	if err != nil {
		a.note(slog.LevelWarn, "cannot observe the local node", "err", err)
		return a.opts.Interval, nil
	}
	a.mem.Now = time.Now()
	a.mem.track(c, l)
	act := decide(c, l, a.mem, a.policy)
	a.logDecision(act, c)
	if act.Kind == actNone || act.Kind == actWait {
		if act.Transient {
			return TransitionInterval, nil
		}
		return a.opts.Interval, nil
	}

	var res Result
	err = h.execute(ctx, act, view, &a.mem, &res)
	var left *LeftRunningError
	switch {
	case err == nil:
		a.failures, a.lastError = 0, ""
		a.logger.Info("done", "action", act.Kind.String(), "method", res.Method, "old_data_dir", res.OldDataDir)
		return 0, nil
	case errors.As(err, &left) || ctx.Err() != nil:
		a.logger.Info("stopping in the middle of an action", "action", act.Kind.String(), "err", err)
		return 0, nil
	case isUnauthorized(err):
		return 0, err
	}
	a.failures++
	backoff := min(a.opts.Interval<<min(a.failures, 5), maxBackoff)
	a.logger.Error("action failed; trying again later", "action", act.Kind.String(), "err", err, "retry_in", backoff)
	return backoff, nil
}

// preflight runs the checks of Run once, as soon as there is a primary to
// check against. Missing prerequisites and a refused token end the agent;
// anything else (a primary that does not answer yet) is tried again later.
func (a *agent) preflight(ctx context.Context, view admin.ClusterView, trusted bool) error {
	if a.checked || !trusted || view.Primary == "" || view.Failover != nil {
		return nil
	}
	h := a.h
	var err error
	if view.Primary == h.node {
		err = h.preflightAsPrimary(ctx)
	} else {
		err = h.preflight(ctx, view, false)
	}
	switch {
	case err == nil:
		a.checked = true
		a.logger.Info("prerequisites checked: admin token accepted, primary reachable, rewind and replication prerequisites in place")
		return nil
	case errors.Is(err, ErrPrerequisites) && a.opts.RecloneFallback:
		// Without rewinds a re-clone still works; say what is missing, keep going.
		a.checked = true
		a.logger.Warn("some prerequisites are missing; the agent re-clones where it cannot rewind", "err", err)
		return nil
	case errors.Is(err, ErrPrerequisites), isUnauthorized(err), errors.Is(err, ErrIsPrimary):
		// ErrIsPrimary here: the running agreed primary works in this data
		// directory, so --node names another node.
		return err
	}
	a.note(slog.LevelWarn, "cannot check the prerequisites yet", "err", err)
	return nil
}

// logDecision logs a decision at Info when it differs from the last one, else
// at Debug: the agent looks every few seconds and a steady state says so once.
func (a *agent) logDecision(act action, c clusterFacts) {
	key := act.Kind.String() + "|" + c.Primary + "|" + fmt.Sprint(c.Epoch)
	if act.Kind != actWait && act.Kind != actNone {
		key += "|" + act.Reason
	}
	level := slog.LevelDebug
	if key != a.last {
		level = slog.LevelInfo
		a.last = key
	}
	a.logger.Log(context.Background(), level, "decision", "action", act.Kind.String(), "reason", act.Reason,
		"primary", c.Primary, "epoch", c.Epoch, "fenced", c.Fenced)
}

// note logs a recurring problem at level once, then at Debug until it changes.
func (a *agent) note(level slog.Level, msg string, args ...any) {
	text := fmt.Sprint(msg, args)
	if text == a.lastError {
		level = slog.LevelDebug
	}
	a.lastError = text
	a.logger.Log(context.Background(), level, msg, args...)
}
