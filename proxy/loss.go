package proxy

import (
	"errors"
	"fmt"
	"io"
	"net"
)

// Losing the backend (SPEC §5)
//
// A session loses its backend when the connection fails (the primary died: EOF or reset), when
// the backend announces its end (FATAL 57P01/57P02/57P03: shutdown, or a switchover ending its
// sessions), or when the proxy drops it (a new primary is agreed, or this proxy's lease
// expired). What the client sees depends only on where the session was, which the relays
// track without decoding results:
//
//	session                                      client sees                       then
//	---------------------------------------------------------------------------------------------------
//	closing (Shutdown, client gone)              the closing reason                closed
//	unmovable state (temp table, lock, ...)      FATAL 08006                       closed
//	idle, nothing in flight                      nothing                           moved at its next request
//	idle in transaction, nothing in flight       nothing yet; its next request     ROLLBACK is answered by the
//	                                             gets 40001 (ROLLBACK: success)    proxy, then moved
//	one request in flight, session was idle      ERROR 08007 + ReadyForQuery(I)    moved at its next request
//	one request in flight in a transaction:
//	  it is a single ROLLBACK                    ROLLBACK + ReadyForQuery(I)       moved at its next request
//	  its COMMIT, probed, wrote nothing          COMMIT + ReadyForQuery(I)         moved at its next request
//	  its COMMIT, probed, has a transaction id   its real outcome (resolve.go):    moved at its next request
//	                                             COMMIT, or 40001, or 08007; then
//	                                             ReadyForQuery(I)
//	  it may commit (COMMIT, END, ...)           ERROR 08007 + ReadyForQuery(I)    moved at its next request
//	  otherwise                                  ERROR 40001 + ReadyForQuery(E)    ROLLBACK answered, then moved
//	an extended batch sent without its Sync      ERROR 08007 or 40001 now; the rest of the batch is
//	                                             discarded and its Sync answered by the proxy
//	several requests in flight, all inside the   40001, then 25P02 for each        ROLLBACK answered, then moved
//	transaction (no transaction control)         further one; ReadyForQuery(E) each
//	several autocommit requests in flight (no    ERROR 08007 + ReadyForQuery(I)    moved at its next request
//	transaction control)                         for each
//	several requests in flight otherwise         FATAL 08006                       closed
//	request rejected before execution by a       nothing                           sent to the new primary
//	demoted primary (retry.go)
//
// "Moved" means the client→backend relay logs in to the new primary with the session's
// credentials and replays its state (move.go). A request sent to the old backend is never sent
// again (except the rejected one above); a request that had not been sent is held and sent to
// the new primary exactly once.

// localMode says how the client→backend relay answers the client while the session has no
// backend (local.go).
type localMode uint8

const (
	modeIdle      localMode = iota // the next request moves the session
	modeTxLost                     // the client's transaction was lost; the client does not know yet
	modeTxAborted                  // the client was told (status E); only the end of the transaction is accepted
	modeDiscard                    // discard until Sync, answer it, then continue in discardNext
	modeExtAnswer                  // answering an extended-protocol ROLLBACK locally until its Sync
	modeResolving                  // the lost COMMIT's outcome is being learned (resolve.go); the client is not read
)

// lossFacts is what decides a lost backend's verdict.
type lossFacts struct {
	closing      bool          // the session is ending anyway
	atBoundary   bool          // the client stream is at a message boundary
	unmovable    string        // why the session cannot move ("" when it can)
	inFlight     uint64        // requests sent and not answered
	extendedOpen bool          // an extended batch was sent without its Sync
	txStatus     byte          // the client's transaction status before the requests in flight
	inflight     inflightFacts // what the requests in flight may do
	retry        bool          // the request in flight was rejected before execution: retry it
	listens      bool          // the session listens to channels: move it without waiting
	backend      string        // the lost backend's name, for messages
	commit       commitProbe   // what the proxy learned about the transaction of a COMMIT in flight (resolve.go)
}

// lossVerdict is what the client is told and what happens next.
type lossVerdict struct {
	end           bool         // the session ends
	reason        *clientError // told to the client when the session ends (nil: nothing)
	message       *clientError // an ERROR told to the client now (08007, 40001)
	rollback      bool         // tell the client its ROLLBACK succeeded
	status        byte         // the ReadyForQuery sent after message/rollback (0: none)
	mode          localMode    // how the client is answered until the session moves
	discardStatus byte         // modeDiscard: the ReadyForQuery status to answer the Sync with
	discardNext   localMode    // modeDiscard: the mode after the Sync
	answered      bool         // the requests in flight count as answered
	maybeCommit   bool         // they may have committed (their state effects are unknown)
	retry         bool         // send the request in flight again after the move
	eager         bool         // move now rather than at the next request
	committed     bool         // tell the client its COMMIT succeeded (a transaction that wrote nothing)
	answers       uint64       // several requests in flight: answer each (message, then rest), with status
	rest          *clientError // the ERROR of the second and later of several answers
	resolve       bool         // learn the lost COMMIT's outcome from a primary, then tell the client (resolve.go)
}

// decideLoss returns the verdict for a lost backend. It is a pure function of the facts.
func decideLoss(f lossFacts) lossVerdict {
	switch {
	case f.closing:
		return lossVerdict{end: true}
	case !f.atBoundary:
		return lossVerdict{end: true} // mid-message: nothing can be added to the stream
	case f.retry:
		return lossVerdict{mode: modeIdle, retry: true}
	case f.unmovable != "":
		return lossVerdict{end: true, reason: fatalf(codeConnectionFailure,
			"lost the connection to the primary PostgreSQL server %s, and this session cannot be moved to another server", f.backend).
			withDetail(fmt.Sprintf("The session cannot be moved because %s.", f.unmovable)).
			withHint("Reconnect; session state such as temporary tables must be created again.")}
	}
	inTx := f.txStatus == 'T' || f.txStatus == 'E'
	switch {
	case f.inFlight == 0 && !f.extendedOpen:
		switch f.txStatus {
		case 'T':
			return lossVerdict{mode: modeTxLost}
		case 'E':
			return lossVerdict{mode: modeTxAborted}
		}
		return lossVerdict{mode: modeIdle, eager: f.listens}
	case f.inFlight == 1 && !f.extendedOpen:
		switch {
		case inTx && f.inflight.rollbackOnly:
			return lossVerdict{rollback: true, status: 'I', mode: modeIdle, answered: true}
		case f.txStatus == 'T' && f.commit.sent && f.commit.endedBefore:
			return lossVerdict{message: notCommitted(f.backend, "The server ended the session before it ran the COMMIT."),
				status: 'I', mode: modeIdle, answered: true}
		case f.txStatus == 'T' && f.commit.known() && !f.commit.assigned:
			return lossVerdict{committed: true, status: 'I', mode: modeIdle, answered: true}
		case f.txStatus == 'T' && f.commit.known():
			return lossVerdict{resolve: true, mode: modeResolving, answered: true}
		case !inTx || f.inflight.mayCommit:
			return lossVerdict{message: resolutionUnknown(f.backend), status: 'I', mode: modeIdle, answered: true, maybeCommit: true}
		}
		return lossVerdict{message: abortedByFailover(f.backend), status: 'E', mode: modeTxAborted, answered: true}
	case f.inFlight == 0 && f.extendedOpen:
		if f.inflight.mayCommit {
			return lossVerdict{message: resolutionUnknown(f.backend), mode: modeDiscard, discardStatus: 'I',
				discardNext: modeIdle, answered: true, maybeCommit: true}
		}
		if !inTx {
			return lossVerdict{message: abortedByFailover(f.backend), mode: modeDiscard, discardStatus: 'I',
				discardNext: modeIdle, answered: true}
		}
		return lossVerdict{message: abortedByFailover(f.backend), mode: modeDiscard, discardStatus: 'E',
			discardNext: modeTxAborted, answered: true}
	case f.inFlight > 1 && !f.extendedOpen && !f.inflight.txControl && f.txStatus == 'T':
		// Pipelined requests that all ran inside the lost transaction: each is answered as
		// PostgreSQL would answer requests after an error in a transaction.
		return lossVerdict{message: abortedByFailover(f.backend), rest: inFailedTransaction(), answers: f.inFlight,
			status: 'E', mode: modeTxAborted, answered: true}
	case f.inFlight > 1 && !f.extendedOpen && !f.inflight.txControl && f.txStatus == 'E':
		return lossVerdict{message: inFailedTransaction(), rest: inFailedTransaction(), answers: f.inFlight,
			status: 'E', mode: modeTxAborted, answered: true}
	case f.inFlight > 1 && !f.extendedOpen && !f.inflight.txControl && f.txStatus == 'I':
		// Pipelined autocommit requests, each its own transaction: each outcome is unknown.
		return lossVerdict{message: resolutionUnknown(f.backend), rest: resolutionUnknown(f.backend), answers: f.inFlight,
			status: 'I', mode: modeIdle, answered: true, maybeCommit: true}
	}
	return lossVerdict{end: true, reason: fatalf(codeConnectionFailure,
		"lost the connection to the primary PostgreSQL server %s with several requests in flight", f.backend).
		withDetail("Their outcome is unknown; pipelined requests cannot be answered one by one.").
		withHint("Reconnect and check which of the requests took effect.")}
}

// resolutionUnknown is the 08007 error for a request whose outcome is unknown.
func resolutionUnknown(backend string) *clientError {
	return errorf(codeTransactionResolutionUnknown,
		"transaction resolution unknown: the connection to the primary PostgreSQL server %s was lost while the request was in progress", backend).
		withDetail("The request may or may not have been committed.").
		withHint("Check whether it took effect before retrying it; the session is still usable.")
}

// inFailedTransaction is PostgreSQL's 25P02 for a request after an error in a transaction.
func inFailedTransaction() *clientError {
	return errorf(codeInFailedTransaction, "current transaction is aborted, commands ignored until end of transaction block")
}

// notCommitted is the 40001 error for a COMMIT whose transaction is known not to have
// committed.
func notCommitted(backend, detail string) *clientError {
	return errorf(codeSerializationFailure, "transaction not committed: the primary was lost during its COMMIT; safe to retry").
		withDetail("The connection to the primary PostgreSQL server " + backend + " was lost before the COMMIT's answer. " + detail).
		withHint("Retry the transaction.")
}

// abortedByFailover is the 40001 error for a transaction lost before its COMMIT was sent.
func abortedByFailover(backend string) *clientError {
	return errorf(codeSerializationFailure, "transaction aborted by failover, not committed, safe to retry").
		withDetail(fmt.Sprintf("The connection to the primary PostgreSQL server %s was lost before the transaction's COMMIT was sent.", backend)).
		withHint("Issue ROLLBACK, then retry the transaction.")
}

// backendLost runs in the backend→client relay when reading the backend ended (err). It
// decides the verdict, tells the client, hands the client side to the client→backend relay and
// waits for a new backend. It returns false when the session ends.
func (s *session) backendLost(r *relay, err error) (backendLink, bool) {
	b := r.b
	var protocolErr *clientError
	var writeErr *relayWriteError
	switch {
	case errors.As(err, &writeErr):
		// The client's connection failed: nobody to tell.
		s.mu.Lock()
		s.clientGone = true
		s.mu.Unlock()
		s.endClientSide(nil, false)
		return backendLink{}, false
	case errors.As(err, &protocolErr):
		s.log.Warn("closing session: invalid message from the PostgreSQL server", "backend", s.currentTarget().Name, "err", err)
		s.endClientSide(protocolErr, r.f.atBoundary())
		return backendLink{}, false
	}

	s.mu.Lock()
	clientDone := s.phase == phaseClosed || s.clientGone || s.lastClientType == 'X' || s.clientEOF || b.fatalRelayed
	retryFatal := b.retry.retryableFatal(s, b.fatal)
	s.mu.Unlock()
	if clientDone {
		// The client asked to terminate, closed its side, or the session is closing: the
		// backend closed as asked; tell the client the closing reason if there is one.
		s.endClientSide(nil, r.f.atBoundary())
		return backendLink{}, false
	}
	if b.fatal != nil && decideTermination(s.terminationFactsFor(s.currentTarget())) == terminationDeliver {
		// The healthy agreed primary ended this session (pg_terminate_backend): like a direct
		// connection, the client gets the FATAL and the session ends.
		s.log.Info("the primary ended the session; closing it", "backend", s.currentTarget().Name, "sqlstate", string(codeOf(b.fatal)))
		s.endClientSide(&clientError{Severity: severityFatal, Code: string(codeOf(b.fatal)), raw: b.fatal}, r.f.atBoundary())
		return backendLink{}, false
	}
	// A server going away or demoted: the request it rejected before running it goes to the
	// new primary (retry.go).
	retry := errors.Is(err, errRetryRequest) || retryFatal
	if !retry && !errors.Is(err, errRetryRequest) {
		s.logLoss(r, err)
	}

	s.mu.Lock()
	if s.clientEOF || s.clientGone || s.lastClientType == 'X' {
		// The client finished while this relay was deciding. Checked again in the same
		// critical section as the verdict: the client→backend relay, which ends at the
		// client's EOF, leaves the session to this relay only while the link is up.
		s.mu.Unlock()
		s.endClientSide(nil, r.f.atBoundary())
		return backendLink{}, false
	}
	f := lossFacts{
		closing:      s.phase == phaseClosed || s.phase == phaseDraining,
		atBoundary:   r.f.atBoundary(),
		inFlight:     s.syncsSent - s.readyReceived,
		extendedOpen: s.extendedOpen,
		txStatus:     s.txStatus,
		inflight:     s.inflight,
		retry:        retry,
		backend:      s.target.Name,
		commit:       s.probe,
	}
	if s.state != nil {
		f.unmovable = s.state.unmovable
		f.listens = len(s.state.listens) > 0
	}
	v := decideLoss(f)
	s.applyVerdictLocked(v)
	s.uncountBackendLocked() // its backend connection is closed below
	backend := s.backend
	s.mu.Unlock()
	if backend != nil {
		_ = backend.Close()
	}

	if v.end {
		reason := v.reason
		if reason != nil && b.fatal != nil && f.unmovable == "" {
			// Closing for another reason (several requests in flight): PostgreSQL's own
			// FATAL says best why the backend went away.
			reason = &clientError{Severity: severityFatal, Code: string(codeOf(b.fatal)), raw: b.fatal}
		}
		s.endClientSide(reason, f.atBoundary)
		return backendLink{}, false
	}
	if out := v.clientMessages(s); !s.writeToClient(out) {
		s.endClientSide(nil, false)
		return backendLink{}, false
	}
	if v.message != nil {
		s.srv.cfg.Metrics.ClientError(v.message.Code)
	}
	h := s.handoffChannels()
	h.parked <- v
	if v.retry || v.eager || v.resolve {
		s.wakeClientSide()
	}
	select {
	case link := <-h.links:
		return link, true
	case <-s.ctx.Done():
		s.endClientSide(nil, true)
		return backendLink{}, false
	}
}

// applyVerdictLocked records a verdict in the session. s.mu is held.
func (s *session) applyVerdictLocked(v lossVerdict) {
	if v.end || !s.transitionLocked(evLost) {
		s.transitionLocked(evClose)
		return
	}
	s.mode = v.mode
	outcomeLater := v.resolve || v.committed // a COMMIT whose outcome is (or will be) known
	for _, rec := range s.records {
		if rec.resolved {
			continue
		}
		// Its answer is lost: its Parse messages count as failed, its effects as unknown.
		rec.resolved, rec.errored, rec.completes = true, true, 0
		if !v.retry && !outcomeLater && len(rec.items) > 0 {
			s.stateLocked().applyLost(rec.items, v.maybeCommit)
		}
	}
	switch {
	case v.committed:
		s.applyCommitOutcomeLocked(outcomeCommitted)
	case v.resolve:
		s.lostCommit, s.lostCommitTarget = s.probe, s.target // resolveCommit applies the outcome
	case s.state != nil && !v.retry:
		// Any open transaction is gone (40001), or its COMMIT's outcome is unknown (08007).
		s.state.applyLost(nil, v.maybeCommit)
	}
	s.probe, s.reprepare = commitProbe{}, reprepareRequest{}
	s.injecting.Store(false)
	switch {
	case v.retry:
		// The rejected request counts as not sent: it is sent again after the move.
		s.syncsSent = s.readyReceived
		s.extendedOpen = false
	case v.answered:
		s.readyReceived = s.syncsSent
		s.extendedOpen = false
	}
	if !v.retry {
		s.disarmRetryLocked()
	}
	s.inflight = inflightFacts{}
	if v.status != 0 {
		s.txStatus = v.status // in modeDiscard the client sees its old status until the Sync
	}
}

// clientMessages returns what the client is sent now.
func (v lossVerdict) clientMessages(s *session) []byte {
	var out []byte
	if v.answers > 1 {
		for i := range v.answers {
			e := v.rest
			if i == 0 {
				e = v.message
			}
			out = appendReadyForQuery(e.appendErrorResponse(out), v.status)
		}
		return out
	}
	if v.message != nil {
		out = v.message.appendErrorResponse(out)
	}
	if v.rollback {
		out = appendCommandComplete(out, "ROLLBACK")
	}
	if v.committed {
		out = appendCommandComplete(out, "COMMIT")
	}
	if v.status != 0 {
		out = appendReadyForQuery(out, v.status)
	}
	return out
}

// logLoss logs why the backend was lost.
func (s *session) logLoss(r *relay, err error) {
	target := s.currentTarget()
	switch {
	case r.b.fatal != nil:
		s.log.Info("backend ended the session; moving it", "backend", target.Name, "sqlstate", string(codeOf(r.b.fatal)))
	case errors.Is(err, io.EOF), errors.Is(err, net.ErrClosed):
		s.log.Info("lost the backend connection", "backend", target.Name, "err", err)
		s.srv.cfg.Router.BackendFailed(target)
	default:
		s.log.Warn("lost the backend connection", "backend", target.Name, "err", err)
		s.srv.cfg.Router.BackendFailed(target)
	}
}

// currentTarget returns where the session's backend is.
func (s *session) currentTarget() Target {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.target
}

// codeOf returns the SQLSTATE of an ErrorResponse message.
func codeOf(msg []byte) []byte {
	code, _ := errorCode(msg)
	return code
}
