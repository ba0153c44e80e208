package sqlclass

import (
	"strings"
	"sync"
)

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

// Summary is what a SQL text (one or more statements) may do. The zero value is an empty text.
type Summary struct {
	Statements int
	Uncertain  bool   // the text could not be read with confidence (treat as the worst case)
	MayCommit  bool   // COMMIT, END or a two-phase commit command
	Writes     bool   // a statement other than a read, SET or transaction control
	TxControl  bool   // BEGIN, COMMIT, ROLLBACK, savepoints
	Effects    bool   // SET, RESET, LISTEN, UNLISTEN, PREPARE, DEALLOCATE, DISCARD ALL
	Executes   bool   // SQL EXECUTE of a prepared statement
	Unmovable  string // why the text makes the session unmovable; "" when it does not
	// SyncCommit: a statement may set synchronous_commit (SET or set_config); its value is
	// read by LowersSyncCommit.
	SyncCommit bool
	first      stmtKind
	firstFlags stmtFlags
}

// mayCommitOrUnknown reports whether the text may commit a transaction, counting uncertainty.
func (s Summary) MayCommitOrUnknown() bool { return s.MayCommit || s.Uncertain }

// readOnly reports whether every statement is known not to write.
func (s Summary) ReadOnly() bool { return !s.Writes && !s.Uncertain && s.Unmovable == "" }

// singleRollback reports whether the text is exactly one ROLLBACK or ABORT (without AND CHAIN).
func (s Summary) SingleRollback() bool {
	return s.Statements == 1 && !s.Uncertain && s.first == kindRollback && s.firstFlags&flagChain == 0
}

// singleCommit reports whether the text is exactly one COMMIT or END (without AND CHAIN).
func (s Summary) SingleCommit() bool {
	return s.Statements == 1 && !s.Uncertain && s.first == kindCommit && s.firstFlags&flagChain == 0
}

// Reasons a session cannot be moved (constant strings: no allocation on the relay path).
const (
	ReasonTempObject   = "a temporary object was created"
	ReasonWithHold     = "a WITH HOLD cursor was declared"
	ReasonAdvisoryLock = "a session-level advisory lock was requested"
	ReasonSetConfig    = "set_config() was called"
	ReasonSessionAuth  = "SET SESSION AUTHORIZATION was used"
	ReasonLoad         = "a library was loaded with LOAD"
	ReasonDoBlock      = "a DO block was run"
	ReasonDblink       = "a dblink connection was opened"
	ReasonUncertainSQL = "a statement could not be read with confidence"
)

// add records one finished statement of the given kind.
func (s *Summary) add(st *stmtInfo, kind stmtKind, reason string) {
	if s.Statements == 0 {
		s.first, s.firstFlags = kind, st.flags
	}
	s.Statements++
	switch kind {
	case kindCommit, kindTwoPhase:
		s.MayCommit = true
		s.TxControl = true
	case kindBegin, kindRollback, kindSavepoint, kindRelease, kindRollbackTo:
		s.TxControl = true
	case kindSet, kindReset, kindListen, kindUnlisten, kindPrepare, kindDeallocate, kindDiscardAll:
		s.Effects = true
	case kindExecute:
		s.Executes = true
		s.Writes = true
	case kindRead, kindSetLocal:
	default:
		s.Writes = true
	}
	if reason != "" && s.Unmovable == "" {
		s.Unmovable = reason
	}
	if st.flags&flagSetConfig != 0 || (kind == kindSet || kind == kindSetLocal) && setsSyncCommit(st) {
		s.SyncCommit = true
	}
}

// classifyStatement returns a statement's kind and, when it creates state that cannot be
// replayed, why.
func classifyStatement(st *stmtInfo) (stmtKind, string) {
	var reason string
	switch {
	case st.flags&flagAdvisoryLock != 0:
		reason = ReasonAdvisoryLock
	case st.flags&flagSetConfig != 0:
		reason = ReasonSetConfig
	case st.flags&flagDblink != 0:
		reason = ReasonDblink
	}
	kind := leadingKind(st)
	switch kind {
	case kindUnmovable:
		switch {
		case st.nwords > 0 && st.words[0].is("set"):
			reason = ReasonSessionAuth
		case st.nwords > 0 && st.words[0].is("load"):
			reason = ReasonLoad
		case st.nwords > 0 && st.words[0].is("do"):
			reason = ReasonDoBlock
		case st.flags&flagWithHold != 0:
			reason = ReasonWithHold
		default:
			reason = ReasonTempObject
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
var scanners = sync.Pool{New: func() any { return new(Scanner) }}

// Classify reads a whole SQL text.
func Classify(text []byte, backslashQuotes bool) Summary {
	sc := scanners.Get().(*Scanner)
	sc.Reset(backslashQuotes)
	sc.Feed(text)
	sum := sc.Finish()
	scanners.Put(sc)
	return sum
}

// Item is one thing a statement does to the session's replayable state or its
// transaction, in the order the statements run.
type Item struct {
	Op   Op
	Name string // setting key, channel, prepared statement or savepoint name
	Text string // the statement as written, for replay (SET, PREPARE)
}

// Op is the operation of a Item.
type Op uint8

const (
	OpBegin Op = iota + 1
	OpCommit
	OpCommitChain // COMMIT AND CHAIN: commit, then a new transaction
	OpRollback
	OpRollbackChain
	OpSavepoint
	OpRelease
	OpRollbackTo
	OpTwoPhase // PREPARE TRANSACTION ...: ends the transaction; its effects are not the session's
	OpSet
	OpReset
	OpResetAll
	OpListen
	OpUnlisten
	OpUnlistenAll
	OpPrepare
	OpDeallocate
	OpDeallocateAll
	OpDiscardAll
	OpExecute // uses a prepared statement by name (not a change)
	OpUnmovable
)

// transactional reports whether an item's effect follows the transaction (undone by a
// rollback). PREPARE and DEALLOCATE are not transactional in PostgreSQL.
func (op Op) Transactional() bool {
	switch op {
	case OpSet, OpReset, OpResetAll, OpListen, OpUnlisten, OpUnlistenAll, OpDiscardAll:
		return true
	}
	return false
}

// txControl reports whether an item is transaction control rather than a change of state.
func (op Op) TxControl() bool { return op >= OpBegin && op <= OpTwoPhase }

// nonTransactional reports whether an item changes state that a rollback does not undo.
func (op Op) NonTransactional() bool {
	return op == OpPrepare || op == OpDeallocate || op == OpDeallocateAll
}

// StateItems reads a SQL text a second time and returns what its statements do to the session
// and the transaction, in order. It is used only for texts whose summary says they matter.
func StateItems(text []byte, backslashQuotes bool) []Item {
	var items []Item
	sc := &Scanner{collect: true}
	sc.Reset(backslashQuotes)
	sc.Feed(text)
	sum := sc.Finish()
	for _, st := range sc.collected {
		if st.reason != "" {
			items = append(items, Item{Op: OpUnmovable, Name: st.reason})
			continue
		}
		if item, ok := itemOf(st.kind, st.flags, text[st.start:st.end], tokensOf(st.toks, text)); ok {
			items = append(items, item)
		}
	}
	if sum.Uncertain {
		items = append(items, Item{Op: OpUnmovable, Name: ReasonUncertainSQL})
	}
	return items
}

// itemOf turns one statement into its Item.
func itemOf(kind stmtKind, flags stmtFlags, stmt []byte, toks tokens) (Item, bool) {
	chain := flags&flagChain != 0
	switch kind {
	case kindBegin:
		return Item{Op: OpBegin}, true
	case kindCommit:
		if chain {
			return Item{Op: OpCommitChain}, true
		}
		return Item{Op: OpCommit}, true
	case kindRollback:
		if chain {
			return Item{Op: OpRollbackChain}, true
		}
		return Item{Op: OpRollback}, true
	case kindTwoPhase:
		return Item{Op: OpTwoPhase}, true
	case kindSavepoint:
		return Item{Op: OpSavepoint, Name: tokenAfter(toks, 1)}, true
	case kindRelease:
		i := 1
		if toks.is(i, "savepoint") {
			i++
		}
		return Item{Op: OpRelease, Name: tokenAfter(toks, i)}, true
	case kindRollbackTo:
		i := 1
		if toks.is(i, "work") || toks.is(i, "transaction") {
			i++
		}
		i++ // TO
		if toks.is(i, "savepoint") {
			i++
		}
		return Item{Op: OpRollbackTo, Name: tokenAfter(toks, i)}, true
	case kindSet:
		key := settingKey(toks, stmt)
		if key == "" {
			return Item{Op: OpUnmovable, Name: ReasonUncertainSQL}, true
		}
		return Item{Op: OpSet, Name: key, Text: string(stmt)}, true
	case kindReset:
		if toks.is(1, "all") && len(toks) == 2 {
			return Item{Op: OpResetAll}, true
		}
		key := resetKey(toks)
		if key == "" {
			return Item{Op: OpUnmovable, Name: ReasonUncertainSQL}, true
		}
		return Item{Op: OpReset, Name: key}, true
	case kindListen, kindUnlisten:
		if kind == kindUnlisten && len(toks) == 2 && toks[1].symbol == '*' {
			return Item{Op: OpUnlistenAll}, true
		}
		name := tokenAfter(toks, 1)
		if name == "" || len(toks) != 2 {
			return Item{Op: OpUnmovable, Name: ReasonUncertainSQL}, true
		}
		if kind == kindListen {
			return Item{Op: OpListen, Name: name}, true
		}
		return Item{Op: OpUnlisten, Name: name}, true
	case kindPrepare:
		name := tokenAfter(toks, 1)
		if name == "" {
			return Item{Op: OpUnmovable, Name: ReasonUncertainSQL}, true
		}
		return Item{Op: OpPrepare, Name: name, Text: string(stmt)}, true
	case kindDeallocate:
		i := 1
		if toks.is(i, "prepare") {
			i++
		}
		if toks.is(i, "all") && len(toks) == i+1 {
			return Item{Op: OpDeallocateAll}, true
		}
		name := tokenAfter(toks, i)
		if name == "" {
			return Item{Op: OpUnmovable, Name: ReasonUncertainSQL}, true
		}
		return Item{Op: OpDeallocate, Name: name}, true
	case kindDiscardAll:
		return Item{Op: OpDiscardAll}, true
	case kindExecute:
		return Item{Op: OpExecute, Name: tokenAfter(toks, 1)}, true
	}
	return Item{}, false
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

// token is one token of a statement, as itemOf reads it: a word (lower-cased unless it was
// quoted), or a symbol. Literals are tokens with neither (their text is not needed).
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

// tokensOf turns the scanner's tokens of one statement into words and symbols.
func tokensOf(raw []rawToken, text []byte) tokens {
	out := make(tokens, 0, len(raw))
	for _, r := range raw {
		switch r.kind {
		case tokWord:
			out = append(out, token{word: strings.ToLower(string(text[r.start:r.end]))})
		case tokQuoted:
			inner := string(text[r.start+1 : r.end-1])
			out = append(out, token{word: strings.ReplaceAll(inner, `""`, `"`), quoted: true})
		case tokSymbol:
			out = append(out, token{symbol: text[r.start]})
		default:
			out = append(out, token{})
		}
	}
	return out
}
