package proxy

import (
	"github.com/pgquorum/pgquorum/proxy/sqlclass"
	"slices"
	"strings"
)

// sessionState is the part of a session's PostgreSQL state the proxy replays on a new backend
// after a move: session-level settings (SET/RESET), SQL-level prepared statements (PREPARE)
// and LISTEN channels, plus why the session cannot be moved, if it cannot. Startup parameters
// are replayed by the startup message itself, and prepared statements created with the
// protocol's Parse message by the statement registry (statements.go).
//
// Changes are applied only once PostgreSQL has answered the request that made them, with the
// outcome (error or not, transaction status before and after): a SET inside a transaction
// waits in pending until COMMIT, and is dropped by ROLLBACK or ROLLBACK TO SAVEPOINT. Whatever
// cannot be decided for sure makes the session unmovable, never wrongly movable.
//
// It is a plain value with no I/O; apply and replaySQL are pure. Owner: guarded by session.mu
// (written by the backend→client relay when answers arrive, read by the client→backend relay
// when it moves the session).
type sessionState struct {
	settings  []namedText // SET statements in the order they were last made, one per setting
	prepared  []namedText // SQL PREPARE statements
	listens   []string    // LISTEN channels
	unmovable string      // why the session cannot be moved; "" when it can

	pending    []sqlclass.Item // transactional changes of the open transaction, not yet committed
	savepoints []savepointMark // savepoints of the open transaction
	textBytes  int             // bytes of statement text kept
}

// namedText is a setting or prepared statement with the statement that makes it.
type namedText struct {
	name string
	text string
}

// savepointMark is a savepoint and how many pending changes came before it.
type savepointMark struct {
	name    string
	pending int
}

// Reasons a session cannot be moved that come from the proxy's own limits and knowledge (the
// reasons that come from a statement's text are sqlclass.Reason*).
const (
	reasonLargeStatement   = "a statement that changes session state was larger than the proxy inspects"
	reasonUncertainOutcome = "the outcome of a statement that changes session state is unknown"
	reasonStateTooLarge    = "the session state to replay is too large"
)

// maxStateTextBytes bounds the statement text a session keeps for replay. A session that
// needs more becomes unmovable instead of growing without bound.
const maxStateTextBytes = 64 << 10

// segOutcome is how PostgreSQL answered one request (segment): the transaction status before
// it (the previous ReadyForQuery) and after it, and whether any ErrorResponse came.
type segOutcome struct {
	before, after byte
	errored       bool
}

// movable reports whether the session can be moved.
func (st *sessionState) movable() bool { return st.unmovable == "" }

// setUnmovable records the first reason the session cannot be moved.
func (st *sessionState) setUnmovable(reason string) {
	if st.unmovable == "" {
		st.unmovable = reason
	}
}

// apply applies what one answered request did. items are the request's statements' effects in
// order (sqlclass.StateItems), statements is how many statements the request held.
func (st *sessionState) apply(items []sqlclass.Item, statements int, out segOutcome) {
	if out.errored {
		st.applyFailed(items, statements, out)
		return
	}
	inTx := out.before == 'T' || out.before == 'E'
	aborted := out.before == 'E'
	appliedNow := false
	for _, it := range items {
		switch it.Op {
		case sqlclass.OpBegin:
			if !inTx {
				inTx, aborted = true, false
			}
		case sqlclass.OpCommit, sqlclass.OpCommitChain:
			if inTx && !aborted {
				for _, p := range st.pending {
					st.applyItem(p)
				}
			}
			st.pending, st.savepoints = nil, nil
			inTx, aborted = it.Op == sqlclass.OpCommitChain, false
		case sqlclass.OpRollback, sqlclass.OpRollbackChain:
			st.pending, st.savepoints = nil, nil
			inTx, aborted = it.Op == sqlclass.OpRollbackChain, false
		case sqlclass.OpTwoPhase:
			// PREPARE TRANSACTION hands the transaction over to the two-phase machinery;
			// what becomes of its setting changes is not worth guessing.
			if len(st.pending) > 0 {
				st.setUnmovable(reasonUncertainOutcome)
			}
			if inTx {
				st.pending, st.savepoints = nil, nil
				inTx, aborted = false, false
			}
		case sqlclass.OpSavepoint:
			if inTx {
				st.savepoints = append(st.savepoints, savepointMark{name: it.Name, pending: len(st.pending)})
			}
		case sqlclass.OpRelease, sqlclass.OpRollbackTo:
			if !inTx {
				continue
			}
			i := -1
			for j := len(st.savepoints) - 1; j >= 0 && i < 0; j-- { // the latest one of that name
				if st.savepoints[j].name == it.Name {
					i = j
				}
			}
			if i < 0 {
				st.setUnmovable(reasonUncertainOutcome)
				continue
			}
			if it.Op == sqlclass.OpRelease {
				st.savepoints = st.savepoints[:i]
			} else {
				st.pending = st.pending[:st.savepoints[i].pending]
				st.savepoints = st.savepoints[:i+1]
				aborted = false
			}
		case sqlclass.OpUnmovable:
			st.setUnmovable(it.Name)
		case sqlclass.OpExecute:
		default:
			if inTx && it.Op.Transactional() {
				st.pending = append(st.pending, it)
			} else {
				st.applyItem(it)
				appliedNow = true
			}
		}
	}
	// Cross-check with what PostgreSQL reported; a difference means a statement did something
	// the classifier did not see.
	if serverInTx := out.after == 'T' || out.after == 'E'; serverInTx != inTx {
		if len(st.pending) > 0 || appliedNow {
			st.setUnmovable(reasonUncertainOutcome)
		}
		if !serverInTx {
			st.pending, st.savepoints = nil, nil
		}
	}
}

// applyFailed handles a request that got an error: which of its statements ran is not known
// when it held several.
func (st *sessionState) applyFailed(items []sqlclass.Item, statements int, out segOutcome) {
	effects, txControl := false, false
	for _, it := range items {
		switch {
		case it.Op == sqlclass.OpUnmovable:
			st.setUnmovable(it.Name)
		case it.Op == sqlclass.OpExecute:
		case it.Op.TxControl():
			txControl = true
		default:
			effects = true
		}
	}
	ended := out.after == 'I'
	switch {
	case statements <= 1:
		// One statement failed: it changed nothing. If it was the one that ended the
		// transaction (a failed COMMIT), the transaction was rolled back.
	case !txControl && out.before == 'I':
		// An implicit transaction failed: its transactional changes are rolled back, but
		// which non-transactional ones (PREPARE, DEALLOCATE) ran is unknown.
		for _, it := range items {
			if it.Op.NonTransactional() {
				st.setUnmovable(reasonUncertainOutcome)
			}
		}
	case effects || txControl && len(st.pending) > 0:
		st.setUnmovable(reasonUncertainOutcome)
	}
	if ended {
		st.pending, st.savepoints = nil, nil
	}
}

// applyLost handles requests whose answer was lost with the backend. committedPossible says
// whether they may have committed (08007); otherwise the open transaction is known to be rolled
// back (40001), and nothing non-transactional can have happened only if no item is one.
func (st *sessionState) applyLost(items []sqlclass.Item, committedPossible bool) {
	for _, it := range items {
		switch {
		case it.Op == sqlclass.OpUnmovable:
			st.setUnmovable(it.Name)
		case it.Op == sqlclass.OpExecute, it.Op.TxControl():
		case committedPossible || !it.Op.Transactional():
			st.setUnmovable(reasonUncertainOutcome)
		}
	}
	if committedPossible && len(st.pending) > 0 {
		st.setUnmovable(reasonUncertainOutcome)
	}
	st.pending, st.savepoints = nil, nil
}

// applyItem makes one change part of the session's state.
func (st *sessionState) applyItem(it sqlclass.Item) {
	switch it.Op {
	case sqlclass.OpSet:
		st.settings = removeNamed(st.settings, it.Name)
		st.settings = append(st.settings, namedText{name: it.Name, text: it.Text})
	case sqlclass.OpReset:
		st.settings = removeNamed(st.settings, it.Name)
	case sqlclass.OpResetAll:
		// RESET ALL leaves the role (GUC_NO_RESET_ALL) alone.
		st.settings = slices.DeleteFunc(st.settings, func(s namedText) bool { return s.name != "role" })
	case sqlclass.OpListen:
		if !slices.Contains(st.listens, it.Name) {
			st.listens = append(st.listens, it.Name)
		}
	case sqlclass.OpUnlisten:
		st.listens = slices.DeleteFunc(st.listens, func(c string) bool { return c == it.Name })
	case sqlclass.OpUnlistenAll:
		st.listens = nil
	case sqlclass.OpPrepare:
		st.prepared = removeNamed(st.prepared, it.Name)
		st.prepared = append(st.prepared, namedText{name: it.Name, text: it.Text})
	case sqlclass.OpDeallocate:
		st.prepared = removeNamed(st.prepared, it.Name)
	case sqlclass.OpDeallocateAll:
		st.prepared = nil
	case sqlclass.OpDiscardAll:
		st.settings, st.prepared, st.listens = nil, nil, nil
		switch st.unmovable {
		case sqlclass.ReasonTempObject, sqlclass.ReasonWithHold, sqlclass.ReasonAdvisoryLock, sqlclass.ReasonSessionAuth, sqlclass.ReasonSetConfig:
			st.unmovable = "" // DISCARD ALL drops, closes, releases and resets these
		}
	}
	st.textBytes = 0
	for _, s := range st.settings {
		st.textBytes += len(s.text)
	}
	for _, p := range st.prepared {
		st.textBytes += len(p.text)
	}
	if st.textBytes > maxStateTextBytes {
		st.setUnmovable(reasonStateTooLarge)
	}
}

func removeNamed(list []namedText, name string) []namedText {
	return slices.DeleteFunc(list, func(n namedText) bool { return n.name == name })
}

// replaySQL returns the statements that give a fresh backend session this state, as one
// simple-protocol query ("" when there is nothing to replay). Settings come first (in the
// order they were made), then prepared statements (which depend on search_path), then LISTEN.
// Each statement ends with a newline before its ';' so that a trailing comment cannot swallow
// the separator.
func (st *sessionState) replaySQL() string {
	var b strings.Builder
	for _, s := range st.settings {
		b.WriteString(s.text)
		b.WriteString("\n;")
	}
	for _, p := range st.prepared {
		b.WriteString(p.text)
		b.WriteString("\n;")
	}
	for _, c := range st.listens {
		b.WriteString("LISTEN ")
		b.WriteString(quoteIdent(c))
		b.WriteString(";")
	}
	return b.String()
}

// quoteIdent quotes an identifier for SQL.
func quoteIdent(s string) string {
	return `"` + strings.ReplaceAll(s, `"`, `""`) + `"`
}
