package rejoin

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgquorum/pgquorum/conninfo"
)

// This file holds what rejoin asks the primary (and, to learn replication
// credentials, another standby) over SQL. Nothing here changes a node except the
// CHECKPOINT that pg_rewind needs after a promotion.

// connectTimeout bounds one connection attempt and one query.
const connectTimeout = 10 * time.Second

// superuserConninfo is the connection string rejoin uses for host:port as the
// source superuser (without the password: pgx gets it separately, pg_rewind
// through PGPASSWORD, so it never shows up in a process list).
func (h *host) superuserConninfo(host, port string) conninfo.Params {
	params := conninfo.Params{
		{Key: "host", Value: host},
		{Key: "port", Value: port},
		{Key: "user", Value: h.opts.SourceUser},
		{Key: "dbname", Value: h.opts.SourceDatabase},
		{Key: "application_name", Value: "pgquorum-rejoin"},
		{Key: "connect_timeout", Value: strconv.Itoa(int(connectTimeout / time.Second))},
	}
	if h.opts.SSLMode != "" {
		params = append(params, conninfo.Param{Key: "sslmode", Value: h.opts.SSLMode})
	}
	if h.opts.SSLRootCert != "" {
		params = append(params, conninfo.Param{Key: "sslrootcert", Value: h.opts.SSLRootCert})
	}
	return params
}

// connect opens a SQL connection to host:port as the source superuser.
func (h *host) connect(ctx context.Context, address string) (*pgx.Conn, error) {
	host, port, err := net.SplitHostPort(address)
	if err != nil {
		return nil, fmt.Errorf("bad address %q: %w", address, err)
	}
	cfg, err := pgx.ParseConfig(h.superuserConninfo(host, port).String())
	if err != nil {
		return nil, err
	}
	cfg.Password = h.opts.SourcePassword
	ctx, cancel := context.WithTimeout(ctx, connectTimeout)
	defer cancel()
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connect to %s as %s: %w", address, h.opts.SourceUser, err)
	}
	return conn, nil
}

// checkPrimary verifies that the agreed primary answers as a primary and that
// the data directory being rejoined is not its own (never rewind the primary).
func (h *host) checkPrimary(ctx context.Context, name, address string) error {
	conn, err := h.connect(ctx, address)
	if err != nil {
		return fmt.Errorf("the agreed primary %s: %w (check --source-user/--source-password-file and pg_hba.conf on it)", name, err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	qctx, cancel := context.WithTimeout(ctx, connectTimeout)
	defer cancel()
	var inRecovery bool
	var dataDirectory string
	err = conn.QueryRow(qctx, `SELECT pg_is_in_recovery(), current_setting('data_directory')`).Scan(&inRecovery, &dataDirectory)
	if err != nil {
		return fmt.Errorf("the agreed primary %s at %s: %w", name, address, err)
	}
	if inRecovery {
		return fmt.Errorf("the agreed primary %s at %s is in recovery, not a primary: wait until /cluster settles and try again", name, address)
	}
	host, _, _ := net.SplitHostPort(address)
	if isLocalHost(ctx, host) && sameDir(dataDirectory, h.dataDir) {
		return fmt.Errorf("%w: %s is the data directory of the running agreed primary %s", ErrIsPrimary, h.dataDir, name)
	}
	return nil
}

// sameDir reports whether a and b name the same directory.
func sameDir(a, b string) bool {
	if ra, err := filepath.EvalSymlinks(a); err == nil {
		a = ra
	}
	if rb, err := filepath.EvalSymlinks(b); err == nil {
		b = rb
	}
	return filepath.Clean(a) == filepath.Clean(b)
}

// checkpointIfPromoted runs CHECKPOINT on the primary when its control file
// still names an older timeline than the one it writes: right after a promotion,
// until the end-of-recovery checkpoint finishes. pg_rewind reads the source's
// timeline from the control file and would otherwise wrongly see no divergence.
func (h *host) checkpointIfPromoted(ctx context.Context, name, address string) error {
	conn, err := h.connect(ctx, address)
	if err != nil {
		return fmt.Errorf("the agreed primary %s: %w", name, err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var walFile string
	var checkpointTimeline uint32
	qctx, cancel := context.WithTimeout(ctx, connectTimeout)
	defer cancel()
	err = conn.QueryRow(qctx, `SELECT pg_walfile_name(pg_current_wal_lsn()), (SELECT timeline_id FROM pg_control_checkpoint())`).
		Scan(&walFile, &checkpointTimeline)
	if err != nil {
		return fmt.Errorf("timeline of the primary %s: %w", name, err)
	}
	if len(walFile) < 8 {
		return fmt.Errorf("timeline of the primary %s: unexpected WAL file name %q", name, walFile)
	}
	current, err := strconv.ParseUint(walFile[:8], 16, 32)
	if err != nil {
		return fmt.Errorf("timeline of the primary %s: WAL file name %q: %w", name, walFile, err)
	}
	if uint32(current) == checkpointTimeline {
		return nil
	}
	h.logger.Info("the primary's last checkpoint predates its promotion: running CHECKPOINT so that pg_rewind sees its timeline",
		"primary", name, "timeline", current, "checkpoint_timeline", checkpointTimeline)
	cctx, cancel := context.WithTimeout(ctx, h.opts.StartTimeout)
	defer cancel()
	if _, err := conn.Exec(cctx, "CHECKPOINT"); err != nil {
		return fmt.Errorf("CHECKPOINT on the primary %s: %w", name, err)
	}
	return nil
}

// standbyConninfo returns the primary_conninfo of a running standby (SHOW needs
// a superuser or pg_read_all_settings), "" when it has none.
func (h *host) standbyConninfo(ctx context.Context, address string) (string, error) {
	conn, err := h.connect(ctx, address)
	if err != nil {
		return "", err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	qctx, cancel := context.WithTimeout(ctx, connectTimeout)
	defer cancel()
	var inRecovery bool
	var conninfo string
	if err := conn.QueryRow(qctx, `SELECT pg_is_in_recovery(), current_setting('primary_conninfo')`).Scan(&inRecovery, &conninfo); err != nil {
		return "", err
	}
	if !inRecovery {
		return "", nil
	}
	return conninfo, nil
}

// replicationUserOnPrimary returns the role of a walsender that streams to a
// standby other than node, "" when there is none.
func (h *host) replicationUserOnPrimary(ctx context.Context, address, node string) (string, error) {
	conn, err := h.connect(ctx, address)
	if err != nil {
		return "", err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	qctx, cancel := context.WithTimeout(ctx, connectTimeout)
	defer cancel()
	var user string
	err = conn.QueryRow(qctx, `SELECT usename FROM pg_stat_replication
		WHERE state = 'streaming' AND application_name <> $1 AND usename IS NOT NULL
		ORDER BY application_name LIMIT 1`, node).Scan(&user)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", nil
	}
	return user, err
}

// isLocalHost reports whether host (a name or an address) is this machine.
func isLocalHost(ctx context.Context, host string) bool {
	if host == "localhost" {
		return true
	}
	var ips []net.IP
	if ip := net.ParseIP(host); ip != nil {
		ips = []net.IP{ip}
	} else {
		lctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		addrs, err := net.DefaultResolver.LookupIPAddr(lctx, host)
		if err != nil {
			return false
		}
		for _, a := range addrs {
			ips = append(ips, a.IP)
		}
	}
	local, err := net.InterfaceAddrs()
	if err != nil {
		return false
	}
	for _, ip := range ips {
		if ip.IsLoopback() || ip.IsUnspecified() {
			return true
		}
		for _, a := range local {
			if n, ok := a.(*net.IPNet); ok && n.IP.Equal(ip) {
				return true
			}
		}
	}
	return false
}

// primaryPrereq asks the primary how much WAL it keeps for standbys, and
// whether it has a replication slot named slot ("" = none asked).
func (h *host) primaryPrereq(ctx context.Context, name, address, slot string) (primaryPrereq, error) {
	conn, err := h.connect(ctx, address)
	if err != nil {
		return primaryPrereq{}, fmt.Errorf("the agreed primary %s: %w", name, err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	qctx, cancel := context.WithTimeout(ctx, connectTimeout)
	defer cancel()
	p := primaryPrereq{Name: name}
	err = conn.QueryRow(qctx, `SELECT current_setting('wal_keep_size'),
		EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1 AND slot_type = 'physical')`, slot).
		Scan(&p.WalKeepSize, &p.SlotExists)
	if err != nil {
		return primaryPrereq{}, fmt.Errorf("the agreed primary %s: %w", name, err)
	}
	return p, nil
}
