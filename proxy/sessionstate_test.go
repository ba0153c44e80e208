package proxy

import (
	"github.com/pgquorum/pgquorum/proxy/sqlclass"
	"strings"
	"testing"
)

// request is one request of a scripted session: its SQL and how PostgreSQL answered it.
type request struct {
	sql     string
	after   byte // transaction status PostgreSQL reported after it
	errored bool
}

// runScript applies the requests in order, as the relay does when their answers arrive.
func runScript(script []request) *sessionState {
	st := &sessionState{}
	before := byte('I')
	for _, r := range script {
		sum := sqlclass.Classify([]byte(r.sql), false)
		st.apply(sqlclass.StateItems([]byte(r.sql), false), sum.Statements, segOutcome{before: before, after: r.after, errored: r.errored})
		before = r.after
	}
	return st
}

func TestSessionStateApply(t *testing.T) {
	tests := []struct {
		name      string
		script    []request
		replay    string
		unmovable string
	}{
		{"nothing", []request{{"SELECT 1", 'I', false}}, "", ""},
		{"autocommit SET", []request{{"SET search_path TO a", 'I', false}}, "SET search_path TO a\n;", ""},
		{"later SET of the same setting replaces and moves last",
			[]request{{"SET a.x = 1", 'I', false}, {"SET b.y = 2", 'I', false}, {"SET a.x = 3", 'I', false}},
			"SET b.y = 2\n;SET a.x = 3\n;", ""},
		{"failed SET is not kept", []request{{"SET work_mem = 'lots'", 'I', true}}, "", ""},
		{"RESET", []request{{"SET a.x = 1", 'I', false}, {"RESET a.x", 'I', false}}, "", ""},
		{"RESET ALL keeps the role", []request{{"SET ROLE app", 'I', false}, {"SET a.x = 1", 'I', false}, {"RESET ALL", 'I', false}},
			"SET ROLE app\n;", ""},
		{"SET LOCAL is not replayed", []request{{"BEGIN", 'T', false}, {"SET LOCAL a.x = 1", 'T', false}, {"COMMIT", 'I', false}}, "", ""},
		{"SET in a committed transaction", []request{{"BEGIN", 'T', false}, {"SET a.x = 1", 'T', false}, {"COMMIT", 'I', false}},
			"SET a.x = 1\n;", ""},
		{"SET in a rolled back transaction", []request{{"BEGIN", 'T', false}, {"SET a.x = 1", 'T', false}, {"ROLLBACK", 'I', false}}, "", ""},
		{"SET in an aborted transaction that is committed", []request{{"BEGIN", 'T', false}, {"SET a.x = 1", 'T', false},
			{"SELECT 1/0", 'E', true}, {"COMMIT", 'I', false}}, "", ""},
		{"failed COMMIT rolls back", []request{{"BEGIN", 'T', false}, {"SET a.x = 1", 'T', false}, {"COMMIT", 'I', true}}, "", ""},
		{"ROLLBACK TO SAVEPOINT undoes later SETs",
			[]request{{"BEGIN; SET a.x = 1; SAVEPOINT s; SET a.y = 2; ROLLBACK TO SAVEPOINT s; COMMIT", 'I', false}},
			"SET a.x = 1\n;", ""},
		{"ROLLBACK TO SAVEPOINT recovers an aborted transaction",
			[]request{{"BEGIN", 'T', false}, {"SET a.x = 1", 'T', false}, {"SAVEPOINT s", 'T', false}, {"SELECT 1/0", 'E', true},
				{"ROLLBACK TO s", 'T', false}, {"COMMIT", 'I', false}},
			"SET a.x = 1\n;", ""},
		{"RELEASE keeps the changes", []request{{"BEGIN; SAVEPOINT s; SET a.x = 1; RELEASE SAVEPOINT s; COMMIT", 'I', false}},
			"SET a.x = 1\n;", ""},
		{"unknown savepoint", []request{{"BEGIN", 'T', false}, {"SET a.x = 1", 'T', false}, {"ROLLBACK TO nope", 'T', false}},
			"", reasonUncertainOutcome},
		{"implicit transaction", []request{{"SET a.x = 1; SET a.y = 2", 'I', false}}, "SET a.x = 1\n;SET a.y = 2\n;", ""},
		{"failed implicit transaction", []request{{"SET a.x = 1; SELECT 1/0", 'I', true}}, "", ""},
		{"failed implicit transaction with PREPARE", []request{{"PREPARE q AS SELECT 1; SELECT 1/0", 'I', true}}, "", reasonUncertainOutcome},
		{"failed multi-statement with transaction control", []request{{"BEGIN; SET a.x = 1; COMMIT; SELECT 1/0", 'I', true}}, "", reasonUncertainOutcome},
		{"COMMIT AND CHAIN", []request{{"BEGIN", 'T', false}, {"SET a.x = 1", 'T', false}, {"COMMIT AND CHAIN", 'T', false},
			{"SET a.y = 1", 'T', false}, {"ROLLBACK", 'I', false}}, "SET a.x = 1\n;", ""},
		{"a transaction the classifier did not see end", []request{{"BEGIN", 'T', false}, {"SET a.x = 1", 'T', false}, {"SELECT 1", 'I', false}},
			"", reasonUncertainOutcome},
		{"SQL PREPARE and DEALLOCATE", []request{{"PREPARE a AS SELECT 1", 'I', false}, {"PREPARE b (int) AS SELECT $1", 'I', false},
			{"DEALLOCATE a", 'I', false}}, "PREPARE b (int) AS SELECT $1\n;", ""},
		{"PREPARE is not undone by ROLLBACK", []request{{"BEGIN; PREPARE a AS SELECT 1; ROLLBACK", 'I', false}}, "PREPARE a AS SELECT 1\n;", ""},
		{"LISTEN", []request{{"LISTEN jobs; LISTEN \"Mixed\"", 'I', false}, {"LISTEN jobs", 'I', false}}, `LISTEN "jobs";LISTEN "Mixed";`, ""},
		{"UNLISTEN", []request{{"LISTEN a; LISTEN b", 'I', false}, {"UNLISTEN a", 'I', false}}, `LISTEN "b";`, ""},
		{"LISTEN in a rolled back transaction", []request{{"BEGIN; LISTEN a; ROLLBACK", 'I', false}}, "", ""},
		{"temp table", []request{{"CREATE TEMP TABLE t (a int)", 'I', false}}, "", sqlclass.ReasonTempObject},
		{"advisory lock", []request{{"SELECT pg_advisory_lock(1)", 'I', false}}, "", sqlclass.ReasonAdvisoryLock},
		{"DISCARD ALL makes a session movable again", []request{{"CREATE TEMP TABLE t (a int)", 'I', false}, {"SET a.x = 1", 'I', false},
			{"DISCARD ALL", 'I', false}, {"SET a.y = 2", 'I', false}}, "SET a.y = 2\n;", ""},
		{"DISCARD ALL does not unload a library", []request{{"LOAD 'auto_explain'", 'I', false}, {"DISCARD ALL", 'I', false}}, "", sqlclass.ReasonLoad},
		{"too much state", []request{{"SET a.x = '" + strings.Repeat("x", maxStateTextBytes) + "'", 'I', false}},
			"SET a.x = '" + strings.Repeat("x", maxStateTextBytes) + "'\n;", reasonStateTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := runScript(tt.script)
			if got := st.replaySQL(); got != tt.replay {
				t.Errorf("replay:\n got %q\nwant %q", got, tt.replay)
			}
			if st.unmovable != tt.unmovable {
				t.Errorf("unmovable = %q, want %q", st.unmovable, tt.unmovable)
			}
		})
	}
}

func TestSessionStateApplyLost(t *testing.T) {
	// A transaction lost with the backend before COMMIT was sent: its changes are gone, and
	// the session can move (40001).
	st := runScript([]request{{"SET a.x = 1", 'I', false}, {"BEGIN", 'T', false}, {"SET a.y = 2", 'T', false}})
	st.applyLost(sqlclass.StateItems([]byte("SET a.z = 3"), false), false)
	if st.unmovable != "" || st.replaySQL() != "SET a.x = 1\n;" || st.pending != nil {
		t.Fatalf("after a lost transaction: %+v", st)
	}
	// A COMMIT lost in flight: the changes may or may not be committed (08007).
	st = runScript([]request{{"BEGIN", 'T', false}, {"SET a.y = 2", 'T', false}})
	st.applyLost(sqlclass.StateItems([]byte("COMMIT"), false), true)
	if st.unmovable != reasonUncertainOutcome {
		t.Fatalf("after a lost COMMIT with pending changes: unmovable %q", st.unmovable)
	}
	// A lost autocommit request without changes leaves a movable session.
	st = runScript(nil)
	st.applyLost(sqlclass.StateItems([]byte("INSERT INTO t VALUES (1)"), false), true)
	if !st.movable() {
		t.Fatalf("after a lost INSERT: unmovable %q", st.unmovable)
	}
}
