package proxy

import "github.com/pgquorum/pgquorum/proxy/sqlclass"

// statementRegistry remembers the named prepared statements a client created with the
// protocol's Parse message, so that after a move each one is prepared again on the new backend
// just before its first use (a Bind or Describe naming it): the proxy sends the client's
// original Parse message ahead of it and drops the ParseComplete the client did not ask for.
// Statements a client never uses again cost nothing on the new primary.
//
// A Parse is remembered as soon as it is sent (tentative) and kept only once its ParseComplete
// arrives: a Parse that failed must not be replayed, and a Parse of a name that exists is
// rejected by PostgreSQL, so the first definition stays.
//
// Owner: the client→backend relay goroutine. The backend→client relay reports which Parse
// messages succeeded through segRecord (see inspect.go).
type statementRegistry struct {
	byName map[string]*namedStatement
	lazy   int // statements that are not prepared on the current backend
	bytes  int // total size of the kept Parse messages
}

// namedStatement is one protocol-level prepared statement.
type namedStatement struct {
	parse []byte           // the client's complete Parse message
	sum   sqlclass.Summary // what its text does (for Bind/Execute of it)
	state stmtState
}

// stmtState says where a named statement exists.
type stmtState uint8

const (
	stmtTentative stmtState = iota // sent to the current backend, answer not seen yet
	stmtPrepared                   // prepared on the current backend
	stmtLazy                       // prepared before a move; not on the current backend yet
	stmtInjected                   // re-prepare sent to the current backend, answer not seen yet
)

// maxStatementBytes bounds the Parse messages a session keeps for re-preparing. A session that
// prepares more becomes unmovable (reasonStateTooLarge) instead of growing without bound.
const maxStatementBytes = 1 << 20

// parsed records a client's Parse of a named statement and returns the entry to confirm when
// its ParseComplete arrives, or nil when PostgreSQL will reject it (the name exists) or the
// registry is full (tooLarge).
func (g *statementRegistry) parsed(name string, msg []byte, sum sqlclass.Summary) (entry *namedStatement, tooLarge bool) {
	if old, ok := g.byName[name]; ok {
		if old.state != stmtLazy {
			return nil, false // PostgreSQL answers 42P05 and keeps the first one
		}
		g.remove(name)
	}
	if g.bytes+len(msg) > maxStatementBytes {
		return nil, true
	}
	if g.byName == nil {
		g.byName = make(map[string]*namedStatement)
	}
	entry = &namedStatement{parse: append([]byte(nil), msg...), sum: sum, state: stmtTentative}
	g.byName[name] = entry
	g.bytes += len(msg)
	return entry, false
}

// confirm marks a statement prepared once its ParseComplete arrived.
func (g *statementRegistry) confirm(name string, entry *namedStatement) {
	if g.byName[name] != entry {
		return
	}
	if entry.state == stmtInjected || entry.state == stmtTentative {
		entry.state = stmtPrepared
	}
}

// failed handles a Parse whose ParseComplete never came (an error skipped it): a client's
// statement is forgotten, a re-prepared one is again to be prepared at its next use.
func (g *statementRegistry) failed(name string, entry *namedStatement) {
	if g.byName[name] != entry {
		return
	}
	switch entry.state {
	case stmtTentative:
		g.remove(name)
	case stmtInjected:
		entry.state = stmtLazy
		g.lazy++
	}
}

// needsPrepare returns the Parse message to send before a use of name on the current backend,
// or nil when the statement is there (or unknown: PostgreSQL then answers the client itself).
func (g *statementRegistry) needsPrepare(name string) *namedStatement {
	if g.lazy == 0 {
		return nil
	}
	entry := g.byName[name]
	if entry == nil || entry.state != stmtLazy {
		return nil
	}
	entry.state = stmtInjected
	g.lazy--
	return entry
}

// lookup returns the statement called name, or nil.
func (g *statementRegistry) lookup(name string) *namedStatement {
	return g.byName[name]
}

// remove forgets name (Close, DEALLOCATE).
func (g *statementRegistry) remove(name string) {
	entry, ok := g.byName[name]
	if !ok {
		return
	}
	if entry.state == stmtLazy {
		g.lazy--
	}
	g.bytes -= len(entry.parse)
	delete(g.byName, name)
}

// clear forgets every statement (DEALLOCATE ALL, DISCARD ALL).
func (g *statementRegistry) clear() {
	*g = statementRegistry{}
}

// moved is called when the session moved to a new backend: every prepared statement is to be
// prepared again at its next use; statements whose Parse was lost with the old backend are
// forgotten (their client got an error for that request).
func (g *statementRegistry) moved() {
	for name, entry := range g.byName {
		switch entry.state {
		case stmtPrepared, stmtInjected, stmtLazy:
			if entry.state != stmtLazy {
				g.lazy++
			}
			entry.state = stmtLazy
		case stmtTentative:
			g.remove(name)
		}
	}
}
