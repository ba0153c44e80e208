package proxy

import (
	"strings"
	"sync"
)

// Statement classification
//
// The proxy reads the text of Query and Parse messages (only those) to know three things:
//
//   - what a request may do to a transaction: begin it, commit it (then a lost answer is
//     "resolution unknown", 08007, never "not committed", 40001), roll it back;
//   - whether it may write (a cancel request is never forwarded for an autocommit request that
//     may be committing, see cancel.go);
//   - what it does to the session's state: SET/RESET, LISTEN/UNLISTEN, PREPARE/DEALLOCATE and
//     DISCARD ALL are remembered and replayed after a move; temporary objects, WITH HOLD
//     cursors, session advisory locks, SET SESSION AUTHORIZATION, LOAD, DO blocks, set_config
//     and dblink connections cannot be replayed and make the session unmovable.
//
// The fast path (a single SELECT, INSERT, ...) costs one pass over the text and no allocation.
// Statements that change session state are read a second time (stateItems) to extract names
// and texts. What the classifier cannot read with confidence is treated as the worst case.
//
// Known limit: a user-defined function that changes session state inside its body (SET
// without LOCAL, CREATE TEMP TABLE, pg_advisory_lock) is not seen; a moved session then lacks
// that state. DO blocks are treated as unmovable because their code is in the statement.

// stmtKind is what one statement is, from its leading words.
type stmtKind uint8

const (
	kindOther      stmtKind = iota // anything else: may write, changes no session state
	kindRead                       // SELECT, VALUES, TABLE, SHOW, FETCH, MOVE, CLOSE, DECLARE, EXPLAIN
	kindWrite                      // INSERT, UPDATE, DELETE, DDL, COPY, CALL, ...
	kindBegin                      // BEGIN, START TRANSACTION
	kindCommit                     // COMMIT, END
	kindRollback                   // ROLLBACK, ABORT
	kindSavepoint                  // SAVEPOINT name
	kindRelease                    // RELEASE [SAVEPOINT] name
	kindRollbackTo                 // ROLLBACK [WORK|TRANSACTION] TO [SAVEPOINT] name
	kindTwoPhase                   // PREPARE TRANSACTION, COMMIT PREPARED, ROLLBACK PREPARED
	kindSet                        // SET [SESSION] name ..., SET ROLE, SET SESSION CHARACTERISTICS
	kindSetLocal                   // SET LOCAL, SET TRANSACTION, SET CONSTRAINTS (transaction scope)
	kindReset                      // RESET name | ALL
	kindListen                     // LISTEN channel
	kindUnlisten                   // UNLISTEN channel | *
	kindPrepare                    // PREPARE name AS ... (SQL level)
	kindDeallocate                 // DEALLOCATE [PREPARE] name | ALL
	kindDiscardAll                 // DISCARD ALL
	kindExecute                    // EXECUTE name (SQL level)
	kindUnmovable                  // creates state that cannot be replayed
)

// sqlSummary is what a SQL text (one or more statements) may do. The zero value is an empty text.
type sqlSummary struct {
	statements int
	uncertain  bool   // the text could not be read with confidence (treat as the worst case)
	mayCommit  bool   // COMMIT, END or a two-phase commit command
	writes     bool   // a statement other than a read, SET or transaction control
	txControl  bool   // BEGIN, COMMIT, ROLLBACK, savepoints
	effects    bool   // SET, RESET, LISTEN, UNLISTEN, PREPARE, DEALLOCATE, DISCARD ALL
	executes   bool   // SQL EXECUTE of a prepared statement
	unmovable  string // why the text makes the session unmovable; "" when it does not
	first      stmtKind
	firstFlags stmtFlags
}

// mayCommitOrUnknown reports whether the text may commit a transaction, counting uncertainty.
func (s sqlSummary) mayCommitOrUnknown() bool { return s.mayCommit || s.uncertain }

// readOnly reports whether every statement is known not to write.
func (s sqlSummary) readOnly() bool { return !s.writes && !s.uncertain && s.unmovable == "" }

// singleRollback reports whether the text is exactly one ROLLBACK or ABORT (without AND CHAIN).
func (s sqlSummary) singleRollback() bool {
	return s.statements == 1 && !s.uncertain && s.first == kindRollback && s.firstFlags&flagChain == 0
}

// singleCommit reports whether the text is exactly one COMMIT or END (without AND CHAIN).
func (s sqlSummary) singleCommit() bool {
	return s.statements == 1 && !s.uncertain && s.first == kindCommit && s.firstFlags&flagChain == 0
}

// Reasons a session cannot be moved (constant strings: no allocation on the relay path).
const (
	reasonTempObject       = "a temporary object was created"
	reasonWithHold         = "a WITH HOLD cursor was declared"
	reasonAdvisoryLock     = "a session-level advisory lock was requested"
	reasonSetConfig        = "set_config() was called"
	reasonSessionAuth      = "SET SESSION AUTHORIZATION was used"
	reasonLoad             = "a library was loaded with LOAD"
	reasonDoBlock          = "a DO block was run"
	reasonDblink           = "a dblink connection was opened"
	reasonUncertainSQL     = "a statement could not be read with confidence"
	reasonLargeStatement   = "a statement that changes session state was larger than the proxy inspects"
	reasonUncertainOutcome = "the outcome of a statement that changes session state is unknown"
	reasonStateTooLarge    = "the session state to replay is too large"
)

// add records one finished statement of the given kind.
func (s *sqlSummary) add(st *stmtInfo, kind stmtKind, reason string) {
	if s.statements == 0 {
		s.first, s.firstFlags = kind, st.flags
	}
	s.statements++
	switch kind {
	case kindCommit, kindTwoPhase:
		s.mayCommit = true
		s.txControl = true
	case kindBegin, kindRollback, kindSavepoint, kindRelease, kindRollbackTo:
		s.txControl = true
	case kindSet, kindReset, kindListen, kindUnlisten, kindPrepare, kindDeallocate, kindDiscardAll:
		s.effects = true
	case kindExecute:
		s.executes = true
		s.writes = true
	case kindRead, kindSetLocal:
	default:
		s.writes = true
	}
	if reason != "" && s.unmovable == "" {
		s.unmovable = reason
	}
}

// classifyStatement returns a statement's kind and, when it creates state that cannot be
// replayed, why.
func classifyStatement(st *stmtInfo) (stmtKind, string) {
	var reason string
	switch {
	case st.flags&flagAdvisoryLock != 0:
		reason = reasonAdvisoryLock
	case st.flags&flagSetConfig != 0:
		reason = reasonSetConfig
	case st.flags&flagDblink != 0:
		reason = reasonDblink
	}
	kind := leadingKind(st)
	switch kind {
	case kindUnmovable:
		switch {
		case st.nwords > 0 && st.words[0].is("set"):
			reason = reasonSessionAuth
		case st.nwords > 0 && st.words[0].is("load"):
			reason = reasonLoad
		case st.nwords > 0 && st.words[0].is("do"):
			reason = reasonDoBlock
		case st.flags&flagWithHold != 0:
			reason = reasonWithHold
		default:
			reason = reasonTempObject
		}
	}
	return kind, reason
}

// word returns the i-th leading word of st (an empty word when there are fewer).
func (st *stmtInfo) word(i int) *stmtWord {
	if i < min(st.nwords, stmtWords) {
		return &st.words[i]
	}
	return &stmtWord{}
}

// leadingKind classifies a statement by its leading words and flags.
func leadingKind(st *stmtInfo) stmtKind {
	w0, w1, w2 := st.word(0), st.word(1), st.word(2)
	switch {
	case w0.is("select"):
		switch {
		case st.flags&flagIntoTemp != 0:
			return kindUnmovable
		case st.flags&(flagInto|flagForLock) != 0:
			return kindWrite
		}
		return kindRead
	case w0.is("with"):
		if st.flags&flagIntoTemp != 0 {
			return kindUnmovable
		}
		return kindWrite // a WITH may hold a data-modifying statement
	case w0.is("values"), w0.is("table"), w0.is("show"), w0.is("fetch"), w0.is("move"), w0.is("close"):
		return kindRead
	case w0.is("explain"):
		if st.flags&flagAnalyze != 0 {
			return kindWrite // EXPLAIN ANALYZE runs the statement
		}
		return kindRead
	case w0.is("declare"):
		if st.flags&flagWithHold != 0 {
			return kindUnmovable
		}
		return kindRead
	case w0.is("begin"):
		return kindBegin
	case w0.is("start"):
		if w1.is("transaction") {
			return kindBegin
		}
	case w0.is("commit"):
		if w1.is("prepared") {
			return kindTwoPhase
		}
		return kindCommit
	case w0.is("end"):
		return kindCommit
	case w0.is("abort"):
		return kindRollback
	case w0.is("rollback"):
		switch {
		case w1.is("prepared"):
			return kindTwoPhase
		case w1.is("to"), (w1.is("work") || w1.is("transaction")) && w2.is("to"):
			return kindRollbackTo
		}
		return kindRollback
	case w0.is("savepoint"):
		return kindSavepoint
	case w0.is("release"):
		return kindRelease
	case w0.is("prepare"):
		if w1.is("transaction") {
			return kindTwoPhase
		}
		return kindPrepare
	case w0.is("deallocate"):
		return kindDeallocate
	case w0.is("execute"):
		return kindExecute
	case w0.is("set"):
		switch {
		case w1.is("local"), w1.is("transaction"), w1.is("constraints"):
			return kindSetLocal
		case w1.is("session") && w2.is("authorization"):
			return kindUnmovable
		}
		return kindSet
	case w0.is("reset"):
		if w1.is("session") && w2.is("authorization") {
			return kindOther // nothing to replay; a session that set it is already unmovable
		}
		return kindReset
	case w0.is("listen"):
		return kindListen
	case w0.is("unlisten"):
		return kindUnlisten
	case w0.is("discard"):
		if w1.is("all") {
			return kindDiscardAll
		}
	case w0.is("create"):
		for i := 1; i < min(st.nwords, 5); i++ {
			if st.words[i].is("temp") || st.words[i].is("temporary") {
				return kindUnmovable
			}
		}
		if st.flags&flagPgTemp != 0 {
			return kindUnmovable
		}
		return kindWrite
	case w0.is("load"), w0.is("do"):
		return kindUnmovable
	case w0.is("insert"), w0.is("update"), w0.is("delete"), w0.is("merge"), w0.is("copy"),
		w0.is("truncate"), w0.is("alter"), w0.is("drop"), w0.is("call"), w0.is("grant"), w0.is("revoke"):
		return kindWrite
	}
	return kindOther
}

// scanners pools sqlScanners: the scanner is too large to live on the relay goroutine's stack,
// which must stay small for idle sessions (see runClientToBackend).
var scanners = sync.Pool{New: func() any { return new(sqlScanner) }}

// classifySQL reads a whole SQL text.
func classifySQL(text []byte, backslashQuotes bool) sqlSummary {
	sc := scanners.Get().(*sqlScanner)
	sc.reset(backslashQuotes)
	sc.feed(text)
	sum := sc.finish()
	scanners.Put(sc)
	return sum
}

// stateItem is one thing a statement does to the session's replayable state or its
// transaction, in the order the statements run.
type stateItem struct {
	op   itemOp
	name string // setting key, channel, prepared statement or savepoint name
	text string // the statement as written, for replay (SET, PREPARE)
}

// itemOp is the operation of a stateItem.
type itemOp uint8

const (
	opBegin itemOp = iota + 1
	opCommit
	opCommitChain // COMMIT AND CHAIN: commit, then a new transaction
	opRollback
	opRollbackChain
	opSavepoint
	opRelease
	opRollbackTo
	opTwoPhase // PREPARE TRANSACTION ...: ends the transaction; its effects are not the session's
	opSet
	opReset
	opResetAll
	opListen
	opUnlisten
	opUnlistenAll
	opPrepare
	opDeallocate
	opDeallocateAll
	opDiscardAll
	opExecute // uses a prepared statement by name (not a change)
	opUnmovable
)

// transactional reports whether an item's effect follows the transaction (undone by a
// rollback). PREPARE and DEALLOCATE are not transactional in PostgreSQL.
func (op itemOp) transactional() bool {
	switch op {
	case opSet, opReset, opResetAll, opListen, opUnlisten, opUnlistenAll, opDiscardAll:
		return true
	}
	return false
}

// txControl reports whether an item is transaction control rather than a change of state.
func (op itemOp) txControl() bool { return op >= opBegin && op <= opTwoPhase }

// nonTransactional reports whether an item changes state that a rollback does not undo.
func (op itemOp) nonTransactional() bool {
	return op == opPrepare || op == opDeallocate || op == opDeallocateAll
}

// stateItems reads a SQL text a second time and returns what its statements do to the session
// and the transaction, in order. It is used only for texts whose summary says they matter.
func stateItems(text []byte, backslashQuotes bool) []stateItem {
	var items []stateItem
	sc := &sqlScanner{collect: true}
	sc.reset(backslashQuotes)
	sc.feed(text)
	sum := sc.finish()
	for _, st := range sc.collected {
		if st.unmovable != "" {
			items = append(items, stateItem{op: opUnmovable, name: st.unmovable})
			continue
		}
		if item, ok := itemOf(st.kind, st.flags, text[st.start:st.end]); ok {
			items = append(items, item)
		}
	}
	if sum.uncertain {
		items = append(items, stateItem{op: opUnmovable, name: reasonUncertainSQL})
	}
	return items
}

// itemOf turns one statement into its stateItem.
func itemOf(kind stmtKind, flags stmtFlags, stmt []byte) (stateItem, bool) {
	toks := sqlTokens(stmt)
	chain := flags&flagChain != 0
	switch kind {
	case kindBegin:
		return stateItem{op: opBegin}, true
	case kindCommit:
		if chain {
			return stateItem{op: opCommitChain}, true
		}
		return stateItem{op: opCommit}, true
	case kindRollback:
		if chain {
			return stateItem{op: opRollbackChain}, true
		}
		return stateItem{op: opRollback}, true
	case kindTwoPhase:
		return stateItem{op: opTwoPhase}, true
	case kindSavepoint:
		return stateItem{op: opSavepoint, name: tokenAfter(toks, 1)}, true
	case kindRelease:
		i := 1
		if toks.is(i, "savepoint") {
			i++
		}
		return stateItem{op: opRelease, name: tokenAfter(toks, i)}, true
	case kindRollbackTo:
		i := 1
		if toks.is(i, "work") || toks.is(i, "transaction") {
			i++
		}
		i++ // TO
		if toks.is(i, "savepoint") {
			i++
		}
		return stateItem{op: opRollbackTo, name: tokenAfter(toks, i)}, true
	case kindSet:
		key := settingKey(toks, stmt)
		if key == "" {
			return stateItem{op: opUnmovable, name: reasonUncertainSQL}, true
		}
		return stateItem{op: opSet, name: key, text: string(stmt)}, true
	case kindReset:
		if toks.is(1, "all") && len(toks) == 2 {
			return stateItem{op: opResetAll}, true
		}
		key := resetKey(toks)
		if key == "" {
			return stateItem{op: opUnmovable, name: reasonUncertainSQL}, true
		}
		return stateItem{op: opReset, name: key}, true
	case kindListen, kindUnlisten:
		if kind == kindUnlisten && len(toks) == 2 && toks[1].symbol == '*' {
			return stateItem{op: opUnlistenAll}, true
		}
		name := tokenAfter(toks, 1)
		if name == "" || len(toks) != 2 {
			return stateItem{op: opUnmovable, name: reasonUncertainSQL}, true
		}
		if kind == kindListen {
			return stateItem{op: opListen, name: name}, true
		}
		return stateItem{op: opUnlisten, name: name}, true
	case kindPrepare:
		name := tokenAfter(toks, 1)
		if name == "" {
			return stateItem{op: opUnmovable, name: reasonUncertainSQL}, true
		}
		return stateItem{op: opPrepare, name: name, text: string(stmt)}, true
	case kindDeallocate:
		i := 1
		if toks.is(i, "prepare") {
			i++
		}
		if toks.is(i, "all") && len(toks) == i+1 {
			return stateItem{op: opDeallocateAll}, true
		}
		name := tokenAfter(toks, i)
		if name == "" {
			return stateItem{op: opUnmovable, name: reasonUncertainSQL}, true
		}
		return stateItem{op: opDeallocate, name: name}, true
	case kindDiscardAll:
		return stateItem{op: opDiscardAll}, true
	case kindExecute:
		return stateItem{op: opExecute, name: tokenAfter(toks, 1)}, true
	}
	return stateItem{}, false
}

// settingKey returns the name of the setting a session-level SET changes, normalized like
// PostgreSQL (case-folded unless quoted), or "" when the statement cannot be read.
func settingKey(toks tokens, stmt []byte) string {
	i := 1
	if toks.is(i, "session") {
		i++
	}
	switch {
	case toks.is(i, "time") && toks.is(i+1, "zone"):
		return "timezone"
	case toks.is(i, "names"):
		return "client_encoding"
	case toks.is(i, "schema"):
		return "search_path"
	case toks.is(i, "xml") && toks.is(i+1, "option"):
		return "xmloption"
	case toks.is(i, "role"):
		return "role"
	case toks.is(i, "characteristics"):
		// SET SESSION CHARACTERISTICS AS TRANSACTION ...: several settings at once; each
		// distinct statement is kept and replayed in order.
		return "characteristics:" + strings.ToLower(string(stmt))
	}
	key := dottedName(toks, i)
	if key == "" {
		return ""
	}
	// The name must be followed by TO or '='.
	j := i + 2*strings.Count(key, ".") + 1
	if !toks.is(j, "to") && !(j < len(toks) && toks[j].symbol == '=') {
		return ""
	}
	return key
}

// resetKey returns the setting RESET resets, like settingKey.
func resetKey(toks tokens) string {
	switch {
	case toks.is(1, "time") && toks.is(2, "zone"):
		return "timezone"
	case toks.is(1, "role"):
		return "role"
	}
	key := dottedName(toks, 1)
	if key == "" || len(toks) != 2+2*strings.Count(key, ".") {
		return ""
	}
	return key
}

// dottedName reads name[.name...] starting at token i.
func dottedName(toks tokens, i int) string {
	var b strings.Builder
	for {
		if i >= len(toks) || toks[i].word == "" {
			return ""
		}
		b.WriteString(strings.ToLower(toks[i].word)) // setting names ignore case, quoted or not
		if i+2 < len(toks) && toks[i+1].symbol == '.' && toks[i+2].word != "" {
			b.WriteByte('.')
			i += 2
			continue
		}
		return b.String()
	}
}

// tokenAfter returns the identifier at token i, or "".
func tokenAfter(toks tokens, i int) string {
	if i < len(toks) {
		return toks[i].word
	}
	return ""
}

// token is one token of a statement: a word (lower-cased unless it was quoted), or a symbol.
// Literals and numbers are tokens with neither (their text is not needed).
type token struct {
	word   string
	quoted bool
	symbol byte
}

type tokens []token

// is reports whether token i is the unquoted keyword kw.
func (t tokens) is(i int, kw string) bool {
	return i < len(t) && !t[i].quoted && t[i].word == kw
}

// sqlTokens splits one statement into tokens. The statement has been read by sqlScanner
// already, so only the token shapes matter here.
func sqlTokens(stmt []byte) tokens {
	var out tokens
	for i := 0; i < len(stmt); {
		c := stmt[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v':
			i++
		case c == '-' && i+1 < len(stmt) && stmt[i+1] == '-':
			for i < len(stmt) && stmt[i] != '\n' {
				i++
			}
		case c == '/' && i+1 < len(stmt) && stmt[i+1] == '*':
			i = skipBlockComment(stmt, i)
		case isWordStart(c):
			j := i
			for j < len(stmt) && isWordByte(stmt[j]) {
				j++
			}
			out = append(out, token{word: strings.ToLower(string(stmt[i:j]))})
			i = j
		case c == '"':
			var b strings.Builder
			j := i + 1
			for j < len(stmt) {
				if stmt[j] == '"' {
					if j+1 < len(stmt) && stmt[j+1] == '"' {
						b.WriteByte('"')
						j += 2
						continue
					}
					j++
					break
				}
				b.WriteByte(stmt[j])
				j++
			}
			out = append(out, token{word: b.String(), quoted: true})
			i = j
		case c == '\'' || c == '$' || c >= '0' && c <= '9':
			// A literal, a number or a parameter: skip to the next space (good enough for
			// the statements read here, whose names come before any literal).
			j := i + 1
			for j < len(stmt) && stmt[j] != ' ' && stmt[j] != '\t' && stmt[j] != '\n' && stmt[j] != ';' {
				j++
			}
			out = append(out, token{})
			i = j
		default:
			out = append(out, token{symbol: c})
			i++
		}
	}
	return out
}

// skipBlockComment returns the offset after the (nested) block comment that starts at i.
func skipBlockComment(stmt []byte, i int) int {
	depth := 0
	for i < len(stmt) {
		switch {
		case i+1 < len(stmt) && stmt[i] == '/' && stmt[i+1] == '*':
			depth++
			i += 2
		case i+1 < len(stmt) && stmt[i] == '*' && stmt[i+1] == '/':
			depth--
			i += 2
			if depth == 0 {
				return i
			}
		default:
			i++
		}
	}
	return i
}
