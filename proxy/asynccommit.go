package proxy

import (
	"encoding/binary"
	"strings"

	"github.com/pgquorum/pgquorum/proxy/sqlclass"
)

// Sessions that lower synchronous_commit
//
// With synchronous_commit = off, local or remote_write a commit is acknowledged before a
// synchronous standby has flushed it, so a failover can lose it: the proxy's promise that every
// acknowledged commit exists on two nodes does not hold for that session. By default the
// client's choice stands (it chose that durability for itself) and the session is counted
// (pgquorum_proxy_async_commit_sessions_total). With failover.forbid_async_commit the proxy
// refuses it:
//
//   - a Query or Parse whose text lowers the setting (SET, SET LOCAL, set_config) is replaced
//     by a statement that fails in PostgreSQL with 42501 and the reason, so the transaction and
//     the session's state follow exactly as after any failed statement; none of the request's
//     statements run (a multi-statement Query fails as a whole);
//   - a startup packet that lowers it (a synchronous_commit parameter, or -c in options) ends
//     with FATAL 42501 after authentication.
//
// Not seen: texts streamed through the relay (over streamThreshold), a function that sets it
// in its body, set_config with a setting name that is not a literal, and role or database
// defaults (ALTER ROLE ... SET synchronous_commit), which are the operator's own decision.

// asyncCommitMessage is the error a refused statement or startup gets.
const asyncCommitMessage = "pgquorum refuses synchronous_commit = off, local or remote_write: " +
	"a failover could lose this session's acknowledged commits"

const asyncCommitHint = "The proxies run with failover.forbid_async_commit: true; " +
	"commits are acknowledged only once a synchronous standby has them."

// asyncCommitRefusal is the SQL text sent instead of a refused one: it fails in PostgreSQL
// with the proxy's error, inside the client's transaction if there is one.
var asyncCommitRefusal = "DO $pgquorum$BEGIN RAISE EXCEPTION USING ERRCODE = '" + codeInsufficientPrivilege +
	"', MESSAGE = '" + strings.ReplaceAll(asyncCommitMessage, "'", "''") +
	"', HINT = '" + strings.ReplaceAll(asyncCommitHint, "'", "''") + "'; END$pgquorum$"

// asyncCommitQuery is the Query message sent instead of a refused one.
var asyncCommitQuery = func() []byte {
	msg := []byte{'Q', 0, 0, 0, 0}
	msg = append(msg, asyncCommitRefusal...)
	msg = append(msg, 0)
	binary.BigEndian.PutUint32(msg[1:], uint32(len(msg)-1))
	return msg
}()

// refusedParse returns the Parse message sent instead of a refused one: same statement name,
// the refusal as its text, and as many parameters as the client's statement had (PostgreSQL
// describes the statement to the client, whose Bind must still match): the client's declared
// types, text where it left them to PostgreSQL. The refusal fails when executed.
func refusedParse(name, paramTypes []byte, params int) []byte {
	declared := 0
	if len(paramTypes) >= 2 {
		declared = int(binary.BigEndian.Uint16(paramTypes))
		if len(paramTypes) < 2+4*declared {
			declared = 0 // malformed: PostgreSQL will say so about the client's own message
		}
	}
	n := max(params, declared)
	msg := make([]byte, 5, 5+len(name)+1+len(asyncCommitRefusal)+1+2+4*n)
	msg[0] = 'P'
	msg = append(msg, name...)
	msg = append(msg, 0)
	msg = append(msg, asyncCommitRefusal...)
	msg = append(msg, 0)
	msg = binary.BigEndian.AppendUint16(msg, uint16(n))
	for i := range n {
		oid := uint32(textOID)
		if i < declared {
			if declaredOID := binary.BigEndian.Uint32(paramTypes[2+4*i:]); declaredOID != 0 {
				oid = declaredOID
			}
		}
		msg = binary.BigEndian.AppendUint32(msg, oid)
	}
	binary.BigEndian.PutUint32(msg[1:], uint32(len(msg)-1))
	return msg
}

// textOID is the type of a parameter the refusal does not use.
const textOID = 25

// refuseAsyncCommit is called for a Query or Parse text that may set synchronous_commit. It
// counts the session once if the text lowers it and reports whether the text must be refused.
// s.mu is held.
func (s *session) refuseAsyncCommit(text []byte) bool {
	if !sqlclass.LowersSyncCommit(text, s.backslashQuotes.Load()) {
		return false
	}
	s.noteAsyncCommit()
	if !s.srv.cfg.ForbidAsyncCommit {
		return false
	}
	s.srv.cfg.Metrics.AsyncCommitRefused()
	s.log.Debug("statement lowering synchronous_commit refused (failover.forbid_async_commit)") // counted; no line per statement
	return true
}

// noteAsyncCommit counts the session among those that lowered synchronous_commit, once.
func (s *session) noteAsyncCommit() {
	if !s.asyncCommit {
		s.asyncCommit = true
		s.srv.cfg.Metrics.AsyncCommitSession()
	}
}

// checkStartupSyncCommit looks at the startup parameters for a lowered synchronous_commit:
// counted, and refused with FATAL 42501 under failover.forbid_async_commit.
func (s *session) checkStartupSyncCommit() error {
	lowers := false
	for _, p := range s.params {
		switch p.Name {
		case "synchronous_commit":
			lowers = lowers || sqlclass.LowersDurability(p.Value)
		case "options":
			for _, v := range optionSettings(p.Value, "synchronous_commit") {
				lowers = lowers || sqlclass.LowersDurability(v)
			}
		}
	}
	if !lowers {
		return nil
	}
	s.noteAsyncCommit()
	if !s.srv.cfg.ForbidAsyncCommit {
		return nil
	}
	s.srv.cfg.Metrics.AsyncCommitRefused()
	return fatalf(codeInsufficientPrivilege, "%s", asyncCommitMessage).withHint(asyncCommitHint)
}

// optionSettings returns the values given to setting name in a startup "options" string, read
// as PostgreSQL reads it: words separated by spaces (a backslash escapes the next character),
// each "-c name=value", "-cname=value" or "--name=value", with '-' in names meaning '_'.
func optionSettings(options, name string) []string {
	var words []string
	var w strings.Builder
	escaped, inWord := false, false
	for _, r := range options {
		switch {
		case escaped:
			w.WriteRune(r)
			escaped = false
		case r == '\\':
			escaped, inWord = true, true
		case r == ' ' || r == '\t' || r == '\n' || r == '\r':
			if inWord {
				words = append(words, w.String())
				w.Reset()
				inWord = false
			}
		default:
			w.WriteRune(r)
			inWord = true
		}
	}
	if inWord {
		words = append(words, w.String())
	}
	var values []string
	for i := 0; i < len(words); i++ {
		var setting string
		switch word := words[i]; {
		case word == "-c" && i+1 < len(words):
			i++
			setting = words[i]
		case strings.HasPrefix(word, "--"):
			setting = word[2:]
		case strings.HasPrefix(word, "-c"):
			setting = word[2:]
		default:
			continue
		}
		key, value, ok := strings.Cut(setting, "=")
		if ok && strings.EqualFold(strings.ReplaceAll(key, "-", "_"), name) {
			values = append(values, value)
		}
	}
	return values
}
