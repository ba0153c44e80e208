package proxy

import (
	"reflect"
	"testing"
)

func TestClassifySQL(t *testing.T) {
	tests := []struct {
		sql  string
		want sqlSummary
	}{
		{"", sqlSummary{}},
		{"  ;; -- nothing\n", sqlSummary{}},
		{"SELECT 1", sqlSummary{statements: 1, first: kindRead}},
		{"select abalance from pgbench_accounts where aid = $1", sqlSummary{statements: 1, first: kindRead}},
		{"SELECT pg_sleep(60)", sqlSummary{statements: 1, first: kindRead}},
		{"SELECT * FROM t FOR UPDATE", sqlSummary{statements: 1, first: kindWrite, firstFlags: flagForLock, writes: true}},
		{"SELECT * FROM t FOR NO KEY UPDATE", sqlSummary{statements: 1, first: kindWrite, firstFlags: flagForLock, writes: true}},
		{"SELECT 1 INTO new_table", sqlSummary{statements: 1, first: kindWrite, firstFlags: flagInto, writes: true}},
		{"SELECT 1 INTO TEMP t", sqlSummary{statements: 1, first: kindUnmovable, firstFlags: flagInto | flagIntoTemp, writes: true, unmovable: reasonTempObject}},
		{"INSERT INTO t VALUES (1)", sqlSummary{statements: 1, first: kindWrite, firstFlags: flagInto, writes: true}},
		{"WITH x AS (DELETE FROM t RETURNING *) SELECT * FROM x", sqlSummary{statements: 1, first: kindWrite, writes: true}},
		{"EXPLAIN SELECT 1", sqlSummary{statements: 1, first: kindRead}},
		{"EXPLAIN (ANALYZE) DELETE FROM t", sqlSummary{statements: 1, first: kindWrite, firstFlags: flagAnalyze, writes: true}},
		{"VACUUM t", sqlSummary{statements: 1, first: kindOther, writes: true}},
		{"BEGIN", sqlSummary{statements: 1, first: kindBegin, txControl: true}},
		{"start transaction isolation level serializable", sqlSummary{statements: 1, first: kindBegin, txControl: true}},
		{"COMMIT", sqlSummary{statements: 1, first: kindCommit, txControl: true, mayCommit: true}},
		{"end", sqlSummary{statements: 1, first: kindCommit, txControl: true, mayCommit: true}},
		{"COMMIT AND CHAIN", sqlSummary{statements: 1, first: kindCommit, firstFlags: flagChain, txControl: true, mayCommit: true}},
		{"ROLLBACK", sqlSummary{statements: 1, first: kindRollback, txControl: true}},
		{"abort", sqlSummary{statements: 1, first: kindRollback, txControl: true}},
		{"ROLLBACK TO SAVEPOINT a", sqlSummary{statements: 1, first: kindRollbackTo, txControl: true}},
		{"ROLLBACK WORK TO a", sqlSummary{statements: 1, first: kindRollbackTo, txControl: true}},
		{"PREPARE TRANSACTION 'x'", sqlSummary{statements: 1, first: kindTwoPhase, txControl: true, mayCommit: true}},
		{"COMMIT PREPARED 'x'", sqlSummary{statements: 1, first: kindTwoPhase, txControl: true, mayCommit: true}},
		{"BEGIN; INSERT INTO t VALUES (1); COMMIT;", sqlSummary{statements: 3, first: kindBegin, txControl: true, mayCommit: true, writes: true}},
		{"SET search_path TO a, b", sqlSummary{statements: 1, first: kindSet, effects: true}},
		{"SET LOCAL work_mem = '1MB'", sqlSummary{statements: 1, first: kindSetLocal}},
		{"SET TRANSACTION READ ONLY", sqlSummary{statements: 1, first: kindSetLocal}},
		{"SET SESSION AUTHORIZATION bob", sqlSummary{statements: 1, first: kindUnmovable, writes: true, unmovable: reasonSessionAuth}},
		{"RESET ALL", sqlSummary{statements: 1, first: kindReset, effects: true}},
		{"LISTEN jobs", sqlSummary{statements: 1, first: kindListen, effects: true}},
		{"PREPARE q(int) AS SELECT $1", sqlSummary{statements: 1, first: kindPrepare, effects: true}},
		{"EXECUTE q(1)", sqlSummary{statements: 1, first: kindExecute, executes: true, writes: true}},
		{"DEALLOCATE ALL", sqlSummary{statements: 1, first: kindDeallocate, effects: true}},
		{"DISCARD ALL", sqlSummary{statements: 1, first: kindDiscardAll, effects: true}},
		{"DISCARD PLANS", sqlSummary{statements: 1, first: kindOther, writes: true}},
		{"CREATE TEMP TABLE t (a int)", sqlSummary{statements: 1, first: kindUnmovable, writes: true, unmovable: reasonTempObject}},
		{"create global temporary table t (a int)", sqlSummary{statements: 1, first: kindUnmovable, writes: true, unmovable: reasonTempObject}},
		{"CREATE OR REPLACE TEMP VIEW v AS SELECT 1", sqlSummary{statements: 1, first: kindUnmovable, writes: true, unmovable: reasonTempObject}},
		{"CREATE TABLE pg_temp.t (a int)", sqlSummary{statements: 1, first: kindUnmovable, firstFlags: flagPgTemp, writes: true, unmovable: reasonTempObject}},
		{"CREATE TABLE temperatures (a int)", sqlSummary{statements: 1, first: kindWrite, writes: true}},
		{"DECLARE c CURSOR WITH HOLD FOR SELECT 1", sqlSummary{statements: 1, first: kindUnmovable, firstFlags: flagWithHold, writes: true, unmovable: reasonWithHold}},
		{"DECLARE c CURSOR FOR SELECT 1", sqlSummary{statements: 1, first: kindRead}},
		{"SELECT pg_advisory_lock(1)", sqlSummary{statements: 1, first: kindRead, firstFlags: flagAdvisoryLock, unmovable: reasonAdvisoryLock}},
		{"SELECT pg_catalog.PG_TRY_ADVISORY_LOCK_SHARED(1)", sqlSummary{statements: 1, first: kindRead, firstFlags: flagAdvisoryLock, unmovable: reasonAdvisoryLock}},
		{"SELECT pg_advisory_xact_lock(1)", sqlSummary{statements: 1, first: kindRead}},
		{"SELECT set_config('a.b', 'c', false)", sqlSummary{statements: 1, first: kindRead, firstFlags: flagSetConfig, unmovable: reasonSetConfig}},
		{"SELECT dblink_connect('c', 'dbname=x')", sqlSummary{statements: 1, first: kindRead, firstFlags: flagDblink, unmovable: reasonDblink}},
		{"LOAD 'auto_explain'", sqlSummary{statements: 1, first: kindUnmovable, writes: true, unmovable: reasonLoad}},
		{"DO $$BEGIN PERFORM 1; END$$", sqlSummary{statements: 1, first: kindUnmovable, writes: true, unmovable: reasonDoBlock}},
		// Quoting: nothing inside literals, identifiers or comments counts.
		{"SELECT 'COMMIT; SET x = 1'", sqlSummary{statements: 1, first: kindRead}},
		{"SELECT 'it''s; COMMIT'", sqlSummary{statements: 1, first: kindRead}},
		{`SELECT E'a\'; COMMIT'`, sqlSummary{statements: 1, first: kindRead}},
		{`SELECT "a;""b" FROM "pg_advisory_lock"`, sqlSummary{statements: 1, first: kindRead, firstFlags: flagAdvisoryLock, unmovable: reasonAdvisoryLock}},
		{"SELECT $fn$ COMMIT; $x$ ; $fn$, $1", sqlSummary{statements: 1, first: kindRead}},
		{"SELECT /* COMMIT; /* nested; */ still */ 1", sqlSummary{statements: 1, first: kindRead}},
		{"SELECT 1 -- ; COMMIT\n", sqlSummary{statements: 1, first: kindRead}},
		{"SELECT 1 - -1 / 2", sqlSummary{statements: 1, first: kindRead}},
		{"CREATE RULE r AS ON INSERT TO t DO ALSO (NOTIFY a; NOTIFY b)", sqlSummary{statements: 1, first: kindWrite, writes: true}},
		{"CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT CASE WHEN true THEN 1 END; SELECT 2; END; SELECT 3",
			sqlSummary{statements: 2, first: kindWrite, writes: true}},
		{"CREATE FUNCTION f() RETURNS void AS $$ SELECT pg_advisory_lock(1) $$ LANGUAGE sql", sqlSummary{statements: 1, first: kindWrite, writes: true}},
		// Uncertain texts.
		{"SELECT 'unterminated", sqlSummary{statements: 1, first: kindRead, uncertain: true}},
		{"SELECT $$ unterminated", sqlSummary{statements: 1, first: kindRead, uncertain: true}},
		{"SELECT (1", sqlSummary{statements: 1, first: kindRead, uncertain: true}},
		{"SELECT 1 /* unterminated", sqlSummary{statements: 1, first: kindRead, uncertain: true}},
	}
	for _, tt := range tests {
		t.Run(tt.sql, func(t *testing.T) {
			got := classifySQL([]byte(tt.sql), false)
			if got != tt.want {
				t.Errorf("classifySQL(%q)\n got %+v\nwant %+v", tt.sql, got, tt.want)
			}
			// Any split of the text gives the same result.
			for cut := 0; cut <= len(tt.sql); cut++ {
				var sc sqlScanner
				sc.reset(false)
				sc.feed([]byte(tt.sql[:cut]))
				sc.feed([]byte(tt.sql[cut:]))
				if split := sc.finish(); split != got {
					t.Fatalf("split at %d: %+v, whole: %+v", cut, split, got)
				}
			}
		})
	}
}

func TestClassifyBackslashQuotes(t *testing.T) {
	// With standard_conforming_strings off, '\'' does not end a literal.
	sql := []byte(`SELECT 'a\'; COMMIT; SET x = 1'`)
	if got := classifySQL(sql, true); got.statements != 1 || got.mayCommit || got.effects {
		t.Fatalf("backslash quotes: %+v", got)
	}
	if got := classifySQL(sql, false); !got.mayCommit {
		t.Fatalf("standard strings: the literal ends at the second quote; got %+v", got)
	}
}

func TestStateItems(t *testing.T) {
	tests := []struct {
		sql  string
		want []stateItem
	}{
		{"SELECT 1", nil},
		{"SET search_path TO a, b", []stateItem{{op: opSet, name: "search_path", text: "SET search_path TO a, b"}}},
		{"set Session TimeZone = 'UTC' ; ", []stateItem{{op: opSet, name: "timezone", text: "set Session TimeZone = 'UTC'"}}},
		{"SET TIME ZONE 'UTC'", []stateItem{{op: opSet, name: "timezone", text: "SET TIME ZONE 'UTC'"}}},
		{"SET NAMES 'UTF8'", []stateItem{{op: opSet, name: "client_encoding", text: "SET NAMES 'UTF8'"}}},
		{`SET myapp.user_id = '42'`, []stateItem{{op: opSet, name: "myapp.user_id", text: `SET myapp.user_id = '42'`}}},
		{`SET "MyApp"."Tenant" TO 7`, []stateItem{{op: opSet, name: "myapp.tenant", text: `SET "MyApp"."Tenant" TO 7`}}},
		{"SET ROLE admin", []stateItem{{op: opSet, name: "role", text: "SET ROLE admin"}}},
		{"SET x y", []stateItem{{op: opUnmovable, name: reasonUncertainSQL}}},
		{"RESET search_path", []stateItem{{op: opReset, name: "search_path"}}},
		{"RESET TIME ZONE", []stateItem{{op: opReset, name: "timezone"}}},
		{"RESET ALL", []stateItem{{op: opResetAll}}},
		{"LISTEN Jobs; LISTEN \"Mixed Case\"", []stateItem{{op: opListen, name: "jobs"}, {op: opListen, name: "Mixed Case"}}},
		{"UNLISTEN *", []stateItem{{op: opUnlistenAll}}},
		{"UNLISTEN jobs", []stateItem{{op: opUnlisten, name: "jobs"}}},
		{"PREPARE q (int) AS SELECT $1", []stateItem{{op: opPrepare, name: "q", text: "PREPARE q (int) AS SELECT $1"}}},
		{"DEALLOCATE PREPARE q", []stateItem{{op: opDeallocate, name: "q"}}},
		{"DEALLOCATE ALL", []stateItem{{op: opDeallocateAll}}},
		{"DISCARD ALL", []stateItem{{op: opDiscardAll}}},
		{"EXECUTE q(1)", []stateItem{{op: opExecute, name: "q"}}},
		{"BEGIN; SET x.y = 1; SAVEPOINT s1; RESET x.y; ROLLBACK TO SAVEPOINT s1; RELEASE s1; COMMIT",
			[]stateItem{{op: opBegin}, {op: opSet, name: "x.y", text: "SET x.y = 1"}, {op: opSavepoint, name: "s1"},
				{op: opReset, name: "x.y"}, {op: opRollbackTo, name: "s1"}, {op: opRelease, name: "s1"}, {op: opCommit}}},
		{"COMMIT AND CHAIN; ROLLBACK AND CHAIN", []stateItem{{op: opCommitChain}, {op: opRollbackChain}}},
		{"CREATE TEMP TABLE t (a int)", []stateItem{{op: opUnmovable, name: reasonTempObject}}},
		{"SET x.y = 'unterminated", []stateItem{{op: opSet, name: "x.y", text: "SET x.y = 'unterminated"}, {op: opUnmovable, name: reasonUncertainSQL}}},
	}
	for _, tt := range tests {
		t.Run(tt.sql, func(t *testing.T) {
			if got := stateItems([]byte(tt.sql), false); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("stateItems(%q)\n got %+v\nwant %+v", tt.sql, got, tt.want)
			}
		})
	}
}

// FuzzClassifySQL checks that no input panics and that feeding the text in two pieces gives
// the same summary as feeding it whole.
func FuzzClassifySQL(f *testing.F) {
	for _, s := range []string{"SELECT 1", "BEGIN; SET a.b = 1; COMMIT", "SELECT $a$ x $a$", "SELECT 'x''y'", "/* /* */ */ LISTEN x",
		`SELECT E'\\'`, "CREATE FUNCTION f() BEGIN ATOMIC SELECT 1; END", "SET \"x\".\"y\" TO 1", "PREPARE q AS SELECT 1", "$1", "e'"} {
		f.Add(s, uint(len(s)/2), false)
	}
	f.Fuzz(func(t *testing.T, sql string, cut uint, backslash bool) {
		whole := classifySQL([]byte(sql), backslash)
		c := int(cut % uint(len(sql)+1))
		var sc sqlScanner
		sc.reset(backslash)
		sc.feed([]byte(sql[:c]))
		sc.feed([]byte(sql[c:]))
		if split := sc.finish(); split != whole {
			t.Fatalf("split at %d: %+v, whole: %+v", c, split, whole)
		}
		items := stateItems([]byte(sql), backslash)
		if whole.effects && len(items) == 0 {
			t.Fatalf("summary says effects, but no items: %+v", whole)
		}
	})
}

func BenchmarkClassifySQL(b *testing.B) {
	sql := []byte("SELECT abalance FROM pgbench_accounts WHERE aid = $1")
	b.ReportAllocs()
	b.SetBytes(int64(len(sql)))
	for b.Loop() {
		if s := classifySQL(sql, false); s.first != kindRead {
			b.Fatal(s)
		}
	}
}
