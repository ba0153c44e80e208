package proxy

import (
	"context"
	"encoding/binary"
	"errors"
	"github.com/pgquorum/pgquorum/proxy/sqlclass"
)

// Answering the client without a backend
//
// While the session has no backend (the link is down), the client→backend relay answers the
// client itself (see the table in loss.go): the next request of an idle session moves the
// session and is then sent; in a transaction that was lost, ROLLBACK is answered with success
// and anything else with 40001 (first) or 25P02 (after), like PostgreSQL in an aborted
// transaction; after an error in an extended-protocol batch, messages are discarded until the
// Sync, which is answered.

// takeVerdict waits for the backend→client relay's verdict on the lost backend and sets the
// local mode from it.
func (s *session) takeVerdict(c *clientSide) (lossVerdict, error) {
	select {
	case v := <-s.handoffChannels().parked:
		c.linkDown = true
		c.setMode(s, v.mode)
		c.discardStatus, c.discardNext = v.discardStatus, v.discardNext
		return v, nil
	case <-s.ctx.Done():
		return lossVerdict{}, errSessionClosing
	}
}

// detached runs when the client→backend relay finds the link down (or is woken because it
// went down): it takes the verdict from the backend→client relay, then acts on it.
func (s *session) detached(r *relay) error {
	c := r.c
	if !c.linkDown {
		v, err := s.takeVerdict(c)
		if err != nil {
			return err
		}
		switch {
		case v.resolve:
			if err := s.resolveCommit(r); err != nil {
				return err
			}
		case v.retry:
			s.mu.Lock()
			req := s.takeRetryLocked()
			s.mu.Unlock()
			c.held = append(req, c.held...)
		case v.eager && len(c.held) == 0:
			// The session listens to channels: move it now, so that notifications flow.
			if err := s.move(r, false); err != nil && !isHoldError(err) {
				return err
			}
		}
	}
	if c.linkDown && len(c.held) > 0 && c.mode == modeIdle {
		return s.moveForRequest(r)
	}
	return nil // run() goes on with the held bytes (answered locally) and the client
}

// moveForRequest moves the session for the request at the start of the held bytes. When no
// primary can be reached within the hold timeout, that request is refused (57P03) and the
// session stays without a backend.
func (s *session) moveForRequest(r *relay) error {
	err := s.move(r, true)
	if isHoldError(err) {
		return s.refuseHeld(r, err)
	}
	return err
}

// holdRequest runs when a new request arrived while routing does not allow the session's
// backend. The request (in clientSide.held) is not sent and the client is not read until a
// primary is agreed; then it goes to the same backend (the failover was aborted, or the lease
// came back) or the session moves to the new primary.
func (s *session) holdRequest(r *relay) error {
	cancel := s.startHolding()
	ctx, stop := s.holdContext()
	hold := s.srv.newHold(true)
	target, err := s.srv.waitRoute(ctx, Target{}, hold, cancel)
	if err == nil {
		hold.routed()
	}
	hold.finish(ctx)
	stop()
	s.stopHolding()
	if err == nil {
		s.mu.Lock()
		same := target.Address == s.target.Address && target.Name == s.target.Name && s.transitionLocked(evRouteBack)
		s.mu.Unlock()
		if same {
			return nil // run() sends the held request to the same backend
		}
	}
	// Let go of the old backend; the backend→client relay parks (nothing is in flight).
	s.dropBackend()
	if _, verr := s.takeVerdict(r.c); verr != nil {
		return verr
	}
	if err != nil {
		return s.refuseHeld(r, &holdError{err})
	}
	return s.detached(r)
}

// holdContext bounds a hold by the hold timeout and the session's end.
func (s *session) holdContext() (context.Context, context.CancelFunc) {
	return context.WithTimeout(s.ctx, s.srv.cfg.HoldTimeout)
}

// startHolding makes a client request that waits for a primary cancellable, and returns the
// channel a cancel request closes.
func (s *session) startHolding() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.holdCancel = make(chan struct{})
	return s.holdCancel
}

func (s *session) stopHolding() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.holdCancel = nil
}

// holdError is a failure to find a primary for a held request within the hold timeout.
type holdError struct{ err error }

func (e *holdError) Error() string { return e.err.Error() }
func (e *holdError) Unwrap() error { return e.err }

func isHoldError(err error) bool {
	var h *holdError
	return errors.As(err, &h)
}

// refuseHeld answers the request at the start of the held bytes with an error (the link is
// down): 57P03 when no primary was agreed in time or too many requests wait, 57014 when the
// client cancelled it. The request was never sent.
func (s *session) refuseHeld(r *relay, err error) error {
	c := r.c
	var ce *clientError
	switch {
	case errors.Is(err, errHoldCancelled):
		ce = errorf(codeQueryCanceled, "canceling statement due to user request").
			withDetail("The request was waiting for a primary and was not sent.")
	case errors.Is(err, errTooManyHeld):
		ce = errorf(codeCannotConnectNow, "too many requests are waiting for a primary PostgreSQL server").
			withDetail("The request was not sent; the proxy holds at most hold.max_held requests during a failover.").
			withHint("Retry later.")
	case errors.Is(err, context.DeadlineExceeded):
		ce = errorf(codeCannotConnectNow, "no primary PostgreSQL server is available").
			withDetail("No primary was agreed within the hold timeout (" + s.srv.cfg.HoldTimeout.String() + "); the request was not sent.").
			withHint("Retry later.")
	default:
		s.mu.Lock()
		closing := s.phase == phaseClosed
		s.mu.Unlock()
		if closing {
			return errSessionClosing
		}
		ce = errorf(codeCannotConnectNow, "no primary PostgreSQL server is available").withCause(err).
			withDetail("The request was not sent.")
	}
	s.srv.cfg.Metrics.ClientError(ce.Code)
	out := ce.appendErrorResponse(nil)
	if len(c.held) >= 5 && c.held[0] == 'Q' {
		// Drop the Query: it is answered. Of a large one, only the start was read: the rest
		// is skipped as it arrives.
		kind, _, size, lengthErr := r.f.next(c.held, 0, 0)
		switch {
		case lengthErr != nil:
			return lengthErr
		case kind == frameWhole:
			c.held = c.held[size:]
		default:
			r.f.skipRest(c.held) // the rest of it is dropped as it arrives
			c.held = nil
		}
		out = appendReadyForQuery(out, 'I')
	} else {
		// An extended-protocol batch: discard it up to its Sync, which is answered.
		c.setMode(s, modeDiscard)
		c.discardStatus, c.discardNext = 'I', modeIdle
	}
	if !s.writeToClient(out) {
		return errSessionClosing
	}
	return nil
}

// setMode changes how the client is answered while the link is down.
func (c *clientSide) setMode(s *session, m localMode) {
	c.mode = m
	s.mu.Lock()
	s.mode = m
	s.mu.Unlock()
}

// respondLocally handles client bytes while the link is down.
func (r *relay) respondLocally(data []byte) error {
	s, c := r.s, r.c
	i := r.f.continuation(data) // the rest of a message the lost backend was receiving: dropped
	var out []byte
	for len(data)-i >= 5 {
		if c.mode == modeIdle {
			// Only peeked: the request is kept whole and framed again when it is sent.
			typ, _, lengthErr := r.f.peek(data, i)
			if lengthErr != nil {
				s.writeToClient(out)
				return lengthErr
			}
			if typ == 'X' {
				s.writeToClient(out)
				return errClientTerminated
			}
			// A request: the session must move first.
			if !s.writeToClient(out) {
				return errSessionClosing
			}
			c.hold(data[i:])
			return errNeedMove
		}
		kind, typ, size, lengthErr := r.f.next(data, i, 0)
		if lengthErr != nil {
			s.writeToClient(out)
			return lengthErr
		}
		if kind == frameNone {
			break
		}
		if kind == frameStreamStart {
			// A large message that will be discarded or refused: skip it as it passes.
			out = c.answerLocally(s, typ, data[i:i+5], out)
			i += size
			break
		}
		if typ == 'X' {
			s.writeToClient(out)
			return errClientTerminated
		}
		out = c.answerLocally(s, typ, data[i:i+size], out)
		i += size
	}
	if !s.writeToClient(out) {
		return errSessionClosing
	}
	r.f.keep(data[i:]) // an incomplete message: handled when it is complete
	return nil
}

// answerLocally answers one client message while the link is down and the session is not
// idle, appending the answer to out.
func (c *clientSide) answerLocally(s *session, typ byte, msg, out []byte) []byte {
	switch c.mode {
	case modeDiscard:
		if typ == 'S' {
			out = appendReadyForQuery(out, c.discardStatus)
			c.setStatus(s, c.discardStatus)
			c.setMode(s, c.discardNext)
		}
		return out
	case modeExtAnswer:
		return c.answerExtendedEnd(s, typ, msg, out)
	}
	// modeTxLost or modeTxAborted.
	lost := c.mode == modeTxLost
	switch typ {
	case 'Q':
		if len(msg) < 6 {
			return c.failInTx(s, lost, out, true)
		}
		sum := sqlclass.Classify(cstring(msg[5:]), s.backslashQuotes.Load())
		switch {
		case sum.Statements == 0:
			out = append(out, 'I', 0, 0, 0, 4) // EmptyQueryResponse
			return appendReadyForQuery(out, c.clientStatus())
		case sum.SingleRollback(), sum.SingleCommit() && !lost:
			// ROLLBACK ends the lost transaction as asked; COMMIT of a transaction the
			// client knows failed is a ROLLBACK, as in PostgreSQL.
			out = appendCommandComplete(out, "ROLLBACK")
			out = appendReadyForQuery(out, 'I')
			c.setStatus(s, 'I')
			c.setMode(s, modeIdle)
			return out
		case sum.SingleCommit():
			ce := abortedByFailover(s.currentTarget().Name)
			s.srv.cfg.Metrics.ClientError(ce.Code)
			out = ce.appendErrorResponse(out)
			out = appendReadyForQuery(out, 'I')
			c.setStatus(s, 'I')
			c.setMode(s, modeIdle)
			return out
		}
		return c.failInTx(s, lost, out, true)
	case 'P':
		_, rest := splitCString(msg[5:])
		sum := sqlclass.Classify(cstring(rest), s.backslashQuotes.Load())
		if sum.SingleRollback() || sum.SingleCommit() && !lost {
			c.setMode(s, modeExtAnswer)
			return append(out, '1', 0, 0, 0, 4) // ParseComplete
		}
		return c.failInTx(s, lost, out, false)
	case 'S':
		return appendReadyForQuery(out, c.clientStatus())
	case 'd', 'c', 'f', 'H':
		return out // COPY data after an error is dropped, as PostgreSQL does
	}
	return c.failInTx(s, lost, out, false)
}

// failInTx answers a request in a lost transaction with 40001 (the first time) or 25P02.
// simple says it was a Query (answered with ReadyForQuery); an extended-protocol message is
// followed by discarding until its Sync.
func (c *clientSide) failInTx(s *session, lost bool, out []byte, simple bool) []byte {
	var ce *clientError
	if lost {
		ce = abortedByFailover(s.currentTarget().Name)
	} else {
		ce = errorf(codeInFailedTransaction, "current transaction is aborted, commands ignored until end of transaction block")
	}
	s.srv.cfg.Metrics.ClientError(ce.Code)
	out = ce.appendErrorResponse(out)
	if simple {
		c.setStatus(s, 'E')
		c.setMode(s, modeTxAborted)
		return appendReadyForQuery(out, 'E')
	}
	c.setMode(s, modeDiscard)
	c.discardStatus, c.discardNext = 'E', modeTxAborted
	return out
}

// answerExtendedEnd answers the rest of an extended-protocol ROLLBACK (Bind, Describe,
// Execute, Close, Sync) in a lost transaction.
func (c *clientSide) answerExtendedEnd(s *session, typ byte, msg, out []byte) []byte {
	switch typ {
	case 'B':
		return append(out, '2', 0, 0, 0, 4) // BindComplete
	case 'D':
		if len(msg) > 5 && msg[5] == 'S' {
			out = append(out, 't', 0, 0, 0, 6, 0, 0) // ParameterDescription: no parameters
		}
		return append(out, 'n', 0, 0, 0, 4) // NoData
	case 'E':
		return appendCommandComplete(out, "ROLLBACK")
	case 'C':
		return append(out, '3', 0, 0, 0, 4) // CloseComplete
	case 'S':
		c.setStatus(s, 'I')
		c.setMode(s, modeIdle)
		return appendReadyForQuery(out, 'I')
	case 'H':
		return out
	}
	c.setMode(s, modeTxLost)
	return c.failInTx(s, true, out, false)
}

// clientStatus is the transaction status the client sees in the current mode.
func (c *clientSide) clientStatus() byte {
	if c.mode == modeTxLost {
		return 'T'
	}
	return 'E'
}

// setStatus records the transaction status the proxy reported to the client.
func (c *clientSide) setStatus(s *session, status byte) {
	s.mu.Lock()
	s.txStatus = status
	s.mu.Unlock()
}

// appendReadyForQuery appends a ReadyForQuery message.
func appendReadyForQuery(dst []byte, status byte) []byte {
	return append(dst, 'Z', 0, 0, 0, 5, status)
}

// appendCommandComplete appends a CommandComplete message.
func appendCommandComplete(dst []byte, tag string) []byte {
	dst = append(dst, 'C', 0, 0, 0, 0)
	start := len(dst) - 4
	dst = append(dst, tag...)
	dst = append(dst, 0)
	binary.BigEndian.PutUint32(dst[start:], uint32(len(dst)-start))
	return dst
}
