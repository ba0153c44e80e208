package proxy

import (
	"bytes"
	"encoding/binary"
)

// backendSide is the backend→client relay's own state. Owner: that relay's goroutine.
//
// The relay reads the bodies of only a few backend message types: ReadyForQuery (status),
// ParameterStatus (what the client has seen, replayed after a move), ErrorResponse (only its
// severity and code, and only when it may matter: a FATAL that announces the backend's end,
// or the error of a request that may be retried) and, after a move, ParseComplete (to drop the
// ones of re-prepares).
type backendSide struct {
	lastStatus byte // status of the last ReadyForQuery (the status before the request answered now)
	segErr     bool // an ErrorResponse came for the request being answered
	completes  int  // ParseComplete messages for the request being answered

	// fatal is a FATAL 57P01/57P02/57P03 the backend sent before going away; it is not
	// relayed (the session may move), but told to the client when the session ends.
	fatal []byte
	// fatalRelayed: another FATAL was relayed; the client ends the session itself.
	fatalRelayed bool

	retry retryWatch // the request in flight, while it may be retried (retry.go)
}

// reset prepares for a new backend connection.
func (b *backendSide) reset() {
	*b = backendSide{lastStatus: 'I'}
}

// forwardBackend forwards backend messages to the client. The fast path (no request record,
// no retry copy) reads headers only, except for ErrorResponse and ParameterStatus bodies, and
// takes session.mu only to publish ReadyForQuery; its frame stays small so that the relay
// goroutine keeps a minimal stack (see runClientToBackend). The rest is forwardBackendSlow.
func (r *relay) forwardBackend(data []byte) error {
	s, b := r.s, r.b
	if s.hasRecords.Load() || s.retryArmed.Load() || b.retry.active || s.injecting.Load() {
		return r.forwardBackendSlow(data)
	}
	i := r.f.continuation(data)
	w := i // output end: kept messages are moved down over dropped ones
	var readies, idleAt, idles uint64
	var status byte
	for {
		kind, typ, total, lengthErr := r.f.next(data, i, 0)
		if kind != frameWhole {
			if lengthErr != nil {
				return r.backendBatchFailed(data, w, readies, idleAt, idles, status, lengthErr)
			}
			if kind == frameStreamStart {
				w += copy(data[w:], data[i:])
				i = len(data)
			}
			break
		}
		start := i
		i += total
		switch typ {
		case 'Z':
			if total == 6 {
				readies++
				status = data[start+5]
				if status == 'I' {
					idleAt = readies
					idles++
				}
				b.lastStatus, b.segErr, b.completes = status, false, 0
			}
		case 'E', 'S':
			if !r.noteBackendMessage(typ, data[start:i]) {
				continue // dropped
			}
		case 'N':
			if isSyncRepCut(data[start:i]) {
				w += copy(data[w:], data[start:i])
				return r.afterSyncRepCut(data, w, i, readies > 0 && s.publishReadies(readies, idleAt, idles, status))
			}
		case '1':
			b.completes++
		}
		if w != start {
			copy(data[w:], data[start:i])
		}
		w += total
	}
	drained := readies > 0 && s.publishReadies(readies, idleAt, idles, status)
	if w > 0 {
		if err := r.write(data[:w]); err != nil {
			return &relayWriteError{err}
		}
		s.srv.counters.bytesToClients.Add(uint64(w))
	}
	if drained {
		return errSessionClosing
	}
	r.f.keep(data[i:])
	return nil
}

// backendBatchFailed ends a batch that holds an invalid message: what came before it is still
// relayed, then the error ends the relay.
//
//go:noinline
func (r *relay) backendBatchFailed(data []byte, w int, readies, idleAt, idles uint64, status byte, protocolErr *clientError) error {
	if readies > 0 {
		r.s.publishReadies(readies, idleAt, idles, status) // the protocol error ends the session anyway
	}
	return r.finishBackendBatch(data, len(data), w, protocolErr)
}

// noteBackendMessage handles an ErrorResponse or ParameterStatus on the fast path and reports
// whether to relay it.
//
//go:noinline
func (r *relay) noteBackendMessage(typ byte, msg []byte) bool {
	b := r.b
	if typ == 'S' {
		r.s.parameterStatus(msg)
		return true
	}
	b.segErr = true
	code, fatal := errorCode(msg)
	if fatal && isAdminShutdown(code) {
		// The backend is going away (shutdown, pg_terminate_backend of a switchover): the
		// session may move without the client seeing it.
		b.fatal = append(b.fatal[:0], msg...)
		return false
	}
	if fatal {
		b.fatalRelayed = true // the client ends the session itself
	}
	return true
}

// publishReadies publishes the ReadyForQuery messages of a batch and reports whether that
// ended a draining session (publishReadiesLocked).
//
//go:noinline
func (s *session) publishReadies(readies, idleAt, idles uint64, status byte) bool {
	s.mu.Lock()
	drained := s.publishReadiesLocked(readies, idleAt, idles, status)
	s.mu.Unlock()
	return drained
}

// publishReadiesLocked publishes the ReadyForQuery messages of a batch: readies of them, the
// idleAt-th (from 1; 0 for none) the last that said idle, idles how many said idle, and status
// the last one's. When that
// brings a draining session to a safe point, the session is closed and it returns true: the
// relay forwards the batch, then ends the session (the client hears Shutdown's reason). s.mu is
// held.
func (s *session) publishReadiesLocked(readies, idleAt, idles uint64, status byte) bool {
	s.noteAnsweredLocked(s.readyReceived, readies, idles)
	if idleAt > 0 {
		s.idleThrough = s.readyReceived + idleAt
	}
	s.readyReceived += readies
	s.txStatus = status
	if s.readyReceived == s.syncsSent && !s.extendedOpen {
		s.inflight = inflightFacts{}
		s.probe = commitProbe{}
	}
	return s.drainedLocked()
}

// finishBackendBatch writes the kept messages (data[:w]) and keeps the incomplete tail.
func (r *relay) finishBackendBatch(data []byte, i, w int, protocolErr *clientError) error {
	if w > 0 {
		if err := r.write(data[:w]); err != nil {
			return &relayWriteError{err}
		}
		r.s.srv.counters.bytesToClients.Add(uint64(w))
	}
	if protocolErr != nil {
		return protocolErr
	}
	if err := r.b.retry.decide(r); err != nil {
		return err
	}
	r.f.keep(data[i:])
	return nil
}

// forwardBackendSlow is forwardBackend while requests wait for their answers (segRecord) or a
// retry copy is kept: it holds session.mu for the whole batch, completes the records at each
// ReadyForQuery, drops the ParseComplete of re-prepares, and holds back the answer of a request
// that may be retried (retry.go).
//
//go:noinline
func (r *relay) forwardBackendSlow(data []byte) error {
	s, b := r.s, r.b
	i := r.f.continuation(data)
	s.mu.Lock()
	b.retry.begin(s)
	w := i
	var readies, idleAt, idles uint64
	var status byte
	var protocolErr *clientError
	cut := false // a WARNING says a commit's wait for synchronous replication was cut (syncrep.go)
	for !cut {
		kind, typ, total, lengthErr := r.f.next(data, i, 0)
		if kind != frameWhole {
			protocolErr = lengthErr
			if kind == frameStreamStart {
				w = b.retry.result(s, data, w) // a large result: the request ran
				w += copy(data[w:], data[i:])
				i = len(data)
			}
			break
		}
		msg := data[i : i+total]
		i += total
		// Messages the proxy's own requests get are consumed here; a FATAL is not theirs: the
		// backend ends (noteBackendMessage keeps it aside), and it came before the COMMIT ran.
		if ownAnswer := typ != 'N' && typ != 'A' && typ != 'S' && !(typ == 'E' && isFatal(msg)); ownAnswer && s.probe.sent && !s.probe.answered {
			// The answer of the proxy's own transaction id probe (resolve.go).
			if s.consumeProbeMessage(typ, msg) {
				w += copy(data[w:], msg)
			}
			continue
		} else if ownAnswer && s.reprepare.sent && !s.reprepare.answered {
			s.consumeReprepareMessage(typ) // the proxy's own re-prepares (reprepare.go)
			continue
		}
		keep := true
		switch typ {
		case 'Z':
			if total == 6 {
				readies++
				status = msg[5]
				if status == 'I' {
					idleAt = readies
					idles++
				}
				var ok bool
				if w, ok = b.retry.readyForQuery(s, data, w, msg); !ok {
					keep = false
				} else {
					s.resolveSegment(s.readyReceived+readies-1, b, status)
				}
				b.lastStatus, b.segErr, b.completes = status, false, 0
			}
		case 'E':
			if s.probe.sent && !s.probe.answered && isFatal(msg) {
				s.probe.endedBefore = true // the COMMIT behind the probe never ran (resolve.go)
			}
			if keep = r.noteBackendMessage(typ, msg); keep {
				keep = b.retry.errorResponse(s, msg, codeOf(msg))
			}
		case '1':
			b.completes++
			if s.isReprepare(s.readyReceived+readies, b.completes-1) {
				keep = false
			} else {
				keep = b.retry.message(typ, msg)
			}
		case 'S':
			s.parameterStatus(msg)
		case 'N':
			cut = isSyncRepCut(msg) // relayed in place like every notice; the rest waits
		case 'A':
			// Asynchronous: always relayed in place.
		default:
			if isResultMessage(typ) {
				w = b.retry.result(s, data, w)
			} else {
				keep = b.retry.message(typ, msg)
			}
		}
		if keep {
			w += copy(data[w:], msg)
		}
	}
	w = b.retry.endOfBatch(data, w)
	drained := readies > 0 && s.publishReadiesLocked(readies, idleAt, idles, status)
	s.mu.Unlock()
	if cut {
		return r.afterSyncRepCut(data, w, i, drained)
	}
	if err := r.finishBackendBatch(data, i, w, protocolErr); err != nil || !drained {
		return err
	}
	return errSessionClosing
}

// resolveSegment completes the record of request seg at its ReadyForQuery and applies its
// effects to the session state. s.mu is held.
func (s *session) resolveSegment(seg uint64, b *backendSide, status byte) {
	for _, rec := range s.records {
		if rec.seg != seg || rec.resolved {
			continue
		}
		rec.resolved, rec.errored, rec.completes = true, b.segErr, b.completes
		if len(rec.items) > 0 {
			s.stateLocked().apply(rec.items, rec.statements, segOutcome{before: b.lastStatus, after: status, errored: b.segErr})
		}
		return
	}
	if s.state != nil && len(s.state.pending) > 0 && status == 'I' {
		// A transaction with pending changes ended in a request that was not inspected as
		// transaction control: what became of the changes is unknown.
		s.state.apply(nil, 1, segOutcome{before: b.lastStatus, after: status})
	}
}

// isReprepare reports whether the ParseComplete number idx of request seg answers a Parse the
// proxy sent itself. s.mu is held.
func (s *session) isReprepare(seg uint64, idx int) bool {
	for _, rec := range s.records {
		if rec.seg != seg {
			continue
		}
		for _, p := range rec.parses {
			if p.idx == idx {
				return p.injected
			}
		}
		return false
	}
	return false
}

// parameterStatus records a ParameterStatus the client is sent.
func (s *session) parameterStatus(msg []byte) {
	name, rest := splitCString(msg[5:])
	value := cstring(rest)
	if old, ok := s.serverParams[string(name)]; ok && old == string(value) {
		return
	}
	if s.serverParams == nil {
		s.serverParams = make(map[string]string)
	}
	s.serverParams[string(name)] = string(value)
	if string(name) == "standard_conforming_strings" {
		s.backslashQuotes.Store(string(value) == "off")
	}
}

// isResultMessage reports whether a backend message type shows that a request ran (as opposed
// to the answers to Parse, Bind and Describe, which come before execution).
func isResultMessage(typ byte) bool {
	switch typ {
	case 'C', 'D', 'I', 's', 'G', 'H', 'W', 'd', 'c', 'V':
		return true
	}
	return false
}

// errorCode returns the SQLSTATE of an ErrorResponse message and whether its severity is FATAL
// or PANIC. It does not allocate.
func errorCode(msg []byte) (code []byte, fatal bool) {
	body := msg[5:]
	for len(body) > 0 && body[0] != 0 {
		field := body[0]
		end := bytes.IndexByte(body[1:], 0)
		if end < 0 {
			return code, fatal
		}
		value := body[1 : 1+end]
		switch field {
		case 'V':
			fatal = string(value) == "FATAL" || string(value) == "PANIC"
		case 'S':
			if !fatal {
				fatal = string(value) == "FATAL" || string(value) == "PANIC"
			}
		case 'C':
			code = value
		}
		body = body[2+end:]
	}
	return code, fatal
}

// isAdminShutdown reports whether a FATAL's SQLSTATE says the server ended the connection
// because it is shutting down or was told to end it (57P01 admin_shutdown, 57P02
// crash_shutdown, 57P03 cannot_connect_now): the backend is going away, not the session's fault.
func isAdminShutdown(code []byte) bool {
	switch string(code) {
	case codeAdminShutdown, codeCrashShutdown, codeCannotConnectNow:
		return true
	}
	return false
}

// appendParameterStatus appends a ParameterStatus message.
func appendParameterStatus(dst []byte, name, value string) []byte {
	dst = append(dst, 'S', 0, 0, 0, 0)
	start := len(dst) - 4
	dst = append(dst, name...)
	dst = append(dst, 0)
	dst = append(dst, value...)
	dst = append(dst, 0)
	binary.BigEndian.PutUint32(dst[start:], uint32(len(dst)-start))
	return dst
}

// isFatal reports whether an ErrorResponse's severity is FATAL or PANIC.
func isFatal(msg []byte) bool {
	_, fatal := errorCode(msg)
	return fatal
}
