package rejoin

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgquorum/pgquorum/admin"
	"github.com/pgquorum/pgquorum/conninfo"
)

// This file works out the primary_conninfo a standby streams with, and checks
// that it can: a replication connection to the primary that runs
// IDENTIFY_SYSTEM proves the role, its REPLICATION attribute, the password and
// pg_hba.conf all at once, before anything is stopped.

// replicationParams returns the new primary_conninfo of the node: host and port
// of the primary at address, application_name = the node, and the credentials
// from (in order) the options, the node's previous primary_conninfo, another
// standby's primary_conninfo, or the role other standbys stream as.
func (h *host) replicationParams(ctx context.Context, view admin.ClusterView, address string, settings map[string]string) (conninfo.Params, error) {
	host, port, err := net.SplitHostPort(address)
	if err != nil {
		return nil, fmt.Errorf("primary address %q: %w", address, err)
	}
	build := func(template conninfo.Params, source string) conninfo.Params {
		params := conninfo.Standby(template, host, port, h.node, h.opts.ReplicationUser, h.opts.ReplicationPassword)
		if _, ok := params.Get("sslmode"); !ok && h.opts.SSLMode != "" {
			params = params.With("sslmode", h.opts.SSLMode)
		}
		if _, ok := params.Get("sslrootcert"); !ok && h.opts.SSLRootCert != "" {
			params = params.With("sslrootcert", h.opts.SSLRootCert)
		}
		h.logger.Debug("replication credentials", "from", source, "conninfo", params.Redacted())
		return params
	}
	if own := settings["primary_conninfo"]; own != "" {
		if template, err := conninfo.Parse(own); err == nil {
			if _, ok := template.Get("user"); ok || h.opts.ReplicationUser != "" {
				return build(template, "this node's previous primary_conninfo"), nil
			}
		}
	}
	if h.opts.ReplicationUser != "" {
		return build(nil, "options"), nil
	}
	for _, n := range view.Nodes {
		if n.Name == h.node || n.Name == view.Primary {
			continue
		}
		other, err := h.standbyConninfo(ctx, n.Address)
		if err != nil {
			h.logger.Debug("cannot read another standby's primary_conninfo", "standby", n.Name, "err", err)
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
	user, err := h.replicationUserOnPrimary(ctx, address, h.node)
	if err == nil && user != "" {
		return build(conninfo.Params{{Key: "user", Value: user}}, "the role other standbys stream as"), nil
	}
	return nil, errors.New("no replication credentials known: this node has no primary_conninfo, no other standby's can be read " +
		"and no standby streams from the primary; pass --replication-user (and --replication-password-file)")
}

// checkReplication opens a replication connection to the primary with the
// standby's credentials and runs IDENTIFY_SYSTEM. It returns the primary's
// system identifier.
func (h *host) checkReplication(ctx context.Context, primary string, replication conninfo.Params) (string, error) {
	// Never under the node's own application_name: a walsender named like the
	// node must not look like the node streaming.
	params := replication.With("application_name", "pgquorum-rejoin-check").With("replication", "true").
		With("connect_timeout", "10")
	if _, ok := params.Get("passfile"); !ok && h.pg.home != "" && fileExists(filepath.Join(h.pg.home, ".pgpass")) {
		// The walreceiver runs as the data directory's owner and reads its ~/.pgpass.
		params = params.With("passfile", filepath.Join(h.pg.home, ".pgpass"))
	}
	cfg, err := pgconn.ParseConfig(params.String())
	if err != nil {
		return "", fmt.Errorf("replication connection string %s: %w", params.Redacted(), err)
	}
	cctx, cancel := context.WithTimeout(ctx, connectTimeout)
	defer cancel()
	conn, err := pgconn.ConnectConfig(cctx, cfg)
	if err != nil {
		return "", &replicationError{Primary: primary, Conninfo: replication.Redacted(), Err: err}
	}
	defer conn.Close(context.WithoutCancel(ctx))
	results, err := conn.Exec(cctx, "IDENTIFY_SYSTEM").ReadAll()
	if err != nil {
		return "", &replicationError{Primary: primary, Conninfo: replication.Redacted(), Err: err}
	}
	if len(results) != 1 || len(results[0].Rows) != 1 || len(results[0].Rows[0]) < 1 {
		return "", fmt.Errorf("IDENTIFY_SYSTEM on the primary %s: unexpected answer", primary)
	}
	return string(results[0].Rows[0][0]), nil
}

// replicationError says that the standby's credentials cannot stream from the primary.
type replicationError struct {
	Primary  string
	Conninfo string
	Err      error
}

func (e *replicationError) Error() string {
	return fmt.Sprintf("a standby cannot stream from the primary %s with primary_conninfo %s: %v "+
		"(the role needs the REPLICATION attribute, pg_hba.conf on the primary a \"host replication ROLE ADDRESS METHOD\" line, "+
		"and the password must come from --replication-password-file or a passfile)", e.Primary, e.Conninfo, e.Err)
}

func (e *replicationError) Unwrap() error { return e.Err }
