package proxy

import (
	"bytes"
	"github.com/pgquorum/pgquorum/proxy/sqlclass"
)

// Client message inspection
//
// The client→backend relay reads the body of a few message types only: Query and Parse (the
// SQL text, see package sqlclass), Bind, Execute, Describe and Close (statement and portal names).
// Everything else is forwarded on its header alone. Per request (a "segment": the messages up
// to and including a Sync, or one Query) it learns:
//
//   - whether the request may commit or write (for the answer after a lost backend, and for
//     cancel requests), published in session.inflight;
//   - what the request does to the session's replayable state, kept in a segRecord until
//     PostgreSQL's answer says whether it took effect (sessionState.apply);
//   - which named statements it creates (kept once their ParseComplete arrives) and uses
//     (prepared again first after a move: the client's original Parse is sent ahead of the Bind
//     or Describe, and the backend→client relay drops the ParseComplete the client did not ask
//     for).
//
// Inspection runs under session.mu (it publishes to the session as it goes), before the bytes
// are written to the backend, so the backend→client relay always knows about a request before
// its answer can arrive.

// segRecord is what one request does that must wait for its answer. The client→backend relay
// creates it before the request's bytes are written; the backend→client relay completes it at
// the request's ReadyForQuery; the client→backend relay then applies the registry part and
// drops it. Guarded by session.mu.
type segRecord struct {
	seg        uint64          // the request's index: how many requests were sent before it
	items      []sqlclass.Item // its effects on session state and transaction, in order
	statements int             // how many statements it held (for failed multi-statement requests)
	parses     []parseRef      // named Parse messages in it (the client's and re-prepares)

	// Set by the backend→client relay at the request's ReadyForQuery.
	resolved  bool
	errored   bool
	completes int // ParseComplete messages received
}

// parseRef is a Parse message of a segment: its position among the segment's Parse messages
// (PostgreSQL answers each with one ParseComplete, in order, until an error), and what it
// prepares.
type parseRef struct {
	idx      int
	name     string
	entry    *namedStatement
	injected bool // sent by the proxy: its ParseComplete is not for the client
}

// stmtClass is what an unnamed statement or a portal runs.
type stmtClass struct {
	sum  sqlclass.Summary
	text []byte          // the SQL text, kept only when its state items may be needed
	stmt *namedStatement // a named statement the portal runs: its text is in its Parse message
}

// worstCase is the class of a statement the proxy could not read: it may do anything.
var worstCase = sqlclass.Summary{Uncertain: true, Writes: true, MayCommit: true}

// unknownStatement is the class of a named statement or portal the proxy did not see prepared
// (a SQL PREPARE used through Bind, or a name PostgreSQL will reject): it may write and commit,
// but a prepared statement cannot change session state (PREPARE takes only SELECT, INSERT,
// UPDATE, DELETE, MERGE and VALUES).
var unknownStatement = sqlclass.Summary{Writes: true, MayCommit: true}

// clientSide is the client→backend relay's own state. Owner: that relay's goroutine; the
// parts published to the session are written under session.mu.
type clientSide struct {
	reg           statementRegistry
	unnamed       stmtClass // the unnamed prepared statement
	unnamedPortal stmtClass // the unnamed portal
	// Named portals (rare; portals.go): by PostgreSQL's key, forgotten when PostgreSQL forgets
	// them.
	portals             map[string]portalEntry
	portalsOverflow     bool   // a portal was not remembered (maxTrackedPortals) since the last idle point
	portalsEndedThrough uint64 // session.idleThrough when ended portals were last dropped

	seg segAccum // the request being sent

	// txEffects: a request with session-state effects was sent since the session was last
	// seen idle; until then, transaction control statements need their items too.
	txEffects bool
	// txWrites: a request that may write was sent since the session was last seen idle; a
	// COMMIT after only reads is not probed (resolve.go).
	txWrites bool

	out []byte // output when the proxy adds messages (re-prepares); reused
	// replace: the message to send instead of the one just inspected (a refused statement,
	// asynccommit.go); taken by the relay.
	replace []byte

	// A Query or Parse larger than streamThreshold being forwarded in pieces, whose SQL text
	// is scanned as it passes (inspectStreamStart).
	streamScan *sqlclass.Scanner
	streamType byte

	// While the backend link is down (see local.go).
	linkDown      bool
	mode          localMode
	discardStatus byte      // modeDiscard: the ReadyForQuery status that answers the Sync
	discardNext   localMode // modeDiscard: the mode after the Sync
	held          []byte    // client bytes read but not forwarded yet (hold, move, retry)
}

// segAccum accumulates the facts of the request being sent; it may span several reads.
type segAccum struct {
	open      bool // a message of the request was seen
	alone     bool // nothing else was in flight when it started
	mayCommit bool
	writes    bool
	txControl bool
	singleRB  bool // the request is a single simple-protocol ROLLBACK
	rec       *segRecord
	parseIdx  int // Parse messages sent in the request so far
}

// batchFacts is what the messages inspected so far in one batch add.
type batchFacts struct {
	syncs uint64 // requests completed in the batch
}

// inspectClient inspects one complete client message (msg includes the header) before it is
// forwarded, and returns a message to send ahead of it (a re-prepare), or nil. s.mu is held.
// Each message type has its own small function, so that this path keeps a small stack.
func (c *clientSide) inspectClient(s *session, typ byte, msg []byte, f *batchFacts) (ahead []byte) {
	if !c.seg.open {
		c.seg.alone = s.syncsSent+f.syncs == s.readyReceived && !s.extendedOpen
	}
	switch typ {
	case 'Q':
		return c.inspectQuery(s, msg[5:], f)
	case 'P':
		c.inspectParse(s, msg, f)
	case 'B':
		return c.inspectBind(s, msg[5:], f)
	case 'E':
		c.inspectExecute(s, msg[5:], f)
	case 'D':
		c.seg.open = true
		if body := msg[5:]; len(body) > 1 && body[0] == 'S' {
			return c.prepareBeforeUse(s, f, cstring(body[1:]))
		}
	case 'C':
		c.inspectClose(s, msg[5:])
	case 'S':
		c.endSegment(s, f)
	case 'F':
		c.seg.writes = true
		c.seg.mayCommit = true
		c.txWrites = true
		c.seg.txControl = true // a function may do anything
		c.endSegment(s, f)
	case 'H':
		c.seg.open = true
	}
	return nil
}

// inspectQuery inspects a Query and returns the transaction id probe to send ahead of it when
// it is the COMMIT of an explicit transaction with nothing else in flight (resolve.go).
//
//go:noinline
func (c *clientSide) inspectQuery(s *session, body []byte, f *batchFacts) (ahead []byte) {
	text := cstring(body)
	sum := sqlclass.Classify(text, s.backslashQuotes.Load())
	if sum.SyncCommit && s.refuseAsyncCommit(text) {
		// Sent instead: one statement that fails and changes nothing.
		c.replace, text, sum = asyncCommitQuery, nil, sqlclass.Summary{Statements: 1}
	}
	switch {
	case c.seg.alone && s.txStatus == 'T' && sum.SingleCommit() && c.txWrites && !s.reprepare.sent:
		ahead = xactIDProbe
		s.probe = commitProbe{sent: true}
		s.injecting.Store(true)
	case c.reg.lazy > 0:
		ahead = c.reprepareForExecute(s, text)
	}
	c.addStatements(s, f, sum, text, true)
	c.endSegment(s, f)
	return ahead
}

//go:noinline
func (c *clientSide) inspectParse(s *session, msg []byte, f *batchFacts) {
	name, rest := splitCString(msg[5:])
	text := cstring(rest)
	sum := sqlclass.Classify(text, s.backslashQuotes.Load())
	if sum.SyncCommit && s.refuseAsyncCommit(text) {
		// Sent (and kept for re-preparing) instead: a statement that fails when executed.
		msg = refusedParse(name, rest[min(len(text)+1, len(rest)):], sqlclass.ParamCount(text, s.backslashQuotes.Load()))
		c.replace, sum = msg, sqlclass.Summary{Statements: 1}
		_, rest = splitCString(msg[5:])
		text = cstring(rest)
	}
	if len(name) == 0 {
		c.unnamed = c.classOf(sum, text)
	} else {
		entry, tooLarge := c.reg.parsed(string(name), msg, sum)
		if tooLarge {
			s.stateLocked().setUnmovable(reasonStateTooLarge)
		}
		if entry != nil {
			rec := c.record(s, f)
			rec.parses = append(rec.parses, parseRef{idx: c.seg.parseIdx, name: string(name), entry: entry})
		}
	}
	c.seg.parseIdx++
	c.seg.open = true
}

//go:noinline
func (c *clientSide) inspectBind(s *session, body []byte, f *batchFacts) []byte {
	portal, rest := splitCString(body)
	stmt := cstring(rest)
	ahead := c.prepareBeforeUse(s, f, stmt)
	c.seg.open = true
	c.setPortal(s, f, portal, c.bindClass(stmt))
	return ahead
}

// bindClass is what a portal bound to the named statement stmt ("" = the unnamed one) runs.
func (c *clientSide) bindClass(stmt []byte) stmtClass {
	if len(stmt) == 0 {
		return c.unnamed
	}
	entry := c.reg.byName[string(stmt)]
	if entry == nil {
		return stmtClass{sum: unknownStatement}
	}
	class := stmtClass{sum: entry.sum}
	if needsText(entry.sum) {
		class.stmt = entry
	}
	return class
}

// setPortal records what the portal a Bind creates runs.
func (c *clientSide) setPortal(s *session, f *batchFacts, portal []byte, class stmtClass) {
	if len(portal) == 0 {
		c.unnamedPortal = class
	} else {
		c.bindPortal(s, portal, s.syncsSent+f.syncs, class)
	}
}

// inspectStreamedBind is inspectBind for a Bind forwarded in pieces (large parameters): body
// is its first piece, which holds at least the first streamPrefix bytes, so at least a
// portal's key (portalKey). A statement name the piece cuts is not known: the portal then runs
// the worst case.
func (c *clientSide) inspectStreamedBind(s *session, body []byte, f *batchFacts) {
	portal, class := body, stmtClass{sum: worstCase}
	if i := bytes.IndexByte(body, 0); i >= 0 {
		portal = body[:i]
		if rest := body[i+1:]; bytes.IndexByte(rest, 0) >= 0 {
			class = c.bindClass(cstring(rest))
		}
	}
	c.setPortal(s, f, portal, class)
}

//go:noinline
func (c *clientSide) inspectExecute(s *session, body []byte, f *batchFacts) {
	class := &c.unnamedPortal
	if portal := cstring(body); len(portal) > 0 {
		named := c.portal(portal)
		class = &named
	}
	c.addStatements(s, f, class.sum, c.textOf(class), false)
}

//go:noinline
func (c *clientSide) inspectClose(s *session, body []byte) {
	c.seg.open = true
	if len(body) < 2 {
		return
	}
	name := cstring(body[1:])
	switch {
	case body[0] == 'S' && len(name) > 0:
		// Protocol and SQL prepared statements share one namespace.
		c.reg.remove(string(name))
		if s.state != nil {
			s.state.applyItem(sqlclass.Item{Op: sqlclass.OpDeallocate, Name: string(name)})
		}
	case body[0] == 'S':
		c.unnamed = stmtClass{}
	case body[0] == 'P' && len(name) > 0:
		c.closePortal(s, name)
	}
}

// inspectStreamStart inspects the first piece of a message that is forwarded in pieces (its
// total size is over streamThreshold; the piece holds at least streamPrefix bytes). Such a
// message is not kept: the proxy assumes it may commit and write, and reads the SQL text of a
// Query or Parse as it passes (streamPiece) to learn whether it changes session state. A named
// statement this large is not kept for re-preparing, so it makes the session unmovable.
// s.mu is held.
func (c *clientSide) inspectStreamStart(s *session, typ byte, piece []byte, f *batchFacts) {
	body := piece[5:]
	if !c.seg.open {
		c.seg.alone = s.syncsSent+f.syncs == s.readyReceived && !s.extendedOpen
	}
	c.seg.open = true
	switch typ {
	case 'Q':
		c.seg.mayCommit, c.seg.writes, c.seg.txControl = true, true, true
		c.txWrites = true
		c.startStreamScan(s, typ, body)
		c.endSegment(s, f)
	case 'P':
		name, rest := splitCString(body)
		if len(name) > 0 {
			s.stateLocked().setUnmovable(reasonLargeStatement)
		} else {
			c.unnamed = stmtClass{sum: worstCase}
			c.startStreamScan(s, typ, rest)
		}
		c.seg.parseIdx++
	case 'F':
		c.seg.writes, c.seg.mayCommit, c.seg.txControl = true, true, true
		c.txWrites = true
		c.endSegment(s, f)
	case 'B':
		c.inspectStreamedBind(s, body, f)
	}
}

// startStreamScan starts reading the SQL text of a streamed Query or Parse.
func (c *clientSide) startStreamScan(s *session, typ byte, text []byte) {
	if c.streamScan == nil {
		c.streamScan = new(sqlclass.Scanner)
	}
	c.streamScan.Reset(s.backslashQuotes.Load())
	c.streamType = typ
	c.streamPiece(s, text)
}

// streamPiece reads a further piece of the SQL text of a streamed Query or Parse; the text ends
// at its NUL byte. s.mu is held.
func (c *clientSide) streamPiece(s *session, piece []byte) {
	if c.streamScan == nil {
		return
	}
	text := cstring(piece)
	c.streamScan.Feed(text)
	if len(text) == len(piece) {
		return // the text goes on in the next piece
	}
	sum := c.streamScan.Finish()
	c.streamScan = nil
	if c.streamType == 'P' {
		c.unnamed = stmtClass{sum: sum} // its text is not kept: Execute assumes nothing more
	}
	if sum.Effects || sum.Unmovable != "" || sum.Uncertain || sum.TxControl && c.txEffects {
		s.stateLocked().setUnmovable(reasonLargeStatement)
	}
}

// prepareBeforeUse returns the Parse message to send before a use of the named statement, when
// the session moved since it was prepared.
func (c *clientSide) prepareBeforeUse(s *session, f *batchFacts, stmt []byte) []byte {
	if len(stmt) == 0 || c.reg.lazy == 0 {
		return nil
	}
	entry := c.reg.needsPrepare(string(stmt))
	if entry == nil {
		return nil
	}
	rec := c.record(s, f)
	rec.parses = append(rec.parses, parseRef{idx: c.seg.parseIdx, name: string(stmt), entry: entry, injected: true})
	c.seg.parseIdx++
	return entry.parse
}

// classOf returns what an unnamed statement does, keeping its text only when its state items
// may be needed at Execute.
func (c *clientSide) classOf(sum sqlclass.Summary, text []byte) stmtClass {
	class := stmtClass{sum: sum}
	if needsText(sum) {
		class.text = append([]byte(nil), text...)
	}
	return class
}

// needsText reports whether the text of a statement that does sum may be needed at Execute (for
// its state items).
func needsText(sum sqlclass.Summary) bool {
	return sum.Effects || sum.TxControl || sum.Unmovable != "" || sum.Uncertain
}

// textOf returns the SQL text a class runs (nil when it was not kept).
func (c *clientSide) textOf(class *stmtClass) []byte {
	if class.stmt == nil {
		return class.text
	}
	_, rest := splitCString(class.stmt.parse[5:])
	return cstring(rest)
}

// addStatements adds the statements of a Query or an Execute to the request being sent.
func (c *clientSide) addStatements(s *session, f *batchFacts, sum sqlclass.Summary, text []byte, simple bool) {
	seg := &c.seg
	first := !seg.open
	seg.open = true
	seg.mayCommit = seg.mayCommit || sum.MayCommitOrUnknown()
	seg.writes = seg.writes || !sum.ReadOnly()
	c.txWrites = c.txWrites || !sum.ReadOnly() && !sum.TxControl
	seg.txControl = seg.txControl || sum.TxControl || sum.Uncertain
	seg.singleRB = first && simple && sum.SingleRollback()
	if !(sum.Effects || sum.Unmovable != "" || sum.Uncertain || sum.TxControl && c.txEffects) {
		return
	}
	if text == nil {
		// The text was not kept: its effects cannot be replayed.
		s.stateLocked().setUnmovable(reasonLargeStatement)
		return
	}
	rec := c.record(s, f)
	rec.items = append(rec.items, sqlclass.StateItems(text, s.backslashQuotes.Load())...)
	rec.statements += max(sum.Statements, 1)
	if sum.Effects {
		c.txEffects = true
	}
}

// record returns the request's segRecord, creating and publishing it. s.mu is held.
func (c *clientSide) record(s *session, f *batchFacts) *segRecord {
	if c.seg.rec == nil {
		c.seg.rec = &segRecord{seg: s.syncsSent + f.syncs}
		s.records = append(s.records, c.seg.rec)
		s.hasRecords.Store(true)
	}
	return c.seg.rec
}

// endSegment finishes the request being sent (a Sync, Query or FunctionCall) and publishes
// what it may do. s.mu is held.
func (c *clientSide) endSegment(s *session, f *batchFacts) {
	c.publishOpen(s, f, true)
	f.syncs++
	c.seg = segAccum{}
}

// publishOpen publishes what the request being sent may do (also before it is complete: an
// extended-protocol batch may be executing before its Sync). s.mu is held.
func (c *clientSide) publishOpen(s *session, f *batchFacts, complete bool) {
	if !c.seg.open {
		return
	}
	if c.seg.alone {
		s.inflight = inflightFacts{mayCommit: c.seg.mayCommit, writes: c.seg.writes, txControl: c.seg.txControl,
			rollbackOnly: complete && c.seg.singleRB}
		return
	}
	s.inflight.mayCommit = s.inflight.mayCommit || c.seg.mayCommit
	s.inflight.writes = s.inflight.writes || c.seg.writes
	s.inflight.txControl = s.inflight.txControl || c.seg.txControl
	s.inflight.rollbackOnly = false
}

// applyResolved applies the answered requests to the statement registry and drops them.
// s.mu is held.
func (c *clientSide) applyResolved(s *session) {
	n := 0
	for _, rec := range s.records {
		if !rec.resolved {
			break
		}
		n++
		for _, p := range rec.parses {
			if p.idx < rec.completes {
				c.reg.confirm(p.name, p.entry)
			} else {
				c.reg.failed(p.name, p.entry)
			}
		}
		if rec.errored {
			continue // a failed DEALLOCATE did nothing; after a failed multi-statement request the session state says unmovable
		}
		for _, it := range rec.items {
			switch it.Op {
			case sqlclass.OpDeallocate:
				c.reg.remove(it.Name)
			case sqlclass.OpDeallocateAll, sqlclass.OpDiscardAll:
				c.reg.clear()
			}
		}
	}
	if n > 0 {
		clear(s.records[:n])
		s.records = s.records[n:]
		if len(s.records) == 0 {
			s.records = nil
			s.hasRecords.Store(false)
		}
	}
}

// cstring returns b up to its first NUL byte (all of b when there is none).
func cstring(b []byte) []byte {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		return b[:i]
	}
	return b
}

// splitCString returns the NUL-terminated string at the start of b and what follows it.
func splitCString(b []byte) (s, rest []byte) {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		return b[:i], b[i+1:]
	}
	return b, nil
}
