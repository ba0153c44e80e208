package rejoin

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Run rejoins the node whose data directory is opts.PGData as a standby of the
// agreed primary (`pgquorum rejoin`): the package doc's steps, driven by the
// same decision as the agent until the node streams and is unfenced. Before it
// changes anything it checks the admin API (and the token), the primary and the
// prerequisites, and refuses when no primary is agreed, when the data directory
// is the primary's, or when it cannot tell which node the data directory is.
// A pg_rewind failure is a *RewindError: run again with Reclone.
//
// Run can be run again after it was interrupted at any point: it picks up from
// what the data directory shows (see decide.go).
func Run(ctx context.Context, opts Options) (Result, error) {
	h, err := newHost(opts)
	if err != nil {
		return Result{}, err
	}
	view, trusted, err := h.admin.cluster(ctx)
	if err != nil {
		return Result{}, err
	}
	if err := h.identifyNode(ctx, view); err != nil {
		return Result{}, err
	}
	p := policy{OneShot: true, ForceReclone: h.opts.Reclone, StreamTimeout: h.opts.StreamTimeout}
	res := Result{Node: h.node, Primary: view.Primary, Epoch: view.Epoch}

	// Refusals first (no primary, this is the primary): the decision on a
	// running primary does not need the local facts.
	l, err := h.observe(ctx, nodeAddress(view, h.node))
	if err != nil {
		return res, err
	}
	if a := decide(clusterFactsOf(view, trusted, h.node), l, memory{Now: time.Now()}, p); a.Kind == actWait && !a.Transient {
		return res, a.failure()
	}
	h.logger.Info("rejoining as a standby", "data_dir", h.dataDir, "primary", view.Primary, "epoch", view.Epoch,
		"fenced", clusterFactsOf(view, trusted, h.node).Fenced, "reclone", h.opts.Reclone)
	if err := h.preflight(ctx, view, h.opts.Reclone); err != nil {
		return res, err
	}

	var m memory
	var transientSince time.Time
	for {
		view, trusted, err = h.admin.cluster(ctx)
		if err != nil {
			return res, err
		}
		c := clusterFactsOf(view, trusted, h.node)
		if res.Primary != "" && (c.Primary != res.Primary || c.Epoch != res.Epoch) && c.Primary != "" {
			return res, fmt.Errorf("%w: the primary changed from %s (epoch %d) to %s (epoch %d) meanwhile; run rejoin again",
				ErrNoPrimary, res.Primary, res.Epoch, c.Primary, c.Epoch)
		}
		l, err := h.observe(ctx, nodeAddress(view, h.node))
		if err != nil {
			return res, err
		}
		m.Now = time.Now()
		m.track(c, l)
		a := decide(c, l, m, p)
		switch {
		case a.Kind == actNone:
			h.logger.Info("rejoined", "state", a.Reason, "method", res.Method, "unfenced", res.Unfenced)
			return res, nil
		case a.Kind == actWait && !a.Transient:
			return res, a.failure()
		case a.Kind == actWait:
			if transientSince.IsZero() {
				transientSince = m.Now
				h.logger.Info("waiting", "reason", a.Reason)
			}
			if m.Now.Sub(transientSince) > h.opts.StartTimeout+h.opts.StreamTimeout {
				return res, fmt.Errorf("gave up after %v: %s", m.Now.Sub(transientSince).Round(time.Second), a.Reason)
			}
			if err := sleep(ctx, 200*time.Millisecond); err != nil {
				return res, err
			}
			continue
		}
		transientSince = time.Time{}
		h.logger.Info("next step", "action", a.Kind.String(), "reason", a.Reason)
		if err := h.execute(ctx, a, view, &m, &res); err != nil {
			return res, err
		}
	}
}

// failure is the error of a wait that the one-shot rejoin does not sit out.
func (a action) failure() error {
	if a.Err != nil {
		return a.Err
	}
	return errors.New(a.Reason)
}

// track updates the remembered durations from what was just observed.
func (m *memory) track(c clusterFacts, l localFacts) {
	primaryDown := c.Failover == nil && c.Primary == l.Node && l.Server == serverStopped
	switch {
	case !primaryDown:
		m.PrimaryDownSince = time.Time{}
	case m.PrimaryDownSince.IsZero():
		m.PrimaryDownSince = m.Now
	}
	lagging := c.Failover == nil && c.Primary != "" && c.Primary != l.Node &&
		l.Server == serverRunning && l.InRecovery && l.StreamingFrom != c.PrimaryAddress
	switch {
	case !lagging:
		m.NotStreamingSince = time.Time{}
	case m.NotStreamingSince.IsZero():
		m.NotStreamingSince = m.Now
	}
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
