package proxy

import "github.com/pgquorum/pgquorum/proxy/sqlclass"

// Re-preparing for SQL EXECUTE after a move
//
// A statement the client prepared with the protocol's Parse is prepared again on the new
// backend just before its first use by Bind or Describe (statements.go). A simple Query can use
// it too, with SQL EXECUTE name(...). When such a Query comes while statements wait to be
// prepared again (only after a move) and nothing else is in flight, the proxy sends, ahead of
// it in the same write, the client's original Parse of every statement it EXECUTEs followed by
// a Sync, and the backend→client relay consumes their answer (ParseComplete or an error, and
// ReadyForQuery) itself. A Parse that fails leaves the statement to be prepared again at its
// next use; the client's EXECUTE then fails as PostgreSQL makes it fail (26000), as it would
// have without the proxy's help. The Sync is what keeps a failed Parse from swallowing the
// client's Query (after an error, PostgreSQL skips messages until a Sync).

// reprepareRequest is the Parse+Sync the proxy sent ahead of a Query. Guarded by session.mu.
type reprepareRequest struct {
	sent     bool
	answered bool // its ReadyForQuery arrived
	failed   bool // a Parse failed
	entries  []parseRef
}

// syncMessage is the Sync that ends the proxy's re-prepares.
var syncMessage = []byte{'S', 0, 0, 0, 4}

// reprepareForExecute returns the messages to send ahead of a Query that EXECUTEs statements
// still to be prepared on this backend, or nil. s.mu is held.
func (c *clientSide) reprepareForExecute(s *session, text []byte) []byte {
	if c.reg.lazy == 0 || !c.seg.alone || s.reprepare.sent || s.probe.sent {
		return nil
	}
	var ahead []byte
	var entries []parseRef
	for _, it := range sqlclass.StateItems(text, s.backslashQuotes.Load()) {
		if it.Op != sqlclass.OpExecute || it.Name == "" {
			continue
		}
		if entry := c.reg.needsPrepare(it.Name); entry != nil {
			ahead = append(ahead, entry.parse...)
			entries = append(entries, parseRef{name: it.Name, entry: entry, injected: true})
		}
	}
	if ahead == nil {
		return nil
	}
	s.reprepare = reprepareRequest{sent: true, entries: entries}
	s.injecting.Store(true)
	return append(ahead, syncMessage...)
}

// consumeReprepareMessage handles a message of the re-prepares' answer in the backend→client
// relay; nothing of it is relayed. s.mu is held.
func (s *session) consumeReprepareMessage(typ byte) {
	switch typ {
	case 'E':
		s.reprepare.failed = true
	case 'Z':
		s.reprepare.answered = true
		s.injecting.Store(false)
	}
}

// applyReprepared records in the registry whether the re-prepares succeeded. s.mu is held.
func (c *clientSide) applyReprepared(s *session) {
	for _, p := range s.reprepare.entries {
		if s.reprepare.failed {
			c.reg.failed(p.name, p.entry)
		} else {
			c.reg.confirm(p.name, p.entry)
		}
	}
	s.reprepare = reprepareRequest{}
}
