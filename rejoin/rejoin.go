package rejoin

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/pgquorum/pgquorum/admin"
	"github.com/pgquorum/pgquorum/conninfo"
)

// rejoiner is one run of Run. It is used by Run's goroutine only.
type rejoiner struct {
	opts    Options
	dataDir string
	logger  *slog.Logger
	client  *admin.Client
	pg      *programs
}

// Run rejoins the node whose data directory is opts.PGData as a standby of the
// agreed primary (see the package doc for the steps). It refuses, changing
// nothing, when no primary is agreed, when the data directory is the primary's,
// or when it cannot tell which node the data directory is. A pg_rewind failure
// is a *RewindError: run again with Reclone.
func Run(ctx context.Context, opts Options) (Result, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return Result{}, err
	}
	r := &rejoiner{
		opts:    opts,
		dataDir: opts.PGData,
		logger:  opts.Logger,
		client:  admin.NewClient(opts.AdminURL, opts.Token),
	}
	return r.run(ctx)
}

func (r *rejoiner) run(ctx context.Context) (Result, error) {
	pg, err := newPrograms(r.opts.BinDir, r.dataDir, r.logger)
	if err != nil {
		return Result{}, err
	}
	r.pg = pg

	// 1-2. Which node is the primary, which node are we; never the primary.
	view, err := r.cluster(ctx)
	if err != nil {
		return Result{}, err
	}
	primary := view.Primary
	if primary == "" {
		reason := "no failover in progress"
		if f := view.Failover; f != nil {
			reason = fmt.Sprintf("a %s failover is in progress, next step %s", f.Kind, f.Next)
			if f.Blocked {
				reason += ", blocked: " + f.BlockedReason
			}
		}
		return Result{}, fmt.Errorf("%w (epoch %d; %s): rejoin needs a primary to follow; try again once `pgquorum list` shows one",
			ErrNoPrimary, view.Epoch, reason)
	}
	settings, settingsErr := readSettings(r.dataDir)
	name, err := r.identify(ctx, view, settings, settingsErr)
	if err != nil {
		return Result{}, err
	}
	if name == primary {
		return Result{}, fmt.Errorf("%w: %s (data directory %s) is the agreed primary at epoch %d", ErrIsPrimary, name, r.dataDir, view.Epoch)
	}
	address := nodeAddress(view, primary)
	if address == "" {
		return Result{}, fmt.Errorf("%w: the agreed primary %s has no configured address", ErrAdmin, primary)
	}
	log := r.logger.With("node", name, "primary", primary)
	log.Info("rejoining as a standby", "data_dir", r.dataDir, "primary_address", address, "epoch", view.Epoch,
		"fenced", slices.Contains(view.Fenced, name), "reclone", r.opts.Reclone)

	// 3. Checks that change nothing: the primary is a primary and not us; we
	// know how to replicate.
	if err := r.checkPrimary(ctx, primary, address); err != nil {
		return Result{}, err
	}
	replication, err := r.replicationParams(ctx, view, name, address, settings)
	if err != nil {
		return Result{}, err
	}
	if !r.opts.Reclone && settingsErr != nil {
		return Result{}, &RewindError{DataDir: r.dataDir, Primary: primary, Err: settingsErr,
			Reason: "its configuration cannot be read (" + settingsErr.Error() + ")"}
	}

	// 4. Stop the local server.
	port, _ := localPort(settings)
	running, err := r.pg.serverRunning(ctx, socketDirs(settings), port, r.opts.StopTimeout)
	if err != nil {
		return Result{}, err
	}
	if running {
		log.Info("stopping the local PostgreSQL server")
		if err := r.pg.stopServer(ctx, r.opts.StopTimeout); err != nil {
			return Result{}, fmt.Errorf("stop the local PostgreSQL server: %w", err)
		}
	}

	// 5. Onto the primary's timeline, keeping our own configuration files.
	saved, err := saveConfigFiles(r.dataDir)
	if err != nil {
		return Result{}, err
	}
	result := Result{Node: name, Primary: primary, Epoch: view.Epoch, Method: "rewind"}
	if r.opts.Reclone {
		result.Method = "reclone"
		if result.OldDataDir, err = r.reclone(ctx, primary, address, replication); err != nil {
			return Result{}, err
		}
	} else {
		if err := r.checkpointIfPromoted(ctx, primary, address); err != nil {
			return Result{}, err
		}
		if err := r.rewind(ctx, primary, address, settings); err != nil {
			// pg_rewind may have copied the primary's files over ours before failing.
			return Result{}, errors.Join(err, r.restoreConfigFiles(saved))
		}
	}
	if err := r.restoreConfigFiles(saved); err != nil {
		return Result{}, err
	}

	// 6. A standby of the primary.
	if err := r.configureStandby(replication); err != nil {
		return Result{}, err
	}
	log.Info("configured as a standby", "primary_conninfo", replication.Redacted())

	// 7. Start and wait until it streams.
	log.Info("starting PostgreSQL", "log", r.opts.ServerLog)
	if err := r.pg.startServer(ctx, r.opts.ServerLog, r.opts.StartTimeout); err != nil {
		return Result{}, fmt.Errorf("start %s as a standby: %w", name, err)
	}
	if err := r.waitStreaming(ctx, primary, address, name, r.opts.StreamTimeout); err != nil {
		return Result{}, r.explainNotStreaming(ctx, err, primary)
	}
	log.Info("streaming from the primary")

	// 8. Lift the fence.
	unfenced, err := r.unfence(ctx, name)
	if err != nil {
		return Result{}, err
	}
	result.Unfenced = unfenced
	log.Info("rejoined", "unfenced", unfenced, "method", result.Method)
	return result, nil
}

// cluster fetches GET /cluster.
func (r *rejoiner) cluster(ctx context.Context) (admin.ClusterView, error) {
	cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	view, err := r.client.Cluster(cctx)
	if err != nil {
		return admin.ClusterView{}, fmt.Errorf("%w: %w", ErrAdmin, err)
	}
	return view, nil
}

// socketDirs are the server's unix socket directories (PostgreSQL's defaults
// when unset: /tmp upstream, /var/run/postgresql on Debian).
func socketDirs(settings map[string]string) []string {
	value, ok := settings["unix_socket_directories"]
	if !ok {
		return []string{"/tmp", "/var/run/postgresql"}
	}
	var dirs []string
	for _, d := range strings.Split(value, ",") {
		if d = strings.TrimSpace(d); d != "" && !strings.HasPrefix(d, "@") {
			dirs = append(dirs, d)
		}
	}
	return dirs
}

func nodeAddress(view admin.ClusterView, name string) string {
	for _, n := range view.Nodes {
		if n.Name == name {
			return n.Address
		}
	}
	return ""
}

// replicationParams returns the new primary_conninfo of node: host and port of
// the primary, application_name = node, and the credentials from (in order) the
// options, the node's previous primary_conninfo, another standby's
// primary_conninfo, or the role other standbys stream as.
func (r *rejoiner) replicationParams(ctx context.Context, view admin.ClusterView, node, address string, settings map[string]string) (conninfo.Params, error) {
	host, port, err := net.SplitHostPort(address)
	if err != nil {
		return nil, fmt.Errorf("primary address %q: %w", address, err)
	}
	build := func(template conninfo.Params, source string) conninfo.Params {
		params := conninfo.Standby(template, host, port, node, r.opts.ReplicationUser, r.opts.ReplicationPassword)
		if _, ok := params.Get("sslmode"); !ok && r.opts.SSLMode != "" {
			params = params.With("sslmode", r.opts.SSLMode)
		}
		r.logger.Debug("replication credentials", "from", source, "conninfo", params.Redacted())
		return params
	}
	if own := settings["primary_conninfo"]; own != "" {
		if template, err := conninfo.Parse(own); err == nil {
			if _, ok := template.Get("user"); ok || r.opts.ReplicationUser != "" {
				return build(template, "this node's previous primary_conninfo"), nil
			}
		}
	}
	if r.opts.ReplicationUser != "" {
		return build(nil, "options"), nil
	}
	for _, n := range view.Nodes {
		if n.Name == node || n.Name == view.Primary {
			continue
		}
		other, err := r.standbyConninfo(ctx, n.Address)
		if err != nil {
			r.logger.Debug("cannot read another standby's primary_conninfo", "standby", n.Name, "err", err)
			continue
		}
		template, err := conninfo.Parse(other)
		if err != nil || other == "" {
			continue
		}
		if _, ok := template.Get("user"); ok {
			return build(template, "the primary_conninfo of "+n.Name), nil
		}
	}
	user, err := r.replicationUserOnPrimary(ctx, address, node)
	if err == nil && user != "" {
		return build(conninfo.Params{{Key: "user", Value: user}}, "the role other standbys stream as"), nil
	}
	return nil, errors.New("no replication credentials known: this node has no primary_conninfo, no other standby's can be read " +
		"and no standby streams from the primary; pass --replication-user (and --replication-password-file)")
}

// configureStandby writes standby.signal and the new primary_conninfo, and drops
// a read-only fence a switchover left in postgresql.auto.conf.
func (r *rejoiner) configureStandby(replication conninfo.Params) error {
	if err := os.Remove(filepath.Join(r.dataDir, "recovery.signal")); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove recovery.signal: %w", err)
	}
	if err := r.pg.writeFile(filepath.Join(r.dataDir, "standby.signal"), nil, 0o600); err != nil {
		return err
	}
	autoConf := filepath.Join(r.dataDir, autoConfFile)
	old, err := os.ReadFile(autoConf)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("read %s: %w", autoConf, err)
	}
	return r.pg.writeFile(autoConf, []byte(standbyAutoConf(string(old), replication.String())), 0o600)
}

// explainNotStreaming adds what an operator needs to the streaming timeout: the
// primary may have changed meanwhile, and the server log may say why.
func (r *rejoiner) explainNotStreaming(ctx context.Context, err error, primary string) error {
	if view, cerr := r.cluster(ctx); cerr == nil && view.Primary != primary {
		return fmt.Errorf("%w: the primary changed from %s to %q meanwhile; run rejoin again", err, primary, view.Primary)
	}
	return fmt.Errorf("%w; the server runs as a standby but does not stream: see %s (if it reports a timeline or missing WAL error, "+
		"re-clone with `pgquorum rejoin --pgdata %s --reclone`)", err, r.opts.ServerLog, r.dataDir)
}

// unfence asks the admin API to lift the node's fence. The API verifies on its
// own that the node streams; while its health view has not caught up it answers
// 409, which is retried until StreamTimeout.
func (r *rejoiner) unfence(ctx context.Context, node string) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, r.opts.StreamTimeout)
	defer cancel()
	for {
		res, err := r.client.Rejoin(ctx, node)
		if err == nil {
			return res.Unfenced, nil
		}
		var apiErr *admin.APIError
		retry := errors.As(err, &apiErr) && (apiErr.Status == http.StatusConflict ||
			apiErr.Status == http.StatusServiceUnavailable || apiErr.Status == http.StatusGatewayTimeout)
		switch {
		case errors.As(err, &apiErr) && apiErr.Status == http.StatusNotFound:
			return false, fmt.Errorf("%w: unfence %s: %w (is %s configured there? a pgquorum node without POST /rejoin needs an upgrade)",
				ErrAdmin, node, err, node)
		case !retry:
			return false, fmt.Errorf("%w: unfence %s: %w", ErrAdmin, node, err)
		}
		r.logger.Info("the admin API does not unfence the node yet; retrying", "reason", err)
		select {
		case <-ctx.Done():
			return false, fmt.Errorf("%w: unfence %s: %w (the node streams, but the admin API did not confirm it within %v)",
				ErrAdmin, node, err, r.opts.StreamTimeout)
		case <-time.After(time.Second):
		}
	}
}
