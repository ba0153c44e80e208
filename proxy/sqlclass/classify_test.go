package sqlclass

import (
	"reflect"
	"testing"
)

func TestClassifySQL(t *testing.T) {
	tests := []struct {
		sql  string
		want Summary
	}{
		{"", Summary{}},
		{"  ;; -- nothing\n", Summary{}},
		{"SELECT 1", Summary{Statements: 1, first: kindRead}},
		{"select abalance from pgbench_accounts where aid = $1", Summary{Statements: 1, first: kindRead}},
		{"SELECT pg_sleep(60)", Summary{Statements: 1, first: kindRead}},
		{"SELECT * FROM t FOR UPDATE", Summary{Statements: 1, first: kindWrite, firstFlags: flagForLock, Writes: true}},
		{"SELECT * FROM t FOR NO KEY UPDATE", Summary{Statements: 1, first: kindWrite, firstFlags: flagForLock, Writes: true}},
		{"SELECT 1 INTO new_table", Summary{Statements: 1, first: kindWrite, firstFlags: flagInto, Writes: true}},
		{"SELECT 1 INTO TEMP t", Summary{Statements: 1, first: kindUnmovable, firstFlags: flagInto | flagIntoTemp, Writes: true, Unmovable: ReasonTempObject}},
		{"INSERT INTO t VALUES (1)", Summary{Statements: 1, first: kindWrite, firstFlags: flagInto, Writes: true}},
		{"WITH x AS (DELETE FROM t RETURNING *) SELECT * FROM x", Summary{Statements: 1, first: kindWrite, Writes: true}},
		{"EXPLAIN SELECT 1", Summary{Statements: 1, first: kindRead}},
		{"EXPLAIN (ANALYZE) DELETE FROM t", Summary{Statements: 1, first: kindWrite, firstFlags: flagAnalyze, Writes: true}},
		{"VACUUM t", Summary{Statements: 1, first: kindOther, Writes: true}},
		{"BEGIN", Summary{Statements: 1, first: kindBegin, TxControl: true}},
		{"start transaction isolation level serializable", Summary{Statements: 1, first: kindBegin, TxControl: true}},
		{"COMMIT", Summary{Statements: 1, first: kindCommit, TxControl: true, MayCommit: true}},
		{"end", Summary{Statements: 1, first: kindCommit, TxControl: true, MayCommit: true}},
		{"COMMIT AND CHAIN", Summary{Statements: 1, first: kindCommit, firstFlags: flagChain, TxControl: true, MayCommit: true}},
		{"ROLLBACK", Summary{Statements: 1, first: kindRollback, TxControl: true}},
		{"abort", Summary{Statements: 1, first: kindRollback, TxControl: true}},
		{"ROLLBACK TO SAVEPOINT a", Summary{Statements: 1, first: kindRollbackTo, TxControl: true}},
		{"ROLLBACK WORK TO a", Summary{Statements: 1, first: kindRollbackTo, TxControl: true}},
		{"PREPARE TRANSACTION 'x'", Summary{Statements: 1, first: kindTwoPhase, TxControl: true, MayCommit: true}},
		{"COMMIT PREPARED 'x'", Summary{Statements: 1, first: kindTwoPhase, TxControl: true, MayCommit: true}},
		{"BEGIN; INSERT INTO t VALUES (1); COMMIT;", Summary{Statements: 3, first: kindBegin, TxControl: true, MayCommit: true, Writes: true}},
		{"SET search_path TO a, b", Summary{Statements: 1, first: kindSet, Effects: true}},
		{"SET LOCAL work_mem = '1MB'", Summary{Statements: 1, first: kindSetLocal}},
		{"SET TRANSACTION READ ONLY", Summary{Statements: 1, first: kindSetLocal}},
		{"SET SESSION AUTHORIZATION bob", Summary{Statements: 1, first: kindUnmovable, Writes: true, Unmovable: ReasonSessionAuth}},
		{"RESET ALL", Summary{Statements: 1, first: kindReset, Effects: true}},
		{"LISTEN jobs", Summary{Statements: 1, first: kindListen, Effects: true}},
		{"PREPARE q(int) AS SELECT $1", Summary{Statements: 1, first: kindPrepare, Effects: true}},
		{"EXECUTE q(1)", Summary{Statements: 1, first: kindExecute, Executes: true, Writes: true}},
		{"DEALLOCATE ALL", Summary{Statements: 1, first: kindDeallocate, Effects: true}},
		{"DISCARD ALL", Summary{Statements: 1, first: kindDiscardAll, Effects: true}},
		{"DISCARD PLANS", Summary{Statements: 1, first: kindOther, Writes: true}},
		{"CREATE TEMP TABLE t (a int)", Summary{Statements: 1, first: kindUnmovable, Writes: true, Unmovable: ReasonTempObject}},
		{"create global temporary table t (a int)", Summary{Statements: 1, first: kindUnmovable, Writes: true, Unmovable: ReasonTempObject}},
		{"CREATE OR REPLACE TEMP VIEW v AS SELECT 1", Summary{Statements: 1, first: kindUnmovable, Writes: true, Unmovable: ReasonTempObject}},
		{"CREATE TABLE pg_temp.t (a int)", Summary{Statements: 1, first: kindUnmovable, firstFlags: flagPgTemp, Writes: true, Unmovable: ReasonTempObject}},
		{"CREATE TABLE temperatures (a int)", Summary{Statements: 1, first: kindWrite, Writes: true}},
		{"DECLARE c CURSOR WITH HOLD FOR SELECT 1", Summary{Statements: 1, first: kindUnmovable, firstFlags: flagWithHold, Writes: true, Unmovable: ReasonWithHold}},
		{"DECLARE c CURSOR FOR SELECT 1", Summary{Statements: 1, first: kindRead}},
		{"SELECT pg_advisory_lock(1)", Summary{Statements: 1, first: kindRead, firstFlags: flagAdvisoryLock, Unmovable: ReasonAdvisoryLock}},
		{"SELECT pg_catalog.PG_TRY_ADVISORY_LOCK_SHARED(1)", Summary{Statements: 1, first: kindRead, firstFlags: flagAdvisoryLock, Unmovable: ReasonAdvisoryLock}},
		{"SELECT pg_advisory_xact_lock(1)", Summary{Statements: 1, first: kindRead}},
		{"SELECT set_config('a.b', 'c', false)", Summary{Statements: 1, first: kindRead, firstFlags: flagSetConfig, Unmovable: ReasonSetConfig, SyncCommit: true}},
		{"SELECT dblink_connect('c', 'dbname=x')", Summary{Statements: 1, first: kindRead, firstFlags: flagDblink, Unmovable: ReasonDblink}},
		{"LOAD 'auto_explain'", Summary{Statements: 1, first: kindUnmovable, Writes: true, Unmovable: ReasonLoad}},
		{"DO $$BEGIN PERFORM 1; END$$", Summary{Statements: 1, first: kindUnmovable, Writes: true, Unmovable: ReasonDoBlock}},
		// Quoting: nothing inside literals, identifiers or comments counts.
		{"SELECT 'COMMIT; SET x = 1'", Summary{Statements: 1, first: kindRead}},
		{"SELECT 'it''s; COMMIT'", Summary{Statements: 1, first: kindRead}},
		{`SELECT E'a\'; COMMIT'`, Summary{Statements: 1, first: kindRead}},
		{`SELECT "a;""b" FROM "pg_advisory_lock"`, Summary{Statements: 1, first: kindRead, firstFlags: flagAdvisoryLock, Unmovable: ReasonAdvisoryLock}},
		{"SELECT $fn$ COMMIT; $x$ ; $fn$, $1", Summary{Statements: 1, first: kindRead}},
		{"SELECT /* COMMIT; /* nested; */ still */ 1", Summary{Statements: 1, first: kindRead}},
		{"SELECT 1 -- ; COMMIT\n", Summary{Statements: 1, first: kindRead}},
		{"SELECT 1 - -1 / 2", Summary{Statements: 1, first: kindRead}},
		{"CREATE RULE r AS ON INSERT TO t DO ALSO (NOTIFY a; NOTIFY b)", Summary{Statements: 1, first: kindWrite, Writes: true}},
		{"CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT CASE WHEN true THEN 1 END; SELECT 2; END; SELECT 3",
			Summary{Statements: 2, first: kindWrite, Writes: true}},
		{"CREATE FUNCTION f() RETURNS void AS $$ SELECT pg_advisory_lock(1) $$ LANGUAGE sql", Summary{Statements: 1, first: kindWrite, Writes: true}},
		// Uncertain texts.
		{"SELECT 'unterminated", Summary{Statements: 1, first: kindRead, Uncertain: true}},
		{"SELECT $$ unterminated", Summary{Statements: 1, first: kindRead, Uncertain: true}},
		{"SELECT (1", Summary{Statements: 1, first: kindRead, Uncertain: true}},
		{"SELECT 1 /* unterminated", Summary{Statements: 1, first: kindRead, Uncertain: true}},
	}
	for _, tt := range tests {
		t.Run(tt.sql, func(t *testing.T) {
			got := Classify([]byte(tt.sql), false)
			if got != tt.want {
				t.Errorf("Classify(%q)\n got %+v\nwant %+v", tt.sql, got, tt.want)
			}
			// Any split of the text gives the same result.
			for cut := 0; cut <= len(tt.sql); cut++ {
				var sc Scanner
				sc.Reset(false)
				sc.Feed([]byte(tt.sql[:cut]))
				sc.Feed([]byte(tt.sql[cut:]))
				if split := sc.Finish(); split != got {
					t.Fatalf("split at %d: %+v, whole: %+v", cut, split, got)
				}
			}
		})
	}
}

func TestClassifyBackslashQuotes(t *testing.T) {
	// With standard_conforming_strings off, '\'' does not end a literal.
	sql := []byte(`SELECT 'a\'; COMMIT; SET x = 1'`)
	if got := Classify(sql, true); got.Statements != 1 || got.MayCommit || got.Effects {
		t.Fatalf("backslash quotes: %+v", got)
	}
	if got := Classify(sql, false); !got.MayCommit {
		t.Fatalf("standard strings: the literal ends at the second quote; got %+v", got)
	}
}

func TestStateItems(t *testing.T) {
	tests := []struct {
		sql  string
		want []Item
	}{
		{"SELECT 1", nil},
		{"SET search_path TO a, b", []Item{{Op: OpSet, Name: "search_path", Text: "SET search_path TO a, b"}}},
		{"set Session TimeZone = 'UTC' ; ", []Item{{Op: OpSet, Name: "timezone", Text: "set Session TimeZone = 'UTC'"}}},
		{"SET TIME ZONE 'UTC'", []Item{{Op: OpSet, Name: "timezone", Text: "SET TIME ZONE 'UTC'"}}},
		{"SET NAMES 'UTF8'", []Item{{Op: OpSet, Name: "client_encoding", Text: "SET NAMES 'UTF8'"}}},
		{`SET myapp.user_id = '42'`, []Item{{Op: OpSet, Name: "myapp.user_id", Text: `SET myapp.user_id = '42'`}}},
		{`SET "MyApp"."Tenant" TO 7`, []Item{{Op: OpSet, Name: "myapp.tenant", Text: `SET "MyApp"."Tenant" TO 7`}}},
		{"SET ROLE admin", []Item{{Op: OpSet, Name: "role", Text: "SET ROLE admin"}}},
		{"SET x y", []Item{{Op: OpUnmovable, Name: ReasonUncertainSQL}}},
		{"RESET search_path", []Item{{Op: OpReset, Name: "search_path"}}},
		{"RESET TIME ZONE", []Item{{Op: OpReset, Name: "timezone"}}},
		{"RESET ALL", []Item{{Op: OpResetAll}}},
		{"LISTEN Jobs; LISTEN \"Mixed Case\"", []Item{{Op: OpListen, Name: "jobs"}, {Op: OpListen, Name: "Mixed Case"}}},
		{"UNLISTEN *", []Item{{Op: OpUnlistenAll}}},
		{"UNLISTEN jobs", []Item{{Op: OpUnlisten, Name: "jobs"}}},
		{"PREPARE q (int) AS SELECT $1", []Item{{Op: OpPrepare, Name: "q", Text: "PREPARE q (int) AS SELECT $1"}}},
		{"DEALLOCATE PREPARE q", []Item{{Op: OpDeallocate, Name: "q"}}},
		{"DEALLOCATE ALL", []Item{{Op: OpDeallocateAll}}},
		{"DISCARD ALL", []Item{{Op: OpDiscardAll}}},
		{"EXECUTE q(1)", []Item{{Op: OpExecute, Name: "q"}}},
		// Names read from the scanner's own tokens: quoting, comments and literals as PostgreSQL reads them.
		{`LISTEN "a""b"`, []Item{{Op: OpListen, Name: `a"b`}}},
		{`DEALLOCATE /* it's */ "Q"`, []Item{{Op: OpDeallocate, Name: "Q"}}},
		{`SET x.y = E'it\'s'`, []Item{{Op: OpSet, Name: "x.y", Text: `SET x.y = E'it\'s'`}}},
		{"SET x.y=$$a;b$$", []Item{{Op: OpSet, Name: "x.y", Text: "SET x.y=$$a;b$$"}}},
		{`UNLISTEN "*"`, []Item{{Op: OpUnlisten, Name: "*"}}},
		{"BEGIN; SET x.y = 1; SAVEPOINT s1; RESET x.y; ROLLBACK TO SAVEPOINT s1; RELEASE s1; COMMIT",
			[]Item{{Op: OpBegin}, {Op: OpSet, Name: "x.y", Text: "SET x.y = 1"}, {Op: OpSavepoint, Name: "s1"},
				{Op: OpReset, Name: "x.y"}, {Op: OpRollbackTo, Name: "s1"}, {Op: OpRelease, Name: "s1"}, {Op: OpCommit}}},
		{"COMMIT AND CHAIN; ROLLBACK AND CHAIN", []Item{{Op: OpCommitChain}, {Op: OpRollbackChain}}},
		{"CREATE TEMP TABLE t (a int)", []Item{{Op: OpUnmovable, Name: ReasonTempObject}}},
		{"SET x.y = 'unterminated", []Item{{Op: OpSet, Name: "x.y", Text: "SET x.y = 'unterminated"}, {Op: OpUnmovable, Name: ReasonUncertainSQL}}},
	}
	for _, tt := range tests {
		t.Run(tt.sql, func(t *testing.T) {
			if got := StateItems([]byte(tt.sql), false); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("StateItems(%q)\n got %+v\nwant %+v", tt.sql, got, tt.want)
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
		whole := Classify([]byte(sql), backslash)
		c := int(cut % uint(len(sql)+1))
		var sc Scanner
		sc.Reset(backslash)
		sc.Feed([]byte(sql[:c]))
		sc.Feed([]byte(sql[c:]))
		if split := sc.Finish(); split != whole {
			t.Fatalf("split at %d: %+v, whole: %+v", c, split, whole)
		}
		items := StateItems([]byte(sql), backslash)
		if whole.Effects && len(items) == 0 {
			t.Fatalf("summary says effects, but no items: %+v", whole)
		}
	})
}

func BenchmarkClassifySQL(b *testing.B) {
	sql := []byte("SELECT abalance FROM pgbench_accounts WHERE aid = $1")
	b.ReportAllocs()
	b.SetBytes(int64(len(sql)))
	for b.Loop() {
		if s := Classify(sql, false); s.first != kindRead {
			b.Fatal(s)
		}
	}
}
