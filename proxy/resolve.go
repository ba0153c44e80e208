package proxy

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgquorum/pgquorum/proxy/sqlclass"
)

// The real outcome of a lost COMMIT (SPEC §5, fourth row)
//
// When a client sends COMMIT (or END) of an explicit transaction that may have written (a
// statement the SQL classifier does not know to be a plain read was sent in it) as a simple
// Query with nothing else in flight, the proxy sends, ahead of it in the same write, its own query
// `SELECT pg_catalog.pg_current_xact_id_if_assigned()` and consumes the answer itself (the
// backend→client relay drops its RowDescription, DataRow, CommandComplete and ReadyForQuery;
// an ErrorResponse, which aborts the transaction as any error would, is relayed). The proxy
// then knows the transaction's id before the COMMIT runs. The probe costs one more statement
// on the backend in the same round trip; a transaction of plain reads is not probed (were one
// of its reads to write after all, through a function, its lost COMMIT is 08007, as without
// the probe).
//
// If the backend is lost before the COMMIT's answer:
//
//   - the backend sent a FATAL before the probe's answer was complete: the COMMIT behind the
//     probe never ran (requests run in order): 40001 "not committed, safe to retry";
//   - the probe's answer never came: 08007 (the COMMIT may have run after it);
//   - the transaction had no id (it wrote nothing): the client gets the COMMIT's
//     CommandComplete — committed or not, nothing it wrote can differ (a NOTIFY of such a
//     transaction may not have been sent, since notifications are queued at commit);
//   - it had an id X: the session enters the resolving phase. The client→backend relay waits
//     for a primary (as a held request, up to hold.timeout) and asks it, as the query user:
//
//     same server as before (its connection failed, or a failover was aborted): X is its own
//     transaction; pg_xact_status(X) is the outcome (waiting while it is "in progress");
//
//     the primary promoted by the next epoch, whose promotion recorded a transaction id
//     horizon H (Target.XidHorizon): X >= H was never committed there (40001 without asking);
//     X < H is a transaction of the old timeline and pg_xact_status(X) is its outcome there.
//     Comparing with H is what makes the answer exact: a transaction id the new primary
//     never saw may be assigned again to a new transaction after the promotion;
//
//     anything else (several failovers, no horizon, no query user, no primary in time): 08007.
//
//     "committed" is told (CommandComplete, ReadyForQuery 'I') only after a barrier confirmed
//     that the commit is replicated (syncrep.go), so that an answer the proxy makes never
//     acknowledges less than PostgreSQL would; "aborted" is 40001 "not committed, safe to
//     retry".
//
// Autocommit requests, COMMIT through the extended protocol, COMMIT pipelined behind other
// requests, COMMIT PREPARED and PREPARE TRANSACTION are not probed: their loss stays 08007.
// (An autocommit statement gets its transaction id during execution, after any probe could run;
// COMMIT PREPARED's outcome lives in pg_prepared_xacts and is left for later.)

// xactIDProbe is the query sent ahead of a COMMIT.
var xactIDProbe = appendMessage(nil, 'Q', []byte("SELECT pg_catalog.pg_current_xact_id_if_assigned()\x00"))

// commitProbe is what the proxy learned about the transaction of the COMMIT in flight. Guarded
// by session.mu.
type commitProbe struct {
	sent     bool   // a probe went ahead of the COMMIT in flight
	answered bool   // its ReadyForQuery arrived
	failed   bool   // it got an error or an answer the proxy could not read
	assigned bool   // the transaction has an id
	xid      uint64 // the id (xid8), when assigned
	// endedBefore: the backend ended (FATAL) before the probe's answer was complete; PostgreSQL
	// runs requests in order, so the COMMIT behind the probe never ran.
	endedBefore bool
}

// known reports whether the probe says exactly which transaction the COMMIT ends.
func (p commitProbe) known() bool { return p.sent && p.answered && !p.failed }

// consumeProbeMessage handles a message of the probe's answer in the backend→client relay and
// reports whether to relay it (only an ErrorResponse is). s.mu is held.
func (s *session) consumeProbeMessage(typ byte, msg []byte) bool {
	switch typ {
	case 'D':
		s.probe.assigned, s.probe.xid, s.probe.failed = parseProbeRow(msg)
	case 'E':
		s.probe.failed = true
		return true
	case 'Z':
		s.probe.answered = true
		s.injecting.Store(false)
	}
	return false
}

// parseProbeRow reads the DataRow of the probe: one text column, NULL or an xid8.
func parseProbeRow(msg []byte) (assigned bool, xid uint64, failed bool) {
	body := msg[5:]
	if len(body) < 6 || body[0] != 0 || body[1] != 1 {
		return false, 0, true
	}
	n := int32(uint32(body[2])<<24 | uint32(body[3])<<16 | uint32(body[4])<<8 | uint32(body[5]))
	if n == -1 {
		return false, 0, false
	}
	if n < 0 || int(n) != len(body)-6 {
		return false, 0, true
	}
	v, err := strconv.ParseUint(string(body[6:]), 10, 64)
	if err != nil {
		return false, 0, true
	}
	return true, v, false
}

// commitOutcome is what the proxy tells a client whose COMMIT was lost.
type commitOutcome uint8

const (
	outcomeUnknown      commitOutcome = iota // 08007
	outcomeCommitted                         // CommandComplete COMMIT
	outcomeNotCommitted                      // 40001, safe to retry
)

// commitQuestion says how the outcome of transaction xid, lost on lost, is learned from the
// primary now routed to.
type commitQuestion uint8

const (
	askNothing      commitQuestion = iota // the outcome cannot be known: 08007
	askServer                             // pg_xact_status on the routed primary
	answerNotCommit                       // known without asking: not committed
)

// decideCommitQuestion is a pure function of where the COMMIT was lost, where routing goes now
// and the transaction id (see the table above).
func decideCommitQuestion(lost, now Target, xid uint64) commitQuestion {
	switch {
	case now.Name == lost.Name && now.Address == lost.Address:
		return askServer
	case lost.Epoch == 0 || now.Epoch != lost.Epoch+1 || now.XidHorizon == 0:
		return askNothing
	case xid >= now.XidHorizon:
		return answerNotCommit
	}
	return askServer
}

// resolveCommit runs in the client→backend relay while the session is resolving: it learns the
// lost COMMIT's outcome, tells the client, and leaves the session idle without a backend (it
// moves at its next request).
func (s *session) resolveCommit(r *relay) error {
	s.mu.Lock()
	probe, lost := s.lostCommit, s.lostCommitTarget
	if !s.transitionLocked(evResolveStarted) {
		s.mu.Unlock()
		return errSessionClosing
	}
	s.mu.Unlock()

	outcome := s.learnCommitOutcome(lost, probe.xid)
	s.log.Info("resolved a COMMIT lost with the primary", "backend", lost.Name, "xid", probe.xid, "outcome", outcomeNames[outcome])
	var out []byte
	switch outcome {
	case outcomeCommitted:
		out = appendCommandComplete(out, "COMMIT")
	case outcomeNotCommitted:
		ce := notCommitted(lost.Name, "Its outcome was read from the primary.")
		s.srv.cfg.Metrics.ClientError(ce.Code)
		out = ce.appendErrorResponse(out)
	default:
		ce := resolutionUnknown(lost.Name)
		s.srv.cfg.Metrics.ClientError(ce.Code)
		out = ce.appendErrorResponse(out)
	}
	out = appendReadyForQuery(out, 'I')

	s.mu.Lock()
	s.applyCommitOutcomeLocked(outcome)
	s.txStatus = 'I'
	resolved := s.transitionLocked(evResolved)
	s.mu.Unlock()
	if !resolved {
		return errSessionClosing
	}
	r.c.setMode(s, modeIdle)
	if !s.writeToClient(out) {
		return errSessionClosing
	}
	return nil
}

var outcomeNames = [...]string{"unknown", "committed", "not committed"}

// applyCommitOutcomeLocked applies a lost COMMIT's outcome to the session state: its pending
// changes become part of the session (committed), are dropped (not committed), or, unknown,
// make the session unmovable when there were any. s.mu is held.
func (s *session) applyCommitOutcomeLocked(outcome commitOutcome) {
	if s.state == nil {
		return
	}
	switch outcome {
	case outcomeCommitted:
		s.state.apply([]sqlclass.Item{{Op: sqlclass.OpCommit}}, 1, segOutcome{before: 'T', after: 'I'})
	case outcomeNotCommitted:
		s.state.apply([]sqlclass.Item{{Op: sqlclass.OpRollback}}, 1, segOutcome{before: 'T', after: 'I'})
	default:
		s.state.applyLost(nil, true)
	}
}

// learnCommitOutcome waits for a primary (as a held request, up to the hold timeout) and learns
// the outcome of transaction xid, lost on lost. A primary that cannot be reached (the old one is
// often still routed to for a moment after it died) is asked again only once routing changes,
// or after a pause.
func (s *session) learnCommitOutcome(lost Target, xid uint64) commitOutcome {
	if s.srv.cfg.QueryUser == "" {
		return outcomeUnknown
	}
	ctx, stop := s.holdContext()
	defer stop()
	hold := s.srv.newHold(true)
	defer func() { hold.finish(ctx) }()
	var avoid Target
	for {
		now, err := s.srv.waitRoute(ctx, avoid, hold, nil)
		if err != nil {
			return outcomeUnknown
		}
		switch decideCommitQuestion(lost, now, xid) {
		case answerNotCommit:
			hold.routed()
			return outcomeNotCommitted
		case askNothing:
			return outcomeUnknown
		}
		outcome, err := s.askCommitOutcome(ctx, now, xid)
		if err == nil {
			hold.routed()
			return outcome
		}
		var pgErr *pgconn.PgError
		if ctx.Err() != nil || errors.As(err, &pgErr) && pgErr.Severity != severityFatal && !isAdminShutdown([]byte(pgErr.Code)) {
			s.log.Warn("cannot read a lost COMMIT's outcome", "backend", now.Name, "err", err)
			return outcomeUnknown
		}
		s.log.Debug("cannot reach the primary to read a lost COMMIT's outcome; waiting for routing to change", "backend", now.Name, "err", err)
		avoid = now
	}
}

// askCommitOutcome reads transaction xid's status on target and, when it committed, waits
// until the commit is replicated as a commit acknowledged by PostgreSQL would be. An error
// means the outcome could not be read (or confirmed) there.
func (s *session) askCommitOutcome(ctx context.Context, target Target, xid uint64) (commitOutcome, error) {
	status, err := s.srv.xactStatus(ctx, target, xid)
	if err != nil {
		return outcomeUnknown, err
	}
	switch status {
	case "committed":
		if err := s.srv.waitReplicatedOn(ctx, target); err != nil {
			return outcomeUnknown, fmt.Errorf("confirm the replication of a committed transaction: %w", err)
		}
		return outcomeCommitted, nil
	case "aborted":
		return outcomeNotCommitted, nil
	}
	return outcomeUnknown, nil
}

// xactStatusPoll is how often a transaction "in progress" (its backend still finishing on the
// same server) is asked again.
const xactStatusPoll = 20 * time.Millisecond

// errXidInFuture: the server never assigned the transaction id (it is past its next id).
var errXidInFuture = errors.New("transaction id is in the future")

// xactStatus returns pg_xact_status(xid) on target as the query user, waiting while the
// transaction is in progress: "committed" or "aborted" ("" when the server no longer knows).
func (s *Server) xactStatus(ctx context.Context, target Target, xid uint64) (string, error) {
	for {
		var status string
		err := s.authConns.with(ctx, target, func(conn *pgconn.PgConn) error {
			res := conn.ExecParams(ctx, "SELECT pg_catalog.pg_xact_status($1::text::xid8)",
				[][]byte{[]byte(strconv.FormatUint(xid, 10))}, nil, nil, nil).Read()
			if res.Err != nil {
				var pgErr *pgconn.PgError
				if errors.As(res.Err, &pgErr) && pgErr.Code == "22023" {
					return errXidInFuture
				}
				return res.Err
			}
			if len(res.Rows) == 1 && len(res.Rows[0]) == 1 && res.Rows[0][0] != nil {
				status = string(res.Rows[0][0])
			}
			return nil
		})
		switch {
		case errors.Is(err, errXidInFuture):
			return "aborted", nil // never assigned there: not committed there
		case err != nil:
			return "", err
		case status != "in progress":
			return status, nil
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(xactStatusPoll):
		}
	}
}
