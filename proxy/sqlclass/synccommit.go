package sqlclass

import "strings"

// synchronous_commit
//
// A session that sets synchronous_commit to off, local or remote_write has its commits
// acknowledged before a synchronous standby has flushed them: a failover can lose them, which
// the proxy's promise ("every acknowledged commit exists on two nodes") does not cover. The
// proxy counts such sessions and, with failover.forbid_async_commit, refuses the statement.
// The fast pass (Classify) only flags texts that may touch the setting (Summary.SyncCommit);
// LowersSyncCommit then reads their values.

// syncCommitSetting is the setting's name as PostgreSQL folds it.
const syncCommitSetting = "synchronous_commit"

// setsSyncCommit reports whether a SET statement's leading words name synchronous_commit
// (SET [SESSION | LOCAL] synchronous_commit ...).
func setsSyncCommit(st *stmtInfo) bool {
	i := 1
	if st.word(i).is("session") || st.word(i).is("local") {
		i++
	}
	return equalFold(st.word(i).text(), syncCommitSetting)
}

// LowersSyncCommit reports whether a SQL text sets synchronous_commit to a value that
// acknowledges a commit before a synchronous standby has it: off (also written false, no, 0),
// local or remote_write, with SET, SET SESSION, SET LOCAL or set_config('synchronous_commit',
// value, ...). A value the proxy cannot read (a parameter, an expression) counts as lowering;
// a set_config whose setting name is not a literal is not seen. Call it only for texts whose
// Summary.SyncCommit is set: it allocates.
func LowersSyncCommit(text []byte, backslashQuotes bool) bool {
	sc := &Scanner{collect: true}
	sc.Reset(backslashQuotes)
	sc.Feed(text)
	sc.Finish()
	for _, st := range sc.collected {
		switch {
		case st.kind == kindSet || st.kind == kindSetLocal:
			if setLowers(st.toks, text) {
				return true
			}
		case st.flags&flagSetConfig != 0:
			if setConfigLowers(st.toks, text) {
				return true
			}
		}
	}
	return false
}

// setLowers reads SET [SESSION | LOCAL] synchronous_commit {TO | =} value.
func setLowers(toks []rawToken, text []byte) bool {
	i := 1
	if i < len(toks) && (wordIs(toks[i], text, "session") || wordIs(toks[i], text, "local")) {
		i++
	}
	if i >= len(toks) || toks[i].kind == tokLiteral || !strings.EqualFold(tokenText(toks[i], text), syncCommitSetting) {
		return false
	}
	i++
	if i >= len(toks) || !(wordIs(toks[i], text, "to") || symbolIs(toks[i], text, '=')) {
		return false
	}
	i++
	if i+1 != len(toks) {
		return true // no value or more than one: PostgreSQL rejects it, or we misread it
	}
	if wordIs(toks[i], text, "default") {
		return false
	}
	value, ok := literalText(toks[i], text)
	return !ok || LowersDurability(value)
}

// setConfigLowers reads every set_config('synchronous_commit', value, ...) call of a statement.
func setConfigLowers(toks []rawToken, text []byte) bool {
	for i := 0; i+4 < len(toks); i++ {
		if toks[i].kind == tokSymbol || !strings.EqualFold(tokenText(toks[i], text), "set_config") ||
			!symbolIs(toks[i+1], text, '(') {
			continue
		}
		name, ok := literalText(toks[i+2], text)
		if !ok || !strings.EqualFold(strings.TrimSpace(name), syncCommitSetting) || !symbolIs(toks[i+3], text, ',') {
			continue
		}
		value, ok := literalText(toks[i+4], text)
		if !ok || (i+5 < len(toks) && !symbolIs(toks[i+5], text, ',')) || LowersDurability(value) {
			return true // an expression, a parameter or a lowering value
		}
	}
	return false
}

// LowersDurability reports whether a synchronous_commit value acknowledges commits before a
// synchronous standby has flushed them: everything but on (true, yes, 1) and remote_apply.
// (PostgreSQL rejects other spellings; refusing them first changes only the error's text.)
func LowersDurability(value string) bool {
	switch strings.ToLower(strings.TrimSpace(value)) {
	case "on", "true", "yes", "1", "remote_apply":
		return false
	}
	return true
}

// tokenText is a token's text, unquoted for a quoted identifier.
func tokenText(t rawToken, text []byte) string {
	s := string(text[t.start:t.end])
	if t.kind == tokQuoted && len(s) >= 2 {
		return strings.ReplaceAll(s[1:len(s)-1], `""`, `"`)
	}
	return s
}

func wordIs(t rawToken, text []byte, kw string) bool {
	return t.kind == tokWord && equalFold(text[t.start:t.end], kw)
}

func symbolIs(t rawToken, text []byte, c byte) bool {
	return t.kind == tokSymbol && text[t.start] == c
}

// literalText returns the value of a word, quoted identifier, number or '...' literal; ok is false for
// anything else (escape strings, dollar quotes, parameters).
func literalText(t rawToken, text []byte) (string, bool) {
	s := string(text[t.start:t.end])
	switch t.kind {
	case tokWord:
		return s, true
	case tokQuoted:
		return tokenText(t, text), true
	case tokLiteral:
		if len(s) >= 2 && s[0] == '\'' && s[len(s)-1] == '\'' {
			return strings.ReplaceAll(s[1:len(s)-1], "''", "'"), true
		}
		if len(s) > 0 && s[0] >= '0' && s[0] <= '9' {
			return s, true
		}
	}
	return "", false
}

// ParamCount returns the highest positional parameter ($n) a SQL text refers to: the number
// of parameters PostgreSQL gives its prepared statement (when the Parse declares fewer).
func ParamCount(text []byte, backslashQuotes bool) int {
	sc := &Scanner{collect: true}
	sc.Reset(backslashQuotes)
	sc.Feed(text)
	sc.Finish()
	highest := 0
	for _, t := range sc.toks {
		if t.kind != tokLiteral || text[t.start] != '$' {
			continue
		}
		n := 0
		for _, c := range text[t.start+1 : t.end] {
			if c < '0' || c > '9' || n > 1<<16 {
				n = -1
				break
			}
			n = n*10 + int(c-'0')
		}
		highest = max(highest, n)
	}
	return highest
}
