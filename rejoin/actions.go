package rejoin

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/pgquorum/pgquorum/admin"
	"github.com/pgquorum/pgquorum/conninfo"
)

// This file carries out the actions decide chooses. Each one re-checks what it
// relies on just before it changes anything (a server that is not running, the
// primary answering as a primary), and records in memory and result what the
// next decision and the caller need to know.

// execute carries out a, decided on view. m and res are the caller's.
func (h *host) execute(ctx context.Context, a action, view admin.ClusterView, m *memory, res *Result) error {
	switch a.Kind {
	case actNone, actWait:
		return nil
	case actStartPrimary:
		return h.startPrimary(ctx)
	case actStartStandby:
		err := h.startStandby(ctx, view, a.Frozen, m)
		if err == nil {
			res.Started = true
		}
		return err
	case actStop:
		return h.stop(ctx, view, a.RewindNext, m)
	case actRewind:
		return h.rewindOnto(ctx, view, m, res)
	case actReclone:
		return h.recloneFrom(ctx, view, m, res)
	case actUnfence:
		unfenced, err := h.unfence(ctx)
		if err == nil && unfenced {
			res.Unfenced = true
		}
		return err
	}
	return fmt.Errorf("unknown action %v", a.Kind)
}

// ensureStopped cleans up after a killed server (stale lock files) and reports
// whether a server runs after all.
func (h *host) ensureStopped(ctx context.Context) (running bool, err error) {
	settings, _ := h.settings()
	port, _ := localPort(settings)
	return h.pg.serverRunning(ctx, socketDirs(settings), port, h.opts.StopTimeout)
}

// startPrimary starts the data directory as it is. decide chose it for the
// agreed primary, the old primary of a blocked failover, or a cluster that was
// never bootstrapped.
func (h *host) startPrimary(ctx context.Context) error {
	running, err := h.ensureStopped(ctx)
	if err != nil || running {
		return err
	}
	if err := h.restoreKeptConfigFiles(h.dataDir); err != nil {
		return err
	}
	h.logger.Info("starting PostgreSQL as it is", "log", h.opts.ServerLog)
	if err := h.pg.startServer(ctx, h.opts.ServerLog, h.opts.StartTimeout); err != nil {
		return fmt.Errorf("start %s: %w", h.node, err)
	}
	return nil
}

// startStandby writes standby.signal and primary_conninfo (the agreed
// primary's, or empty when frozen), then starts the server.
func (h *host) startStandby(ctx context.Context, view admin.ClusterView, frozen bool, m *memory) error {
	running, err := h.ensureStopped(ctx)
	if err != nil || running {
		return err
	}
	if err := h.restoreKeptConfigFiles(h.dataDir); err != nil {
		return err
	}
	var replication conninfo.Params
	if !frozen {
		_, address, err := primaryOf(view)
		if err != nil {
			return err
		}
		settings, _ := h.settings()
		if replication, err = h.replicationParams(ctx, view, address, settings); err != nil {
			return err
		}
	}
	if err := h.configureStandby(h.dataDir, replication); err != nil {
		return err
	}
	h.logger.Info("starting PostgreSQL as a standby", "frozen", frozen, "primary_conninfo", redacted(replication), "log", h.opts.ServerLog)
	if err := h.pg.startServer(ctx, h.opts.ServerLog, h.opts.StartTimeout); err != nil {
		return fmt.Errorf("start %s as a standby: %w", h.node, err)
	}
	if !frozen {
		m.StartedStandby = true
		m.NotStreamingSince = time.Time{}
	}
	return nil
}

// stop stops the local server, after checking that the agreed primary answers
// as a primary (a node is never taken down with nowhere to go).
func (h *host) stop(ctx context.Context, view admin.ClusterView, rewindNext bool, m *memory) error {
	primary, address, err := primaryOf(view)
	if err != nil {
		return err
	}
	if err := h.checkPrimary(ctx, primary, address); err != nil {
		return err
	}
	h.logger.Info("stopping the local PostgreSQL server")
	if err := h.pg.stopServer(ctx, h.opts.StopTimeout); err != nil {
		return fmt.Errorf("stop the local PostgreSQL server: %w", err)
	}
	if rewindNext {
		m.RewindNeeded = true
	}
	return nil
}

// rewindOnto rewinds the stopped node onto the agreed primary and makes it its
// standby (standby.signal at once after pg_rewind: see controldata.go for why
// that order is what makes a rewind resumable).
func (h *host) rewindOnto(ctx context.Context, view admin.ClusterView, m *memory, res *Result) error {
	primary, address, err := primaryOf(view)
	if err != nil {
		return err
	}
	if running, err := h.ensureStopped(ctx); err != nil {
		return err
	} else if running {
		return errors.New("a server runs in the data directory: not rewinding it")
	}
	if err := h.checkPrimary(ctx, primary, address); err != nil {
		return err
	}
	// A kept set means an earlier pg_rewind may have run: the data directory's
	// files may be the primary's. Put ours back before reading them.
	if err := h.restoreKeptConfigFiles(h.dataDir); err != nil {
		return err
	}
	settings, err := h.settings()
	if err != nil {
		return &RewindError{DataDir: h.dataDir, Primary: primary, Err: err,
			Reason: "its configuration cannot be read (" + err.Error() + ")"}
	}
	replication, err := h.replicationParams(ctx, view, address, settings)
	if err != nil {
		return err
	}
	if err := h.ensureCleanStandby(ctx); err != nil {
		return err
	}
	if err := h.keepConfigFiles(); err != nil {
		return err
	}
	if err := h.checkpointIfPromoted(ctx, primary, address); err != nil {
		return errors.Join(err, h.restoreKeptConfigFiles(h.dataDir))
	}
	h.logger.Info("rewinding onto the primary with pg_rewind", "primary", primary, "log", h.opts.ServerLog)
	if err := h.rewind(ctx, primary, address, settings); err != nil {
		var rewindErr *RewindError
		if errors.As(err, &rewindErr) {
			m.RewindFailed = rewindErr.Reason
			// pg_rewind may have copied the primary's files over ours before failing.
			return errors.Join(err, h.restoreKeptConfigFiles(h.dataDir))
		}
		// Left running: the next run puts the files back once it is done.
		return err
	}
	if err := h.restoreKeptConfigFiles(h.dataDir); err != nil {
		return err
	}
	if err := h.configureStandby(h.dataDir, replication); err != nil {
		return err
	}
	h.logger.Info("configured as a standby", "primary_conninfo", replication.Redacted())
	m.Rewound, m.RewindNeeded, m.StartedStandby = true, false, false
	res.Method = "rewind"
	return nil
}

// recloneFrom copies the agreed primary into the data directory's place.
func (h *host) recloneFrom(ctx context.Context, view admin.ClusterView, m *memory, res *Result) error {
	primary, address, err := primaryOf(view)
	if err != nil {
		return err
	}
	if fileExists(h.dataDir) {
		if running, err := h.ensureStopped(ctx); err != nil {
			return err
		} else if running {
			return errors.New("a server runs in the data directory: not re-cloning it")
		}
	}
	if err := h.checkPrimary(ctx, primary, address); err != nil {
		return err
	}
	if fileExists(h.dataDir) {
		if err := h.restoreKeptConfigFiles(h.dataDir); err != nil {
			return err
		}
	}
	settings, _ := h.settings()
	replication, err := h.replicationParams(ctx, view, address, settings)
	if err != nil {
		return err
	}
	aside, err := h.reclone(ctx, primary, address, replication)
	if err != nil {
		return err
	}
	if aside != "" {
		res.OldDataDir = aside
	}
	m.Recloned, m.RewindFailed, m.RewindNeeded, m.StartedStandby = true, "", false, false
	res.Method = "reclone"
	return nil
}

// unfence asks the admin API to lift the node's fence. The API verifies on its
// own that the node streams; while its health view has not caught up it answers
// 409, which is retried until StreamTimeout.
func (h *host) unfence(ctx context.Context) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, h.opts.StreamTimeout)
	defer cancel()
	for {
		res, err := h.admin.rejoin(ctx, h.node, false)
		if err == nil {
			if res.Unfenced {
				h.logger.Info("unfenced: the cluster counts the node as a standby again", "primary", res.Primary, "epoch", res.Epoch)
			}
			return res.Unfenced, nil
		}
		var apiErr *admin.APIError
		retry := errors.As(err, &apiErr) && (apiErr.Status == http.StatusConflict ||
			apiErr.Status == http.StatusServiceUnavailable || apiErr.Status == http.StatusGatewayTimeout)
		switch {
		case isUnauthorized(err):
			return false, fmt.Errorf("%w: unfence %s: %w (pass the cluster's admin token: --token-file or --token)", ErrAdmin, h.node, err)
		case errors.As(err, &apiErr) && apiErr.Status == http.StatusNotFound:
			return false, fmt.Errorf("%w: unfence %s: %w (is %s configured there? a pgquorum node without POST /rejoin needs an upgrade)",
				ErrAdmin, h.node, err, h.node)
		case !retry && apiErr != nil:
			return false, fmt.Errorf("%w: unfence %s: %w", ErrAdmin, h.node, err)
		}
		h.logger.Info("the admin API does not unfence the node yet; retrying", "reason", err)
		select {
		case <-ctx.Done():
			return false, fmt.Errorf("%w: unfence %s: %w (the node streams, but the admin API did not confirm it within %v)",
				ErrAdmin, h.node, err, h.opts.StreamTimeout)
		case <-time.After(time.Second):
		}
	}
}

func redacted(p conninfo.Params) string {
	if p == nil {
		return "''"
	}
	return p.Redacted()
}
