package coordinator

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgquorum/pgquorum/health"
)

// Postgres is what the coordinator does to PostgreSQL nodes, named by their
// configured backend names. Every method is idempotent (calling it again after a
// crash at any point is safe and ends in the same place) and bounded by ctx.
// SQLActions is the real implementation; tests of the decision logic use fakes.
type Postgres interface {
	// FreezeStandby captures primary_conninfo, sets it to '' (ALTER SYSTEM +
	// pg_reload_conf) and waits until pg_stat_wal_receiver is empty, then reads
	// the standby's position. A node that is not in recovery is left alone and
	// reported with InRecovery false.
	FreezeStandby(ctx context.Context, node string) (StandbyPosition, error)
	// WaitReceived waits until a standby's WAL reaches lsn (the greater of
	// pg_last_wal_receive_lsn() and pg_last_wal_replay_lsn()) and returns how
	// far it got, also when it fails because ctx ended first.
	WaitReceived(ctx context.Context, node string, lsn health.LSN) (health.LSN, error)
	// Promote sets synchronous_standby_names (ALTER SYSTEM + reload) and
	// promotes the standby, returning once it accepts writes. A node that is
	// already a primary only gets the setting. It returns the new timeline and,
	// when it promoted the node itself, its transaction id horizon (Promoted).
	Promote(ctx context.Context, node, syncStandbyNames string) (Promoted, error)
	// PrimaryConninfo returns SHOW primary_conninfo.
	PrimaryConninfo(ctx context.Context, node string) (string, error)
	// SetPrimaryConninfo sets primary_conninfo (ALTER SYSTEM + reload) unless it
	// already has that value. With onlyIfFrozen it changes only a standby whose
	// primary_conninfo is '' (undoing a freeze) and reports changed=false
	// otherwise. The node must be in recovery.
	SetPrimaryConninfo(ctx context.Context, node, conninfo string, onlyIfFrozen bool) (changed bool, err error)
	// MakeReadOnly fences a primary for a switchover: default_transaction_read_only
	// = on (ALTER SYSTEM + reload), waits up to grace for transactions that
	// wrote something to finish, terminates every other client backend (not
	// walsenders), and returns pg_current_wal_lsn() afterwards.
	MakeReadOnly(ctx context.Context, node string, grace time.Duration) (health.LSN, error)
	// MakeReadWrite undoes MakeReadOnly: ALTER SYSTEM RESET
	// default_transaction_read_only + reload.
	MakeReadWrite(ctx context.Context, node string) error
}

// StandbyPosition is what FreezeStandby saw.
type StandbyPosition struct {
	// InRecovery is false when the node is a primary (nothing was changed).
	InRecovery bool
	// PreviousConninfo is primary_conninfo before this freeze. When the standby
	// was already frozen (by a leader that crashed before recording it), it is
	// the latest non-empty primary_conninfo in the server's configuration files
	// (pg_file_settings), or "" when there is none. It may contain a password:
	// never log it.
	PreviousConninfo string
	Timeline         uint32
	ReceiveLSN       health.LSN // pg_last_wal_receive_lsn(); on a primary pg_current_wal_lsn()
	ReplayLSN        health.LSN
}

// SQLActions implements Postgres over SQL, one short connection per action, as a
// superuser (ALTER SYSTEM, pg_promote, SHOW primary_conninfo and
// pg_terminate_backend of other roles need it). It holds no state between calls
// and is safe for concurrent use.
type SQLActions struct {
	// Addresses maps backend names to host:port.
	Addresses map[string]string
	// ConnString returns the libpq connection string for the superuser at an address.
	ConnString func(address string) string
	// PollInterval is how often a wait re-checks (WAL receiver stopped, promotion
	// done, setting applied). Zero means 5ms.
	PollInterval time.Duration
}

const coordinatorApplicationName = "pgquorum-coordinator"

func (a *SQLActions) poll() time.Duration {
	if a.PollInterval > 0 {
		return a.PollInterval
	}
	return 5 * time.Millisecond
}

// connect opens a connection to node, bounded by ctx.
func (a *SQLActions) connect(ctx context.Context, node string) (*pgx.Conn, error) {
	address, ok := a.Addresses[node]
	if !ok {
		return nil, fmt.Errorf("unknown node %q", node)
	}
	cfg, err := pgx.ParseConfig(a.ConnString(address))
	if err != nil {
		return nil, fmt.Errorf("connection string for %s: %w", node, err)
	}
	cfg.Fallbacks = nil
	if cfg.RuntimeParams["application_name"] == "" {
		cfg.RuntimeParams["application_name"] = coordinatorApplicationName
	}
	// Simple protocol: no prepared statements to set up, one round trip each.
	cfg.DefaultQueryExecMode = pgx.QueryExecModeSimpleProtocol
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", node, err)
	}
	return conn, nil
}

// withConn runs f on a fresh connection to node and closes it (bounded) after.
func (a *SQLActions) withConn(ctx context.Context, node string, f func(*pgx.Conn) error) error {
	conn, err := a.connect(ctx, node)
	if err != nil {
		return err
	}
	defer func() {
		closeCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
		defer cancel()
		_ = conn.Close(closeCtx)
	}()
	if err := f(conn); err != nil {
		return fmt.Errorf("%s: %w", node, err)
	}
	return nil
}

// alterSystem runs ALTER SYSTEM SET name = value (RESET when value is nil) and reloads.
func alterSystem(ctx context.Context, conn *pgx.Conn, name string, value *string) error {
	stmt := "ALTER SYSTEM RESET " + name
	if value != nil {
		stmt = "ALTER SYSTEM SET " + name + " = " + quoteLiteral(*value)
	}
	if _, err := conn.Exec(ctx, stmt); err != nil {
		return fmt.Errorf("ALTER SYSTEM %s: %w", name, err)
	}
	if _, err := conn.Exec(ctx, "SELECT pg_reload_conf()"); err != nil {
		return fmt.Errorf("pg_reload_conf: %w", err)
	}
	return nil
}

// quoteLiteral quotes a SQL string literal whatever standard_conforming_strings is.
func quoteLiteral(v string) string {
	if strings.Contains(v, `\`) {
		return "E'" + strings.NewReplacer(`\`, `\\`, `'`, `''`).Replace(v) + "'"
	}
	return "'" + strings.ReplaceAll(v, "'", "''") + "'"
}

// waitUntil polls check every interval until it reports done, fails, or ctx ends.
func waitUntil(ctx context.Context, interval time.Duration, what string, check func() (bool, error)) error {
	for {
		done, err := check()
		if err != nil {
			return err
		}
		if done {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting until %s: %w", what, ctx.Err())
		case <-time.After(interval):
		}
	}
}

func parseLSNText(s *string) (health.LSN, error) {
	if s == nil {
		return 0, nil
	}
	return health.ParseLSN(*s)
}

// walFileTimeline reads the timeline from a WAL segment file name (its first 8 hex digits).
func walFileTimeline(name *string) uint32 {
	if name == nil || len(*name) < 8 {
		return 0
	}
	tli, err := strconv.ParseUint((*name)[:8], 16, 32)
	if err != nil {
		return 0
	}
	return uint32(tli)
}

// FreezeStandby implements Postgres.
func (a *SQLActions) FreezeStandby(ctx context.Context, node string) (StandbyPosition, error) {
	var pos StandbyPosition
	err := a.withConn(ctx, node, func(conn *pgx.Conn) error {
		var mayListWAL bool
		if err := conn.QueryRow(ctx, `SELECT pg_is_in_recovery(), current_setting('primary_conninfo'),
			has_function_privilege('pg_ls_waldir()', 'EXECUTE')`).Scan(&pos.InRecovery, &pos.PreviousConninfo, &mayListWAL); err != nil {
			return fmt.Errorf("read role: %w", err)
		}
		if !pos.InRecovery {
			pos.PreviousConninfo = ""
			return readPrimaryPosition(ctx, conn, &pos)
		}
		if pos.PreviousConninfo != "" {
			empty := ""
			if err := alterSystem(ctx, conn, "primary_conninfo", &empty); err != nil {
				return err
			}
		} else {
			pos.PreviousConninfo = configuredConninfo(ctx, conn)
		}
		err := waitUntil(ctx, a.poll(), "the WAL receiver stopped", func() (bool, error) {
			var receivers int
			if err := conn.QueryRow(ctx, "SELECT count(*) FROM pg_stat_wal_receiver").Scan(&receivers); err != nil {
				return false, fmt.Errorf("read pg_stat_wal_receiver: %w", err)
			}
			return receivers == 0, nil
		})
		if err != nil {
			return err
		}
		return readStandbyPosition(ctx, conn, mayListWAL, &pos)
	})
	return pos, err
}

// configuredConninfo returns the latest non-empty primary_conninfo in the server's
// configuration files, "" when there is none or it cannot be read.
func configuredConninfo(ctx context.Context, conn *pgx.Conn) string {
	var conninfo string
	err := conn.QueryRow(ctx, `SELECT setting FROM pg_file_settings
		WHERE name = 'primary_conninfo' AND setting <> '' AND error IS NULL
		ORDER BY seqno DESC LIMIT 1`).Scan(&conninfo)
	if err != nil {
		return ""
	}
	return conninfo
}

// readStandbyPosition reads a standby's LSNs and timeline. The timeline is the
// greatest of the last checkpoint's and the newest WAL segment file's, as package
// health computes it for a standby whose WAL receiver is stopped.
func readStandbyPosition(ctx context.Context, conn *pgx.Conn, mayListWAL bool, pos *StandbyPosition) error {
	newestFile := "NULL::text"
	if mayListWAL {
		newestFile = `(SELECT max(name) FROM pg_ls_waldir() WHERE name ~ '^[0-9A-F]{24}$')`
	}
	var receive, replay, file *string
	var checkpointTimeline *int64
	err := conn.QueryRow(ctx, `SELECT pg_last_wal_receive_lsn()::text, pg_last_wal_replay_lsn()::text,
		(SELECT timeline_id FROM pg_control_checkpoint())::bigint, `+newestFile).Scan(&receive, &replay, &checkpointTimeline, &file)
	if err != nil {
		return fmt.Errorf("read position: %w", err)
	}
	if pos.ReceiveLSN, err = parseLSNText(receive); err != nil {
		return err
	}
	if pos.ReplayLSN, err = parseLSNText(replay); err != nil {
		return err
	}
	if checkpointTimeline != nil && *checkpointTimeline > 0 {
		pos.Timeline = uint32(*checkpointTimeline)
	}
	pos.Timeline = max(pos.Timeline, walFileTimeline(file))
	return nil
}

// readPrimaryPosition reads a primary's current LSN and timeline.
func readPrimaryPosition(ctx context.Context, conn *pgx.Conn, pos *StandbyPosition) error {
	var lsn, file *string
	if err := conn.QueryRow(ctx, `SELECT pg_current_wal_lsn()::text, pg_walfile_name(pg_current_wal_lsn())`).Scan(&lsn, &file); err != nil {
		return fmt.Errorf("read primary position: %w", err)
	}
	var err error
	pos.ReceiveLSN, err = parseLSNText(lsn)
	pos.Timeline = walFileTimeline(file)
	return err
}

// WaitReceived implements Postgres.
func (a *SQLActions) WaitReceived(ctx context.Context, node string, lsn health.LSN) (health.LSN, error) {
	var reached health.LSN
	err := a.withConn(ctx, node, func(conn *pgx.Conn) error {
		return waitUntil(ctx, a.poll(), fmt.Sprintf("the standby received %s", lsn), func() (bool, error) {
			var receive, replay *string
			if err := conn.QueryRow(ctx, `SELECT pg_last_wal_receive_lsn()::text, pg_last_wal_replay_lsn()::text`).Scan(&receive, &replay); err != nil {
				return false, fmt.Errorf("read received LSN: %w", err)
			}
			r, err := parseLSNText(receive)
			if err != nil {
				return false, err
			}
			p, err := parseLSNText(replay)
			if err != nil {
				return false, err
			}
			reached = max(r, p)
			return reached >= lsn, nil
		})
	})
	return reached, err
}

// Promote implements Postgres. It calls pg_promote(wait => false) and polls
// pg_is_in_recovery() every PollInterval itself: pg_promote's own wait checks only
// every 100 ms, which would add up to 100 ms to every failover.
func (a *SQLActions) Promote(ctx context.Context, node, syncStandbyNames string) (Promoted, error) {
	var out Promoted
	err := a.withConn(ctx, node, func(conn *pgx.Conn) error {
		var inRecovery bool
		var current string
		if err := conn.QueryRow(ctx, `SELECT pg_is_in_recovery(), current_setting('synchronous_standby_names')`).Scan(&inRecovery, &current); err != nil {
			return fmt.Errorf("read role: %w", err)
		}
		if current != syncStandbyNames {
			if err := alterSystem(ctx, conn, "synchronous_standby_names", &syncStandbyNames); err != nil {
				return err
			}
		}
		if inRecovery {
			horizon, err := readXidHorizon(ctx, conn, a.poll())
			if err != nil {
				return err
			}
			if _, err := conn.Exec(ctx, "SELECT pg_promote(false)"); err != nil && !isNotInRecovery(err) {
				return fmt.Errorf("pg_promote: %w", err)
			}
			err = waitUntil(ctx, a.poll(), "the promotion finished", func() (bool, error) {
				if err := conn.QueryRow(ctx, "SELECT pg_is_in_recovery()").Scan(&inRecovery); err != nil {
					return false, fmt.Errorf("read role: %w", err)
				}
				return !inRecovery, nil
			})
			if err != nil {
				return err
			}
			out.XidHorizon = horizon
		}
		var pos StandbyPosition
		if err := readPrimaryPosition(ctx, conn, &pos); err != nil {
			return err
		}
		out.Timeline = pos.Timeline
		return nil
	})
	return out, err
}

// Promoted is what a promotion tells about the new primary.
type Promoted struct {
	Timeline uint32
	// XidHorizon, when not 0, splits the new primary's transaction ids: every id
	// below it was assigned on the old timeline (its pg_xact_status is the old
	// transaction's outcome), and no transaction at or above it committed there
	// (clusterstate.State.PrimaryXidHorizon; the proxy resolves lost COMMITs
	// with it). It is 0 when this call did not promote the node itself (a
	// resumed promotion): then nothing is known.
	XidHorizon uint64
}

// readXidHorizon reads a frozen standby's transaction id horizon just before
// its promotion: once it has replayed all the WAL it received (the freeze
// stopped its WAL receiver), the xmax of its snapshot is one past the latest
// transaction that completed on the old timeline, and no transaction can start
// on it before the promotion (it is read-only), so every id the new primary
// assigns is at least that.
func readXidHorizon(ctx context.Context, conn *pgx.Conn, poll time.Duration) (uint64, error) {
	err := waitUntil(ctx, poll, "the standby replayed the WAL it received", func() (bool, error) {
		var caughtUp bool
		err := conn.QueryRow(ctx, `SELECT pg_last_wal_receive_lsn() IS NULL OR pg_last_wal_replay_lsn() >= pg_last_wal_receive_lsn()`).Scan(&caughtUp)
		return caughtUp, err
	})
	if err != nil {
		return 0, err
	}
	var horizon string
	if err := conn.QueryRow(ctx, `SELECT pg_snapshot_xmax(pg_current_snapshot())::text`).Scan(&horizon); err != nil {
		return 0, fmt.Errorf("read the transaction id horizon: %w", err)
	}
	return strconv.ParseUint(horizon, 10, 64)
}

// isNotInRecovery reports PostgreSQL's "recovery is not in progress" (55000): the
// node was promoted meanwhile.
func isNotInRecovery(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "55000"
}

// PrimaryConninfo implements Postgres.
func (a *SQLActions) PrimaryConninfo(ctx context.Context, node string) (string, error) {
	var conninfo string
	err := a.withConn(ctx, node, func(conn *pgx.Conn) error {
		if err := conn.QueryRow(ctx, `SELECT current_setting('primary_conninfo')`).Scan(&conninfo); err != nil {
			return fmt.Errorf("read primary_conninfo: %w", err)
		}
		return nil
	})
	return conninfo, err
}

// SetPrimaryConninfo implements Postgres.
func (a *SQLActions) SetPrimaryConninfo(ctx context.Context, node, conninfo string, onlyIfFrozen bool) (bool, error) {
	changed := false
	err := a.withConn(ctx, node, func(conn *pgx.Conn) error {
		var inRecovery bool
		var current string
		if err := conn.QueryRow(ctx, `SELECT pg_is_in_recovery(), current_setting('primary_conninfo')`).Scan(&inRecovery, &current); err != nil {
			return fmt.Errorf("read role: %w", err)
		}
		if !inRecovery {
			return errors.New("not a standby (not in recovery)")
		}
		if current == conninfo || (onlyIfFrozen && current != "") {
			return nil
		}
		if err := alterSystem(ctx, conn, "primary_conninfo", &conninfo); err != nil {
			return err
		}
		changed = true
		return nil
	})
	return changed, err
}

// MakeReadOnly implements Postgres.
func (a *SQLActions) MakeReadOnly(ctx context.Context, node string, grace time.Duration) (health.LSN, error) {
	var lsn health.LSN
	err := a.withConn(ctx, node, func(conn *pgx.Conn) error {
		var inRecovery bool
		if err := conn.QueryRow(ctx, "SELECT pg_is_in_recovery()").Scan(&inRecovery); err != nil {
			return fmt.Errorf("read role: %w", err)
		}
		if inRecovery {
			return errors.New("not a primary (in recovery)")
		}
		on := "on"
		if err := alterSystem(ctx, conn, "default_transaction_read_only", &on); err != nil {
			return err
		}
		// Our own backend applies the reload at a command boundary like every
		// other: once it sees "on", the postmaster has the new default too.
		err := waitUntil(ctx, a.poll(), "default_transaction_read_only is on", func() (bool, error) {
			var value string
			if err := conn.QueryRow(ctx, "SELECT current_setting('default_transaction_read_only')").Scan(&value); err != nil {
				return false, fmt.Errorf("read default_transaction_read_only: %w", err)
			}
			return value == "on", nil
		})
		if err != nil {
			return err
		}
		// Let transactions that already wrote something finish within grace.
		// The deadline is checked between queries: a query cancelled by a
		// context would close the connection.
		graceEnds := time.Now().Add(grace)
		err = waitUntil(ctx, max(a.poll(), 20*time.Millisecond), "writing transactions finished", func() (bool, error) {
			var writers int
			err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
				WHERE backend_type = 'client backend' AND pid <> pg_backend_pid() AND backend_xid IS NOT NULL`).Scan(&writers)
			return writers == 0 || !time.Now().Before(graceEnds), err
		})
		if err != nil {
			return err
		}
		if _, err := conn.Exec(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
			WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()`); err != nil {
			return fmt.Errorf("terminate client backends: %w", err)
		}
		var current *string
		if err := conn.QueryRow(ctx, "SELECT pg_current_wal_lsn()::text").Scan(&current); err != nil {
			return fmt.Errorf("read pg_current_wal_lsn: %w", err)
		}
		var err2 error
		lsn, err2 = parseLSNText(current)
		return err2
	})
	return lsn, err
}

// MakeReadWrite implements Postgres.
func (a *SQLActions) MakeReadWrite(ctx context.Context, node string) error {
	return a.withConn(ctx, node, func(conn *pgx.Conn) error {
		return alterSystem(ctx, conn, "default_transaction_read_only", nil)
	})
}
