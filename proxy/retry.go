package proxy

import (
	"errors"
	"sync"
)

// Retrying a request a demoted primary rejected
//
// A request that was sent is never sent again, with one exception: a request that the old
// primary provably did not execute. During a planned switchover the old primary is made
// read-only and its sessions are terminated, and a proxy that applies the new routing a few
// milliseconds late may still send it a request. Two answers prove that nothing was done:
//
//   - ERROR 25006 (read_only_sql_transaction) as the first answer of an autocommit request
//     (before any CommandComplete, DataRow or other result): PostgreSQL checks read-only-ness
//     when a statement starts, before it changes anything, and the implicit transaction of the
//     request ends with that error;
//   - FATAL 57P01/57P02/57P03 before any result: the backend was terminated while the request
//     waited or ran; its transaction was rolled back. (A backend terminated while waiting for
//     synchronous replication of its commit does not send the FATAL — it sends a WARNING and
//     closes the connection — so that case stays "resolution unknown", 08007.)
//
// Even then the request is retried only when routing has moved away from that backend, as a
// Raft quorum confirms it after the rejection (Server.confirmedRoute: a switchover commits "no
// primary" before it makes the old primary read-only and ends its sessions, so the confirmed
// route already says so): a primary that is read-only or ends sessions for another reason
// answers the client at once, as PostgreSQL does (termination.go). The retry goes through the
// normal hold and move, so it reaches the new primary exactly once, bounded by the hold timeout.
//
// To retry, the proxy needs the request's bytes after they were sent: the client→backend relay
// keeps a copy (up to maxRetryCopy bytes, in a pooled buffer) of a request sent at a safe
// point with the session idle, when it is the only request in flight. The backend→client relay
// holds back the answer's first messages (parse, bind and describe answers) until it knows the
// request ran, so that nothing of a retried request reaches the client twice.

const (
	// maxRetryCopy bounds the request kept for a retry (larger requests are not retried).
	maxRetryCopy = 8 << 10
)

var retryBuffers = sync.Pool{New: func() any {
	b := make([]byte, 0, maxRetryCopy)
	return &b
}}

// errRetryRequest ends the backend→client relay: the request in flight was rejected before
// execution by a backend that is no longer the primary, and goes to the new one.
var errRetryRequest = errors.New("request rejected by a demoted primary; retrying on the new primary")

// retryCopy is the copy of the request in flight kept for a retry. Guarded by session.mu.
type retryCopy struct {
	armed bool
	seg   uint64  // the request's index
	buf   *[]byte // pooled
}

// armRetryLocked keeps a copy of req, the batch just inspected, when it may be retried: it is
// exactly one complete request (syncs), sent at a safe point with the session idle, nothing
// was added to it. s.mu is held.
func (s *session) armRetryLocked(req []byte, syncs uint64, ineligible bool) {
	s.disarmRetryLocked()
	if ineligible || syncs != 1 || len(req) > maxRetryCopy || s.txStatus != 'I' {
		return
	}
	buf := retryBuffers.Get().(*[]byte)
	*buf = append((*buf)[:0], req...)
	s.retry = retryCopy{armed: true, seg: s.syncsSent - 1, buf: buf}
	s.retryArmed.Store(true)
}

// disarmRetryLocked drops the retry copy. s.mu is held.
func (s *session) disarmRetryLocked() {
	if !s.retry.armed {
		return
	}
	s.releaseRetryLocked()
}

// releaseRetryLocked gives the retry buffer back. s.mu is held.
func (s *session) releaseRetryLocked() {
	if s.retry.buf != nil {
		retryBuffers.Put(s.retry.buf)
	}
	s.retry = retryCopy{}
	s.retryArmed.Store(false)
}

// takeRetryLocked returns a private copy of the request to retry and drops the retry copy.
// s.mu is held.
func (s *session) takeRetryLocked() []byte {
	if !s.retry.armed || s.retry.buf == nil {
		return nil
	}
	req := append([]byte(nil), *s.retry.buf...)
	s.releaseRetryLocked()
	return req
}

// retryWatch is the backend→client relay's view of the armed request's answer. Owner: that
// relay's goroutine; its methods that touch the session run with s.mu held.
type retryWatch struct {
	active    bool   // the answer of the armed request is being read; its messages are held back
	deferred  []byte // its messages held back so far
	candidate bool   // it was rejected with 25006 before any result
	due       bool   // its ReadyForQuery arrived: decide (after the batch) whether to retry
}

// begin starts watching when the request being answered is the armed one. s.mu is held.
func (w *retryWatch) begin(s *session) {
	switch {
	case w.active && !s.retry.armed:
		// Disarmed by the client→backend relay (more requests followed): nothing to retry.
		w.active = false
	case !w.active && s.retry.armed && s.retry.seg == s.readyReceived:
		w.active = true
	}
}

// message holds back a message of the armed request's answer that comes before execution
// (ParseComplete, BindComplete, descriptions). It reports whether to relay it now.
func (w *retryWatch) message(typ byte, msg []byte) bool {
	if !w.active {
		return true
	}
	w.deferred = append(w.deferred, msg...)
	return false
}

// result handles a message that shows the request ran: what was held back is relayed first,
// in order, and the request is no longer retryable. It returns the new output end.
func (w *retryWatch) result(s *session, data []byte, end int) int {
	if !w.active {
		return end
	}
	end = w.flush(data, end)
	s.disarmRetryLocked()
	return end
}

// errorResponse handles an ErrorResponse of the armed request's answer (not a FATAL that
// announces the backend's end, which the caller keeps aside). It reports whether to relay it.
func (w *retryWatch) errorResponse(s *session, msg, code []byte) bool {
	if !w.active {
		return true
	}
	if !w.candidate && string(code) == codeReadOnlyTransaction {
		w.candidate = true
	}
	w.deferred = append(w.deferred, msg...)
	return false
}

// readyForQuery handles a ReadyForQuery while watching: for a candidate it is held back and a
// decision is due; otherwise what was held back is relayed before it. It returns the new
// output end and whether to relay the ReadyForQuery.
func (w *retryWatch) readyForQuery(s *session, data []byte, end int, msg []byte) (int, bool) {
	if !w.active {
		return end, true
	}
	if w.candidate {
		w.deferred = append(w.deferred, msg...)
		w.due = true
		return end, false
	}
	end = w.flush(data, end)
	s.disarmRetryLocked()
	return end, true
}

// endOfBatch relays what was held back when no decision is coming: the client may be waiting
// for these answers (after a Flush), so holding them longer could stall it.
func (w *retryWatch) endOfBatch(data []byte, end int) int {
	if w.active && !w.candidate && len(w.deferred) > 0 {
		end = w.flush(data, end)
	}
	return end
}

// flush moves the held-back messages into the output at end (they were read from data before
// end's position, so there is room) and stops watching.
func (w *retryWatch) flush(data []byte, end int) int {
	end += copy(data[end:], w.deferred)
	w.deferred = w.deferred[:0]
	w.active, w.candidate = false, false
	return end
}

// decide runs after a batch whose ReadyForQuery completed a candidate answer: when routing
// moved away from this backend (routeMovedAway) it returns errRetryRequest; otherwise it
// relays the held-back answer, 25006 and all.
func (w *retryWatch) decide(r *relay) error {
	if !w.due {
		return nil
	}
	s := r.s
	w.due = false
	if s.routeMovedAway() {
		w.deferred = w.deferred[:0]
		w.active, w.candidate = false, false
		return errRetryRequest
	}
	answer := w.deferred
	w.deferred = nil
	w.active, w.candidate = false, false
	s.mu.Lock()
	s.disarmRetryLocked()
	s.mu.Unlock()
	if err := r.write(answer); err != nil {
		return &relayWriteError{err}
	}
	return nil
}

// retryableFatal reports whether a backend lost after a FATAL 57P0x may have its request
// retried: the armed request's answer had not started (nothing relayed, no result). s.mu is
// held.
func (w *retryWatch) retryableFatal(s *session, fatal []byte) bool {
	return fatal != nil && s.retry.armed && s.retry.seg == s.readyReceived &&
		(w.active || len(w.deferred) == 0) && s.syncsSent == s.readyReceived+1
}
