// Package sqlclass reads SQL texts the way PostgreSQL's lexer would, for one purpose: to tell
// the proxy what a request may do. It is pure (no I/O, no session state) and owns one
// tokenizer, Scanner, used both for the fast classification of every Query and Parse and for
// reading the names and texts of the statements that change session state.
//
// The proxy reads the text of Query and Parse messages (only those) to know three things:
//
//   - what a request may do to a transaction: begin it, commit it (then a lost answer is
//     "resolution unknown", 08007, never "not committed", 40001), roll it back;
//   - whether it may write (a cancel request is never forwarded for an autocommit request that
//     may be committing);
//   - what it does to the session's state: SET/RESET, LISTEN/UNLISTEN, PREPARE/DEALLOCATE and
//     DISCARD ALL are remembered and replayed after a move; temporary objects, WITH HOLD
//     cursors, session advisory locks, SET SESSION AUTHORIZATION, LOAD, DO blocks, set_config
//     and dblink connections cannot be replayed and make the session unmovable.
//
// Classify (a single SELECT, INSERT, ...) costs one pass over the text and no allocation; a
// Scanner may also be fed a text in pieces (a large message streamed through the relay) with
// the same result. Statements that change session state are read a second time (StateItems),
// with the scanner keeping its tokens, to extract names and texts. What cannot be read with
// confidence is reported as Uncertain, which callers treat as the worst case.
//
// Known limit: a user-defined function that changes session state inside its body (SET
// without LOCAL, CREATE TEMP TABLE, pg_advisory_lock) is not seen; a moved session then lacks
// that state. DO blocks are treated as unmovable because their code is in the statement.
package sqlclass
