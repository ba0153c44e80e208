package localcluster

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// This file holds the small SQL helpers tests need. Each call opens its own connection over
// loopback TCP as QueryUser (SCRAM), so the helpers are safe for concurrent use and never touch
// the node's lifecycle state. They block until ctx ends when the node is frozen.

// defaultWaitTimeout bounds the Wait helpers when their context has no deadline.
const defaultWaitTimeout = 60 * time.Second

// Conn opens a connection to database "postgres" as QueryUser. The caller closes it.
func (n *Node) Conn(ctx context.Context) (*pgx.Conn, error) {
	return n.connect(ctx, QueryUser, QueryPassword)
}

func (n *Node) connect(ctx context.Context, user, password string) (*pgx.Conn, error) {
	conn, err := pgx.Connect(ctx, n.ConnString(user, password, "postgres"))
	if err != nil {
		return nil, fmt.Errorf("connect to %s as %s: %w", n.Name, user, err)
	}
	return conn, nil
}

// closeConn closes conn within a short bound: a frozen server must not hang the caller.
func closeConn(conn *pgx.Conn) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = conn.Close(ctx)
}

// Exec runs sql as QueryUser and waits for it to finish. Without args, sql may hold several
// statements separated by ';'; with args it is one statement with $1, $2, ... placeholders.
func (n *Node) Exec(ctx context.Context, sql string, args ...any) error {
	conn, err := n.Conn(ctx)
	if err != nil {
		return err
	}
	defer closeConn(conn)
	if _, err := conn.Exec(ctx, sql, args...); err != nil {
		return fmt.Errorf("exec on %s: %w", n.Name, err)
	}
	return nil
}

// QueryString runs sql as QueryUser and returns the first column of the first row in
// PostgreSQL's text form ("t" for true, "42", "0/3000060"). No row or NULL is an error.
func (n *Node) QueryString(ctx context.Context, sql string, args ...any) (string, error) {
	conn, err := n.Conn(ctx)
	if err != nil {
		return "", err
	}
	defer closeConn(conn)
	return queryString(ctx, conn, sql, args...)
}

func queryString(ctx context.Context, conn *pgx.Conn, sql string, args ...any) (string, error) {
	// The simple protocol returns every value as text, whatever its type.
	args = append([]any{pgx.QueryExecModeSimpleProtocol}, args...)
	rows, err := conn.Query(ctx, sql, args...)
	if err != nil {
		return "", fmt.Errorf("query %q: %w", sql, err)
	}
	defer rows.Close()
	if !rows.Next() {
		if err := rows.Err(); err != nil {
			return "", fmt.Errorf("query %q: %w", sql, err)
		}
		return "", fmt.Errorf("query %q: no row", sql)
	}
	values := rows.RawValues()
	if len(values) == 0 || values[0] == nil {
		return "", fmt.Errorf("query %q: NULL or no column", sql)
	}
	value := string(values[0])
	rows.Close()
	if err := rows.Err(); err != nil {
		return "", fmt.Errorf("query %q: %w", sql, err)
	}
	return value, nil
}

// IsInRecovery reports pg_is_in_recovery(): true on a standby.
func (n *Node) IsInRecovery(ctx context.Context) (bool, error) {
	v, err := n.QueryString(ctx, "SELECT pg_is_in_recovery()")
	if err != nil {
		return false, err
	}
	return v == "t", nil
}

// Promote promotes the standby with pg_promote(wait => true) and returns once it accepts
// writes.
func (n *Node) Promote(ctx context.Context) error {
	v, err := n.QueryString(ctx, "SELECT pg_promote(true, 60)")
	if err != nil {
		return fmt.Errorf("promote %s: %w", n.Name, err)
	}
	if v != "t" {
		return fmt.Errorf("promote %s: not promoted within 60 s", n.Name)
	}
	n.logger.Info("localcluster: node promoted", "node", n.Name)
	return nil
}

// Replica is one row of pg_stat_replication on a primary.
type Replica struct {
	Name      string // application_name
	State     string // e.g. "streaming", "catchup"
	SyncState string // "quorum" under ANY k, "sync", "potential" or "async"
	// FlushLSN is the last position the standby reported flushed; "" until its first report.
	// Only then does the standby count towards the synchronous quorum.
	FlushLSN string
}

// Replicas returns pg_stat_replication, ordered by name.
func (n *Node) Replicas(ctx context.Context) ([]Replica, error) {
	conn, err := n.Conn(ctx)
	if err != nil {
		return nil, err
	}
	defer closeConn(conn)
	rows, err := conn.Query(ctx, `SELECT application_name, coalesce(state, ''), coalesce(sync_state, ''),
		coalesce(flush_lsn::text, '') FROM pg_stat_replication ORDER BY application_name`)
	if err != nil {
		return nil, fmt.Errorf("pg_stat_replication on %s: %w", n.Name, err)
	}
	replicas, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (Replica, error) {
		var r Replica
		err := row.Scan(&r.Name, &r.State, &r.SyncState, &r.FlushLSN)
		return r, err
	})
	if err != nil {
		return nil, fmt.Errorf("pg_stat_replication on %s: %w", n.Name, err)
	}
	return replicas, nil
}

// WaitReplicas waits until pg_stat_replication on this node (a primary) shows every named
// standby streaming and reporting a flush position, so that it counts towards the synchronous
// quorum (sync_state "quorum" under ANY k) if it is named in synchronous_standby_names. Without a deadline in ctx it gives up after a minute.
func (n *Node) WaitReplicas(ctx context.Context, names ...string) error {
	ctx, cancel := withDefaultTimeout(ctx, defaultWaitTimeout)
	defer cancel()
	var last []Replica
	var lastErr error
	err := waitUntil(ctx, 20*time.Millisecond, func() (bool, error) {
		last, lastErr = n.Replicas(ctx)
		if lastErr != nil {
			return false, nil // not up yet, or busy: try again until the deadline
		}
		for _, name := range names {
			if !slices.ContainsFunc(last, func(r Replica) bool { return r.Name == name && r.State == "streaming" && r.FlushLSN != "" }) {
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		return fmt.Errorf("wait for %s streaming from %s: %w (last seen %+v, last error %v)",
			strings.Join(names, ", "), n.Name, err, last, lastErr)
	}
	return nil
}

// WaitStreaming waits until this node (a standby) streams from its primary, per
// pg_stat_wal_receiver. Without a deadline in ctx it gives up after a minute.
func (n *Node) WaitStreaming(ctx context.Context) error {
	ctx, cancel := withDefaultTimeout(ctx, defaultWaitTimeout)
	defer cancel()
	var last string
	var lastErr error
	err := waitUntil(ctx, 20*time.Millisecond, func() (bool, error) {
		last, lastErr = n.QueryString(ctx, "SELECT coalesce((SELECT status FROM pg_stat_wal_receiver), 'none')")
		return lastErr == nil && last == "streaming", nil
	})
	if err != nil {
		return fmt.Errorf("wait for %s to stream: %w (last status %q, last error %v)", n.Name, err, last, lastErr)
	}
	return nil
}

// waitAcceptingConnections waits until the server answers a query from SuperUser (trusted, so
// it works before the roles exist).
func (n *Node) waitAcceptingConnections(ctx context.Context) error {
	var lastErr error
	err := waitUntil(ctx, 20*time.Millisecond, func() (bool, error) {
		conn, err := n.connect(ctx, SuperUser, "")
		if err != nil {
			lastErr = err
			return false, nil
		}
		defer closeConn(conn)
		_, lastErr = queryString(ctx, conn, "SELECT 1")
		return lastErr == nil, nil
	})
	if err != nil {
		return errors.Join(fmt.Errorf("wait for connections: %w", err), lastErr)
	}
	return nil
}
