package proxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5/pgconn"
)

// A commit whose wait for synchronous replication was cut
//
// The proxy does not forward a cancel to a backend that waits for synchronous replication
// (cancel.go), but the check and the cancel are two steps, and a backend may enter the wait in
// between; a server's own pg_terminate_backend can cut the wait too. PostgreSQL then sends a
// WARNING from SyncRepWaitForLSN ("canceling wait for synchronous replication ...; the
// transaction has already committed locally, but might not have been replicated to the
// standby") and reports the commit as done. Through the proxy that success must not reach the
// client before the commit is replicated, or a failover could lose an acknowledged commit.
//
// The backend→client relay recognizes the WARNING by its routine field ('R'), which is not
// translated, relays it, and then holds the rest of the answer while a barrier runs on the
// same server as the query user: a transaction that writes a WAL record (a transactional
// logical message: no table is touched), whose commit waits for synchronous replication of its
// own commit record, written after the cut one — when it
// returns, the cut commit is replicated too (standbys confirm WAL positions in order). Only
// then is the commit's answer relayed. When the barrier fails (the primary went away, no query
// user), the answer is dropped and the session loses its backend: the client gets what a lost
// COMMIT gets (loss.go), never an unconfirmed success.

// syncRepRoutine is the routine field of the WARNING PostgreSQL sends when a wait for
// synchronous replication is cut (src/backend/replication/syncrep.c).
const syncRepRoutine = "SyncRepWaitForLSN"

// isSyncRepCut reports whether a NoticeResponse says a commit's wait for synchronous
// replication was cut.
func isSyncRepCut(msg []byte) bool {
	body := msg[5:]
	for len(body) > 0 && body[0] != 0 {
		end := bytes.IndexByte(body[1:], 0)
		if end < 0 {
			return false
		}
		if body[0] == 'R' && string(body[1:1+end]) == syncRepRoutine {
			return true
		}
		body = body[2+end:]
	}
	return false
}

// errNoBarrier: without a query user the proxy cannot confirm replication itself.
var errNoBarrier = errors.New("no query user to confirm synchronous replication")

// waitReplicated returns once every commit written so far on the session's backend server is
// replicated as synchronous replication requires, or an error when that cannot be confirmed.
func (s *session) waitReplicated() error {
	return s.srv.waitReplicatedOn(s.ctx, s.currentTarget())
}

// waitReplicatedOn runs the barrier on target's server as the query user.
func (s *Server) waitReplicatedOn(ctx context.Context, target Target) error {
	if s.cfg.QueryUser == "" {
		return errNoBarrier
	}
	return s.authConns.with(ctx, target, func(conn *pgconn.PgConn) error {
		// One implicit transaction that writes WAL (a transactional logical message, which
		// touches no table) and so has a commit record, written after the cut one, whose
		// commit waits for synchronous replication.
		_, err := conn.Exec(ctx, "SET synchronous_commit = on; SELECT pg_catalog.pg_logical_emit_message(true, 'pgquorum', 'replication barrier')").ReadAll()
		return err
	})
}

// afterSyncRepCut relays data[:w], which ends with the WARNING of a cut wait, waits until the
// commit is replicated, then forwards the rest of the batch (data[i:]). drained says a
// ReadyForQuery before the WARNING closed a draining session.
func (r *relay) afterSyncRepCut(data []byte, w, i int, drained bool) error {
	s := r.s
	if w > 0 {
		if err := r.write(data[:w]); err != nil {
			return &relayWriteError{err}
		}
		s.srv.counters.bytesToClients.Add(uint64(w))
	}
	if drained {
		return errSessionClosing
	}
	if err := s.waitReplicated(); err != nil {
		s.log.Warn("a commit's wait for synchronous replication was cut and its replication cannot be confirmed; its answer is dropped",
			"backend", s.currentTarget().Name, "err", err)
		return &relayReadError{fmt.Errorf("confirm the replication of a commit whose wait was cut: %w", err)}
	}
	s.log.Info("a commit's wait for synchronous replication was cut; relayed its answer once replicated", "backend", s.currentTarget().Name)
	return r.forwardFunc(data[i:])
}
