package sqlclass

// Scanner finds the statements of a SQL text the way PostgreSQL's lexer would, for the one
// purpose of this package: where each statement begins and ends, and its leading words. It
// knows quoted identifiers, string literals (” doubling; E” with backslash escapes, and
// backslash escapes in every literal when standard_conforming_strings is off), dollar quoting,
// nested block comments, line comments, parentheses (a ';' inside them ends nothing) and
// BEGIN ATOMIC function bodies.
//
// It is incremental: Feed may be called with any split of the text (a large message streamed
// through the relay in pieces) and the outcome is the same as for the whole text. It does not
// allocate, except to remember the statements that change session state (see classify.go).
// It never fails: text it cannot follow makes the result uncertain, which every caller treats
// conservatively (as a statement that may commit, may write and may change session state).
//
// Owner: one goroutine at a time (the client→backend relay); call Reset before each text.
type Scanner struct {
	backslashQuotes bool // standard_conforming_strings is off

	state            scanState
	pos              int // offset of the next byte in the whole text
	parenDepth       int
	atomic           bool // inside BEGIN ATOMIC ... END
	caseDepth        int  // CASE nesting inside a BEGIN ATOMIC body
	escapeStr        bool // the current literal has backslash escapes
	nextQuoteEscapes bool // the word just ended was the E of E'...'
	commentDepth     int
	tag              [maxDollarTag]byte
	tagLen           int
	tagMatched       int

	word    stmtWord // the word being read
	stmt    stmtInfo // the statement being read
	summary Summary

	// collect, when set, makes the scanner keep every statement in collected and every token
	// in toks (StateItems reads names from them).
	collect   bool
	collected []scannedStmt
	toks      []rawToken
	tokStart  int // offset where the token being read started
	stmtToks  int // index in toks of the current statement's first token
}

// rawToken is one token of the text, by offsets: a word, a quoted identifier (quotes
// included), a literal (string, number, dollar-quoted text, parameter) or a one-byte symbol.
type rawToken struct {
	kind       tokenKind
	start, end int
}

type tokenKind uint8

const (
	tokWord tokenKind = iota
	tokQuoted
	tokLiteral
	tokSymbol
)

// emit records a token that ends at end (exclusive) and started at sc.tokStart (collect only).
func (sc *Scanner) emit(kind tokenKind, end int) {
	if sc.collect {
		sc.toks = append(sc.toks, rawToken{kind: kind, start: sc.tokStart, end: end})
	}
}

// emitSymbol records the one-byte symbol at pos (collect only).
func (sc *Scanner) emitSymbol(pos int) {
	if sc.collect {
		sc.toks = append(sc.toks, rawToken{kind: tokSymbol, start: pos, end: pos + 1})
	}
}

// scannedStmt is a finished statement kept for StateItems.
type scannedStmt struct {
	kind       stmtKind
	reason     string // why it makes the session unmovable ("" when it does not)
	flags      stmtFlags
	start, end int
	toks       []rawToken
}

// scanState is the lexer state of Scanner.
type scanState uint8

const (
	stNormal          scanState = iota
	stWord                      // inside an unquoted word
	stNumber                    // inside a number or a positional parameter ($1)
	stQuotedIdent               // inside "..."
	stQuotedIdentEnd            // saw '"' inside "...": the end, or "" (an escaped quote)
	stString                    // inside '...'
	stStringEnd                 // saw '\'' inside '...': the end, or '' (an escaped quote)
	stStringBackslash           // saw '\' inside a literal with backslash escapes
	stDash                      // saw '-': a line comment if another '-' follows
	stSlash                     // saw '/': a block comment if '*' follows
	stLineComment               // after "--", until the end of the line
	stBlockComment              // inside /* ... */ (they nest)
	stBlockStar                 // saw '*' inside a block comment
	stBlockSlash                // saw '/' inside a block comment
	stDollarTag                 // after '$': reading a dollar-quote tag
	stDollarBody                // inside $tag$ ... $tag$
	stDollarClose               // matching a closing $tag$
)

const (
	maxDollarTag = 63 // NAMEDATALEN-1
	maxWordBytes = 32 // longer words are kept truncated (every keyword is shorter)
	stmtWords    = 8  // leading words remembered per statement
)

// stmtWord is a word of a statement: lower-cased when unquoted, as written when quoted.
type stmtWord struct {
	b      [maxWordBytes]byte
	n      uint8
	quoted bool
	long   bool // longer than maxWordBytes (truncated)
}

// is reports whether w is the unquoted keyword s (lower case).
func (w *stmtWord) is(s string) bool {
	return !w.quoted && !w.long && int(w.n) == len(s) && string(w.b[:w.n]) == s
}

func (w *stmtWord) text() []byte { return w.b[:w.n] }

// stmtInfo is what the scanner learned about the statement being read.
type stmtInfo struct {
	started    bool
	start, end int // offsets of the statement: its first token to the end of its last token
	words      [stmtWords]stmtWord
	nwords     int
	prev       prevWord // the previous word, when it starts a two-word pattern
	flags      stmtFlags
}

// stmtFlags are facts found anywhere in a statement, not only in its leading words.
type stmtFlags uint16

const (
	flagWithHold     stmtFlags = 1 << iota // WITH HOLD
	flagIntoTemp                           // INTO TEMP|TEMPORARY (SELECT INTO a temporary table)
	flagInto                               // INTO (SELECT INTO creates a table)
	flagForLock                            // FOR UPDATE|SHARE|NO KEY|KEY SHARE (row locks need a transaction id)
	flagAdvisoryLock                       // a session-level advisory lock function
	flagSetConfig                          // set_config(), which may change a setting for the session
	flagPgTemp                             // pg_temp: an object in the temporary schema
	flagDblink                             // dblink_connect: a connection the session keeps
	flagAnalyze                            // ANALYZE (EXPLAIN ANALYZE runs the statement)
	flagChain                              // AND CHAIN
)

// reset prepares the scanner for a new text.
func (sc *Scanner) Reset(backslashQuotes bool) {
	*sc = Scanner{backslashQuotes: backslashQuotes, collect: sc.collect, collected: sc.collected[:0], toks: sc.toks[:0]}
}

// feed scans the next piece of the text. Runs of bytes that cannot change the state (the
// inside of a word, literal, dollar quote or line comment; spaces) are skipped in tight loops.
func (sc *Scanner) Feed(p []byte) {
	for i := 0; i < len(p); {
		j := i
		switch sc.state {
		case stWord:
			for j < len(p) && wordByte[p[j]] {
				j++
			}
			sc.addWordBytes(p[i:j])
		case stString:
			for j < len(p) && p[j] != '\'' && p[j] != '\\' {
				j++
			}
		case stDollarBody:
			for j < len(p) && p[j] != '$' {
				j++
			}
		case stLineComment:
			for j < len(p) && p[j] != '\n' && p[j] != '\r' {
				j++
			}
		case stNormal:
			for j < len(p) && spaceByte[p[j]] {
				j++
			}
			sc.pos += j - i
			i = j
			if i < len(p) {
				sc.step(p[i])
				sc.pos++
				i++
			}
			continue
		}
		if j > i {
			if sc.state != stLineComment && sc.state != stNormal {
				sc.tokenAt(sc.pos + j - i - 1)
			}
			sc.pos += j - i
			i = j
			continue
		}
		sc.step(p[i])
		sc.pos++
		i++
	}
}

// Byte classes of the scanner.
var wordByte, wordStartByte, spaceByte [256]bool

func init() {
	for c := 0; c < 256; c++ {
		b := byte(c)
		wordStartByte[c] = b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' || b == '_' || b >= 0x80
		wordByte[c] = wordStartByte[c] || b >= '0' && b <= '9' || b == '$'
		spaceByte[c] = b == ' ' || b == '\t' || b == '\n' || b == '\r' || b == '\f' || b == '\v'
	}
}

// step scans one byte at offset sc.pos.
func (sc *Scanner) step(c byte) {
	for {
		switch sc.state {
		case stNormal:
			sc.normal(c)
			return
		case stWord:
			if isWordByte(c) {
				sc.addWordByte(c, true)
				sc.tokenByte()
				return
			}
			sc.endWord(c == '\'')
			sc.state = stNormal
			continue
		case stNumber:
			if isWordByte(c) || c == '.' {
				sc.tokenByte()
				return
			}
			sc.emit(tokLiteral, sc.pos)
			sc.state = stNormal
			continue
		case stQuotedIdent:
			if c == '"' {
				sc.state = stQuotedIdentEnd
			} else {
				sc.addWordByte(c, false)
			}
			sc.tokenByte()
			return
		case stQuotedIdentEnd:
			if c == '"' {
				sc.addWordByte('"', false)
				sc.state = stQuotedIdent
				sc.tokenByte()
				return
			}
			sc.word.quoted = true
			sc.addWord()
			sc.emit(tokQuoted, sc.pos)
			sc.state = stNormal
			continue
		case stString:
			switch {
			case c == '\'':
				sc.state = stStringEnd
			case c == '\\' && (sc.escapeStr || sc.backslashQuotes):
				sc.state = stStringBackslash
			}
			sc.tokenByte()
			return
		case stStringBackslash:
			sc.state = stString
			sc.tokenByte()
			return
		case stStringEnd:
			if c == '\'' {
				sc.state = stString
				sc.tokenByte()
				return
			}
			sc.emit(tokLiteral, sc.pos)
			sc.state = stNormal
			continue
		case stDash:
			if c == '-' {
				sc.state = stLineComment
				return
			}
			sc.tokenAt(sc.pos - 1) // the '-' was an operator
			sc.emitSymbol(sc.pos - 1)
			sc.state = stNormal
			continue
		case stSlash:
			if c == '*' {
				sc.state = stBlockComment
				sc.commentDepth = 1
				return
			}
			sc.tokenAt(sc.pos - 1) // the '/' was an operator
			sc.emitSymbol(sc.pos - 1)
			sc.state = stNormal
			continue
		case stLineComment:
			if c == '\n' || c == '\r' {
				sc.state = stNormal
			}
			return
		case stBlockComment, stBlockStar, stBlockSlash:
			sc.blockComment(c)
			return
		case stDollarTag:
			switch {
			case c == '$':
				sc.state = stDollarBody
			case isWordStart(c) || sc.tagLen > 0 && c >= '0' && c <= '9':
				if sc.tagLen == maxDollarTag {
					sc.summary.Uncertain = true
					sc.state = stNormal
					continue
				}
				sc.tag[sc.tagLen] = c
				sc.tagLen++
			case sc.tagLen == 0 && c >= '0' && c <= '9':
				sc.state = stNumber // a positional parameter such as $1
			default:
				// "$" followed by something else: not SQL PostgreSQL accepts; do not guess.
				sc.summary.Uncertain = true
				sc.state = stNormal
				continue
			}
			sc.tokenByte()
			return
		case stDollarBody:
			if c == '$' {
				sc.state = stDollarClose
				sc.tagMatched = 0
			}
			sc.tokenByte()
			return
		case stDollarClose:
			switch {
			case sc.tagMatched == sc.tagLen && c == '$':
				sc.emit(tokLiteral, sc.pos+1)
				sc.state = stNormal
			case sc.tagMatched < sc.tagLen && c == sc.tag[sc.tagMatched]:
				sc.tagMatched++
			case c == '$':
				sc.tagMatched = 0 // a new closing tag may start here
			default:
				sc.state = stDollarBody
			}
			sc.tokenByte()
			return
		}
	}
}

// normal handles a byte between tokens.
func (sc *Scanner) normal(c byte) {
	escapes := sc.nextQuoteEscapes
	sc.nextQuoteEscapes = false
	switch {
	case c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v':
		return
	case c == ';' && sc.parenDepth == 0 && !sc.atomic:
		sc.endStatement()
		return
	case c == '-':
		sc.state = stDash // decided by the next byte
		return
	case c == '/':
		sc.state = stSlash
		return
	}
	sc.tokenByte()
	sc.tokStart = sc.pos
	switch {
	case isWordStart(c):
		sc.state = stWord
		sc.word = stmtWord{}
		sc.addWordByte(c, true)
	case c >= '0' && c <= '9':
		sc.state = stNumber
	case c == '"':
		sc.state = stQuotedIdent
		sc.word = stmtWord{}
	case c == '\'':
		sc.state = stString
		sc.escapeStr = escapes
	case c == '$':
		sc.state = stDollarTag
		sc.tagLen = 0
	case c == '(':
		sc.parenDepth++
		sc.emitSymbol(sc.pos)
	case c == ')':
		if sc.parenDepth > 0 {
			sc.parenDepth--
		}
		sc.emitSymbol(sc.pos)
	default:
		sc.emitSymbol(sc.pos)
	}
}

// blockComment handles a byte inside a (nested) block comment.
func (sc *Scanner) blockComment(c byte) {
	switch {
	case sc.state == stBlockStar && c == '/':
		sc.commentDepth--
		if sc.commentDepth == 0 {
			sc.state = stNormal
			return
		}
		sc.state = stBlockComment
	case sc.state == stBlockSlash && c == '*':
		sc.commentDepth++
		sc.state = stBlockComment
	case c == '*':
		sc.state = stBlockStar
	case c == '/':
		sc.state = stBlockSlash
	default:
		sc.state = stBlockComment
	}
}

// tokenByte records that the byte at sc.pos belongs to a token of the current statement.
func (sc *Scanner) tokenByte() { sc.tokenAt(sc.pos) }

func (sc *Scanner) tokenAt(pos int) {
	if !sc.stmt.started {
		sc.stmt.started = true
		sc.stmt.start = pos
	}
	sc.stmt.end = pos + 1
}

func isWordStart(c byte) bool { return wordStartByte[c] }

func isWordByte(c byte) bool { return wordByte[c] }

// addWordBytes appends a run of unquoted word bytes.
func (sc *Scanner) addWordBytes(run []byte) {
	w := &sc.word
	for _, c := range run {
		if int(w.n) == maxWordBytes {
			w.long = true
			return
		}
		w.b[w.n] = lowerASCII(c)
		w.n++
	}
}

// addWordByte appends c to the word being read, lower-casing it when it is unquoted.
func (sc *Scanner) addWordByte(c byte, fold bool) {
	if int(sc.word.n) == maxWordBytes {
		sc.word.long = true
		return
	}
	if fold && c >= 'A' && c <= 'Z' {
		c += 'a' - 'A'
	}
	sc.word.b[sc.word.n] = c
	sc.word.n++
}

// endWord finishes an unquoted word; beforeQuote is true when a '\” follows at once.
func (sc *Scanner) endWord(beforeQuote bool) {
	if beforeQuote && sc.word.n == 1 {
		switch sc.word.b[0] {
		case 'e':
			sc.nextQuoteEscapes = true // E'...': a literal with backslash escapes
			return
		case 'b', 'x', 'n':
			return // B'...', X'...', N'...': prefixes of ordinary literals
		}
	}
	sc.addWord()
	sc.emit(tokWord, sc.pos)
}

// addWord adds the finished word to the statement and checks the patterns of stmtFlags.
func (sc *Scanner) addWord() {
	st := &sc.stmt
	w := &sc.word
	if st.nwords < stmtWords {
		st.words[st.nwords] = *w
	}
	st.nwords++
	prev := st.prev
	st.prev = prevOther
	if w.quoted || w.long {
		sc.functionName(w)
		return
	}
	switch string(w.b[:w.n]) {
	case "with":
		st.prev = prevWith
	case "into":
		st.prev = prevInto
		st.flags |= flagInto
	case "for":
		st.prev = prevFor
	case "and":
		st.prev = prevAnd
	case "begin":
		st.prev = prevBegin
	case "hold":
		if prev == prevWith {
			st.flags |= flagWithHold
		}
	case "temp", "temporary":
		if prev == prevInto {
			st.flags |= flagIntoTemp
		}
	case "update", "share", "no", "key":
		if prev == prevFor {
			st.flags |= flagForLock
		}
	case "analyze", "analyse":
		st.flags |= flagAnalyze
	case "chain":
		if prev == prevAnd {
			st.flags |= flagChain
		}
	case "atomic":
		if prev == prevBegin {
			sc.atomic = true
			sc.caseDepth = 0
		}
	case "case":
		if sc.atomic {
			sc.caseDepth++
		}
	case "end":
		if sc.atomic {
			if sc.caseDepth > 0 {
				sc.caseDepth--
			} else {
				sc.atomic = false
			}
		}
	default:
		sc.functionName(w)
	}
}

// prevWord remembers the previous word of a statement when it starts a two-word pattern.
type prevWord uint8

const (
	prevOther prevWord = iota
	prevWith
	prevInto
	prevFor
	prevAnd
	prevBegin
)

// functionName flags the function and schema names that matter, quoted or not, in any case (a
// quoted name written in lower case is the same function).
func (sc *Scanner) functionName(w *stmtWord) {
	if w.n < 7 {
		return
	}
	name := w.text()
	switch {
	case containsFold(name, "advisory_lock"):
		sc.stmt.flags |= flagAdvisoryLock
	case equalFold(name, "set_config"):
		sc.stmt.flags |= flagSetConfig
	case equalFold(name, "pg_temp") || hasPrefixFold(name, "pg_temp_"):
		sc.stmt.flags |= flagPgTemp
	case hasPrefixFold(name, "dblink_connect"):
		sc.stmt.flags |= flagDblink
	}
}

// endStatement finishes the statement being read (at ';' or the end of the text).
func (sc *Scanner) endStatement() {
	if sc.stmt.started {
		kind, reason := classifyStatement(&sc.stmt)
		sc.summary.add(&sc.stmt, kind, reason)
		if sc.collect {
			sc.collected = append(sc.collected, scannedStmt{kind: kind, reason: reason, flags: sc.stmt.flags,
				start: sc.stmt.start, end: sc.stmt.end, toks: sc.toks[sc.stmtToks:len(sc.toks):len(sc.toks)]})
		}
	}
	sc.stmtToks = len(sc.toks)
	sc.stmt = stmtInfo{}
	sc.atomic = false
	sc.parenDepth = 0
}

// finish ends the text and returns what was found.
func (sc *Scanner) Finish() Summary {
	switch sc.state {
	case stWord:
		sc.endWord(false)
	case stQuotedIdentEnd:
		sc.word.quoted = true
		sc.addWord()
		sc.emit(tokQuoted, sc.pos)
	case stDash, stSlash:
		sc.tokenAt(sc.pos - 1)
		sc.emitSymbol(sc.pos - 1)
	case stNumber, stStringEnd:
		sc.emit(tokLiteral, sc.pos)
	case stNormal, stLineComment:
	default:
		// An unterminated literal, identifier, comment or dollar quote: PostgreSQL rejects
		// the text, but our reading of it may be wrong.
		sc.summary.Uncertain = true
	}
	if sc.atomic || sc.parenDepth != 0 {
		sc.summary.Uncertain = true
	}
	sc.endStatement()
	return sc.summary
}

func lowerASCII(c byte) byte {
	if c >= 'A' && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

// equalFold compares b with the lower-case ASCII string s, ignoring ASCII case.
func equalFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range b {
		if lowerASCII(b[i]) != s[i] {
			return false
		}
	}
	return true
}

func hasPrefixFold(b []byte, s string) bool {
	return len(b) >= len(s) && equalFold(b[:len(s)], s)
}

func containsFold(b []byte, s string) bool {
	for i := 0; i+len(s) <= len(b); i++ {
		if equalFold(b[i:i+len(s)], s) {
			return true
		}
	}
	return false
}
