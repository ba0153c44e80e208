package proxy

import (
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

	pending    []stateItem     // transactional changes of the open transaction, not yet committed
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
// order (stateItems), statements is how many statements the request held.
func (st *sessionState) apply(items []stateItem, statements int, out segOutcome) {
	if out.errored {
		st.applyFailed(items, statements, out)
		return
	}
	inTx := out.before == 'T' || out.before == 'E'
	aborted := out.before == 'E'
	appliedNow := false
	for _, it := range items {
		switch it.op {
		case opBegin:
			if !inTx {
				inTx, aborted = true, false
			}
		case opCommit, opCommitChain:
			if inTx && !aborted {
				for _, p := range st.pending {
					st.applyItem(p)
				}
			}
			st.pending, st.savepoints = nil, nil
			inTx, aborted = it.op == opCommitChain, false
		case opRollback, opRollbackChain:
			st.pending, st.savepoints = nil, nil
			inTx, aborted = it.op == opRollbackChain, false
		case opTwoPhase:
			// PREPARE TRANSACTION hands the transaction over to the two-phase machinery;
			// what becomes of its setting changes is not worth guessing.
			if len(st.pending) > 0 {
				st.setUnmovable(reasonUncertainOutcome)
			}
			if inTx {
				st.pending, st.savepoints = nil, nil
				inTx, aborted = false, false
			}
		case opSavepoint:
			if inTx {
				st.savepoints = append(st.savepoints, savepointMark{name: it.name, pending: len(st.pending)})
			}
		case opRelease, opRollbackTo:
			if !inTx {
				continue
			}
			i := -1
			for j := len(st.savepoints) - 1; j >= 0 && i < 0; j-- { // the latest one of that name
				if st.savepoints[j].name == it.name {
					i = j
				}
			}
			if i < 0 {
				st.setUnmovable(reasonUncertainOutcome)
				continue
			}
			if it.op == opRelease {
				st.savepoints = st.savepoints[:i]
			} else {
				st.pending = st.pending[:st.savepoints[i].pending]
				st.savepoints = st.savepoints[:i+1]
				aborted = false
			}
		case opUnmovable:
			st.setUnmovable(it.name)
		case opExecute:
		default:
			if inTx && it.op.transactional() {
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
func (st *sessionState) applyFailed(items []stateItem, statements int, out segOutcome) {
	effects, txControl := false, false
	for _, it := range items {
		switch {
		case it.op == opUnmovable:
			st.setUnmovable(it.name)
		case it.op == opExecute:
		case it.op.txControl():
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
			if it.op.nonTransactional() {
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
func (st *sessionState) applyLost(items []stateItem, committedPossible bool) {
	for _, it := range items {
		switch {
		case it.op == opUnmovable:
			st.setUnmovable(it.name)
		case it.op == opExecute, it.op.txControl():
		case committedPossible || !it.op.transactional():
			st.setUnmovable(reasonUncertainOutcome)
		}
	}
	if committedPossible && len(st.pending) > 0 {
		st.setUnmovable(reasonUncertainOutcome)
	}
	st.pending, st.savepoints = nil, nil
}

// applyItem makes one change part of the session's state.
func (st *sessionState) applyItem(it stateItem) {
	switch it.op {
	case opSet:
		st.settings = removeNamed(st.settings, it.name)
		st.settings = append(st.settings, namedText{name: it.name, text: it.text})
	case opReset:
		st.settings = removeNamed(st.settings, it.name)
	case opResetAll:
		// RESET ALL leaves the role (GUC_NO_RESET_ALL) alone.
		st.settings = slices.DeleteFunc(st.settings, func(s namedText) bool { return s.name != "role" })
	case opListen:
		if !slices.Contains(st.listens, it.name) {
			st.listens = append(st.listens, it.name)
		}
	case opUnlisten:
		st.listens = slices.DeleteFunc(st.listens, func(c string) bool { return c == it.name })
	case opUnlistenAll:
		st.listens = nil
	case opPrepare:
		st.prepared = removeNamed(st.prepared, it.name)
		st.prepared = append(st.prepared, namedText{name: it.name, text: it.text})
	case opDeallocate:
		st.prepared = removeNamed(st.prepared, it.name)
	case opDeallocateAll:
		st.prepared = nil
	case opDiscardAll:
		st.settings, st.prepared, st.listens = nil, nil, nil
		switch st.unmovable {
		case reasonTempObject, reasonWithHold, reasonAdvisoryLock, reasonSessionAuth, reasonSetConfig:
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
