package rejoin

import (
	"context"
	"errors"
	"fmt"

	"github.com/pgquorum/pgquorum/admin"
)

// preflight runs every check that changes nothing, in the order an operator
// would want the answers: the admin API accepts our token (so that the node can
// be unfenced at the end), the agreed primary answers as a primary and is not
// this data directory, and PostgreSQL's prerequisites hold (prereq.go), the
// replication credentials included. `pgquorum rejoin` runs it before it stops or
// rewinds anything; the agent when it starts.
//
// recloneOnly: the node will be copied, not rewound.
func (h *host) preflight(ctx context.Context, view admin.ClusterView, recloneOnly bool) error {
	if err := h.checkToken(ctx); err != nil {
		return err
	}
	primary, address, err := primaryOf(view)
	if err != nil {
		return err
	}
	if err := h.checkPrimary(ctx, primary, address); err != nil {
		return fmt.Errorf("%w; nothing was changed", err)
	}
	facts, err := h.prereqFacts(ctx, view, primary, address)
	if err != nil {
		return err
	}
	facts.RecloneOnly = recloneOnly
	return prerequisitesError(prerequisiteProblems(facts))
}

// prereqFacts observes what prerequisiteProblems checks.
func (h *host) prereqFacts(ctx context.Context, view admin.ClusterView, primary, address string) (prereqFacts, error) {
	var f prereqFacts
	settings, err := h.settings()
	if err != nil && fileExists(h.dataDir) {
		h.logger.Warn("cannot read the configuration for the prerequisite checks", "err", err)
	}
	if settings == nil {
		settings = map[string]string{}
	}
	f.Local = settings
	if cd, err := h.pg.controlData(ctx); err == nil {
		f.Control = &cd
	}
	p, err := h.primaryPrereq(ctx, primary, address, settings["primary_slot_name"])
	if err != nil {
		return f, err
	}
	f.Primary = &p
	replication, err := h.replicationParams(ctx, view, address, settings)
	if err != nil {
		f.Replication, f.ReplicationChecked = err, true
		return f, nil
	}
	_, err = h.checkReplication(ctx, primary, replication)
	var replErr *replicationError
	switch {
	case err == nil:
		f.ReplicationChecked = true
	case errors.As(err, &replErr):
		f.Replication, f.ReplicationChecked = err, true
	default:
		return f, err
	}
	return f, nil
}

// preflightAsPrimary is the agent's check on the agreed primary's host: the
// token, and the prerequisites of its own configuration (it is the one rewound
// after the next failover).
func (h *host) preflightAsPrimary(ctx context.Context) error {
	if err := h.checkToken(ctx); err != nil {
		return err
	}
	settings, err := h.settings()
	if err != nil {
		return err
	}
	f := prereqFacts{Local: settings}
	if cd, err := h.pg.controlData(ctx); err == nil {
		f.Control = &cd
	}
	return prerequisitesError(prerequisiteProblems(f))
}

// checkToken asks the admin API whether it would accept POST /rejoin from us.
func (h *host) checkToken(ctx context.Context) error {
	if _, err := h.admin.rejoin(ctx, h.node, true); err != nil {
		if isUnauthorized(err) {
			return fmt.Errorf("%w: the admin API refuses this call without the cluster's admin token (pass --token-file or --token): %w; nothing was changed",
				ErrAdmin, err)
		}
		return fmt.Errorf("%w: %w; nothing was changed", ErrAdmin, err)
	}
	return nil
}
