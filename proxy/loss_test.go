package proxy

import (
	"bytes"
	"github.com/pgquorum/pgquorum/proxy/sqlclass"
	"strings"
	"testing"
)

// TestDecideLoss checks SPEC §5's table as decideLoss implements it.
func TestDecideLoss(t *testing.T) {
	tests := []struct {
		name    string
		facts   lossFacts
		end     bool
		code    string // the ERROR told now ("" = none); FATAL code when end
		status  byte   // ReadyForQuery sent now (0 = none)
		mode    localMode
		retry   bool
		unknown bool
	}{
		{name: "idle: nothing to tell, moved later",
			facts: lossFacts{atBoundary: true, txStatus: 'I'}, mode: modeIdle},
		{name: "idle and listening: moved at once",
			facts: lossFacts{atBoundary: true, txStatus: 'I', listens: true}, mode: modeIdle},
		{name: "idle in a transaction: told at the next request",
			facts: lossFacts{atBoundary: true, txStatus: 'T'}, mode: modeTxLost},
		{name: "idle in a failed transaction",
			facts: lossFacts{atBoundary: true, txStatus: 'E'}, mode: modeTxAborted},
		{name: "autocommit request in flight: 08007",
			facts: lossFacts{atBoundary: true, txStatus: 'I', inFlight: 1, inflight: inflightFacts{writes: true}},
			code:  codeTransactionResolutionUnknown, status: 'I', mode: modeIdle, unknown: true},
		{name: "even a read in autocommit: 08007 (its outcome is unknown)",
			facts: lossFacts{atBoundary: true, txStatus: 'I', inFlight: 1},
			code:  codeTransactionResolutionUnknown, status: 'I', mode: modeIdle, unknown: true},
		{name: "COMMIT in flight: 08007",
			facts: lossFacts{atBoundary: true, txStatus: 'T', inFlight: 1, inflight: inflightFacts{mayCommit: true}},
			code:  codeTransactionResolutionUnknown, status: 'I', mode: modeIdle, unknown: true},
		{name: "COMMIT in flight whose probe was not answered: 08007",
			facts: lossFacts{atBoundary: true, txStatus: 'T', inFlight: 1, inflight: inflightFacts{mayCommit: true}, commit: commitProbe{sent: true}},
			code:  codeTransactionResolutionUnknown, status: 'I', mode: modeIdle, unknown: true},
		{name: "COMMIT in flight of a transaction that wrote nothing: committed",
			facts:  lossFacts{atBoundary: true, txStatus: 'T', inFlight: 1, inflight: inflightFacts{mayCommit: true}, commit: commitProbe{sent: true, answered: true}},
			status: 'I', mode: modeIdle},
		{name: "COMMIT in flight of a transaction with an id: its outcome is learned",
			facts: lossFacts{atBoundary: true, txStatus: 'T', inFlight: 1, inflight: inflightFacts{mayCommit: true},
				commit: commitProbe{sent: true, answered: true, assigned: true, xid: 900}},
			mode: modeResolving},
		{name: "COMMIT in flight behind a probe the backend ended before answering: not committed (40001)",
			facts: lossFacts{atBoundary: true, txStatus: 'T', inFlight: 1, inflight: inflightFacts{mayCommit: true}, commit: commitProbe{sent: true, endedBefore: true}},
			code:  codeSerializationFailure, status: 'I', mode: modeIdle},
		{name: "COMMIT in flight whose probe failed: 08007",
			facts: lossFacts{atBoundary: true, txStatus: 'T', inFlight: 1, inflight: inflightFacts{mayCommit: true},
				commit: commitProbe{sent: true, answered: true, failed: true}},
			code: codeTransactionResolutionUnknown, status: 'I', mode: modeIdle, unknown: true},
		{name: "statement of a transaction in flight: 40001",
			facts: lossFacts{atBoundary: true, txStatus: 'T', inFlight: 1, inflight: inflightFacts{writes: true}},
			code:  codeSerializationFailure, status: 'E', mode: modeTxAborted},
		{name: "ROLLBACK in flight: it succeeded",
			facts:  lossFacts{atBoundary: true, txStatus: 'T', inFlight: 1, inflight: inflightFacts{rollbackOnly: true}},
			status: 'I', mode: modeIdle},
		{name: "extended batch without its Sync in a transaction: 40001, then discard to the Sync",
			facts: lossFacts{atBoundary: true, txStatus: 'T', extendedOpen: true},
			code:  codeSerializationFailure, mode: modeDiscard},
		{name: "extended batch with a COMMIT without its Sync: 08007",
			facts: lossFacts{atBoundary: true, txStatus: 'T', extendedOpen: true, inflight: inflightFacts{mayCommit: true}},
			code:  codeTransactionResolutionUnknown, mode: modeDiscard, unknown: true},
		{name: "rejected before execution by a demoted primary: retried",
			facts: lossFacts{atBoundary: true, txStatus: 'I', inFlight: 1, retry: true}, mode: modeIdle, retry: true},
		{name: "unmovable: 08006 and close",
			facts: lossFacts{atBoundary: true, txStatus: 'I', unmovable: sqlclass.ReasonTempObject}, end: true, code: codeConnectionFailure},
		{name: "unmovable with a request in flight: 08006 and close",
			facts: lossFacts{atBoundary: true, txStatus: 'I', inFlight: 1, unmovable: sqlclass.ReasonAdvisoryLock}, end: true, code: codeConnectionFailure},
		{name: "several requests in flight across a transaction boundary: 08006 and close",
			facts: lossFacts{atBoundary: true, txStatus: 'I', inFlight: 2, inflight: inflightFacts{txControl: true}}, end: true, code: codeConnectionFailure},
		{name: "several autocommit requests in flight: 08007 each",
			facts: lossFacts{atBoundary: true, txStatus: 'I', inFlight: 3, inflight: inflightFacts{writes: true}},
			code:  codeTransactionResolutionUnknown, status: 'I', mode: modeIdle, unknown: true},
		{name: "several requests in flight inside the transaction: 40001, then 25P02 each",
			facts: lossFacts{atBoundary: true, txStatus: 'T', inFlight: 3, inflight: inflightFacts{writes: true}},
			code:  codeSerializationFailure, status: 'E', mode: modeTxAborted},
		{name: "in the middle of a streamed message: closed without a message",
			facts: lossFacts{atBoundary: false, txStatus: 'I', inFlight: 1}, end: true},
		{name: "session closing anyway",
			facts: lossFacts{closing: true, atBoundary: true, txStatus: 'I'}, end: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := decideLoss(tt.facts)
			if v.end != tt.end || v.retry != tt.retry || v.maybeCommit != tt.unknown {
				t.Fatalf("verdict %+v: end %v retry %v maybeCommit %v; want %v %v %v", v, v.end, v.retry, v.maybeCommit, tt.end, tt.retry, tt.unknown)
			}
			if tt.end {
				if got := codeOrEmpty(v.reason); got != tt.code {
					t.Fatalf("closing reason %q, want %q", got, tt.code)
				}
				if v.reason != nil && v.reason.Severity != severityFatal {
					t.Fatalf("closing reason has severity %s", v.reason.Severity)
				}
				return
			}
			if got := codeOrEmpty(v.message); got != tt.code {
				t.Fatalf("error told now: %q, want %q", got, tt.code)
			}
			if v.message != nil && v.message.Severity != severityError {
				t.Fatalf("the session goes on, but the error is %s", v.message.Severity)
			}
			if v.status != tt.status || v.mode != tt.mode {
				t.Fatalf("status %q mode %d, want %q %d", v.status, v.mode, tt.status, tt.mode)
			}
			if tt.facts.listens != v.eager {
				t.Fatalf("eager = %v for listens = %v", v.eager, tt.facts.listens)
			}
			out := v.clientMessages(nil)
			if tt.status != 0 && !bytes.HasSuffix(out, appendReadyForQuery(nil, tt.status)) {
				t.Fatalf("messages %q do not end with ReadyForQuery(%c)", out, tt.status)
			}
		})
	}
	if m := abortedByFailover("pg1").Message; !strings.Contains(m, "not committed") || !strings.Contains(m, "retry") {
		t.Errorf("40001 message %q must say the transaction was not committed and may be retried", m)
	}
}

func codeOrEmpty(e *clientError) string {
	if e == nil {
		return ""
	}
	return e.Code
}

func TestStatementRegistry(t *testing.T) {
	var g statementRegistry
	parse := func(name, sql string) []byte {
		body := append(append(append([]byte(name), 0), sql...), 0, 0, 0)
		return appendMessage(nil, 'P', body)
	}
	a, _ := g.parsed("a", parse("a", "SELECT 1"), sqlclass.Summary{})
	if a == nil || g.needsPrepare("a") != nil {
		t.Fatal("a new statement must be kept, and needs no re-prepare on its own backend")
	}
	if dup, _ := g.parsed("a", parse("a", "SELECT 2"), sqlclass.Summary{}); dup != nil {
		t.Fatal("a second Parse of an existing name replaced it (PostgreSQL rejects it and keeps the first)")
	}
	g.confirm("a", a)
	b, _ := g.parsed("b", parse("b", "SELECT syntax error"), sqlclass.Summary{})
	g.failed("b", b) // its ParseComplete never came
	if g.lookup("b") != nil {
		t.Fatal("a Parse that failed is kept")
	}
	c, _ := g.parsed("c", parse("c", "SELECT 3"), sqlclass.Summary{}) // in flight when the backend is lost
	_ = c
	g.moved()
	if g.lookup("c") != nil {
		t.Fatal("a statement whose Parse was lost with the backend is kept")
	}
	entry := g.needsPrepare("a")
	if entry == nil || !bytes.Equal(entry.parse, parse("a", "SELECT 1")) {
		t.Fatal("after a move, the first use of a prepared statement must re-send its original Parse")
	}
	if g.needsPrepare("a") != nil {
		t.Fatal("a statement re-prepared once is re-prepared again")
	}
	g.failed("a", entry) // the re-prepare failed: try again at the next use
	if g.needsPrepare("a") == nil {
		t.Fatal("a failed re-prepare is not retried")
	}
	g.remove("a")
	if g.lookup("a") != nil || g.lazy != 0 || g.bytes != 0 {
		t.Fatalf("after Close: %+v", g)
	}
	big := parse("big", strings.Repeat("x", maxStatementBytes))
	if e, tooLarge := g.parsed("big", big, sqlclass.Summary{}); e != nil || !tooLarge {
		t.Fatal("the registry is not bounded")
	}
}

func TestLargeStatementsAreScannedAsTheyPass(t *testing.T) {
	tests := []struct {
		name      string
		sql       string
		unmovable bool
	}{
		{"a large insert", "INSERT INTO t VALUES " + strings.Repeat("(1, 'some text'), ", 10000) + "(2, 'x')", false},
		{"a large SET", "SET myapp.blob = '" + strings.Repeat("x", 100000) + "'", true},
		{"a large query that ends with a temporary table", "SELECT '" + strings.Repeat("x", 100000) + "'; CREATE TEMP TABLE t (a int)", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newTestServer(t, &fakeRouter{})
			client, backend, sess := relayedSession(t, srv)
			query := msg('Q', append([]byte(tt.sql), 0))
			go func() {
				for rest := query; len(rest) > 0; {
					n := min(len(rest), 7000)
					client.Write(rest[:n])
					rest = rest[n:]
				}
			}()
			if got := readN(t, backend, len(query)); !bytes.Equal(got, query) {
				t.Fatal("the backend got different bytes")
			}
			sess.mu.Lock()
			unmovable := sess.state != nil && !sess.state.movable()
			sess.mu.Unlock()
			if unmovable != tt.unmovable {
				t.Fatalf("unmovable = %v (%+v), want %v", unmovable, sess.state, tt.unmovable)
			}
		})
	}
}

func TestDecideCommitQuestion(t *testing.T) {
	old := Target{Name: "pg1", Address: "127.0.0.1:1", Epoch: 4}
	promoted := Target{Name: "pg2", Address: "127.0.0.1:2", Epoch: 5, XidHorizon: 1000}
	for _, tt := range []struct {
		name string
		now  Target
		xid  uint64
		want commitQuestion
	}{
		{"the same server (connection lost, or failover aborted): ask it", Target{Name: "pg1", Address: "127.0.0.1:1", Epoch: 6}, 5000, askServer},
		{"the next epoch's primary, an id of the old timeline: ask it", promoted, 999, askServer},
		{"the next epoch's primary, an id it never committed: not committed", promoted, 1000, answerNotCommit},
		{"the next epoch's primary without a horizon: unknown", Target{Name: "pg2", Address: "127.0.0.1:2", Epoch: 5}, 10, askNothing},
		{"a later epoch's primary (several failovers): unknown", Target{Name: "pg3", Address: "127.0.0.1:3", Epoch: 7, XidHorizon: 2000}, 10, askNothing},
	} {
		if got := decideCommitQuestion(old, tt.now, tt.xid); got != tt.want {
			t.Errorf("%s: %d, want %d", tt.name, got, tt.want)
		}
	}
	if got := decideCommitQuestion(Target{Name: "pg1", Address: "a"}, Target{Name: "pg2", Address: "b", Epoch: 1, XidHorizon: 9}, 1); got != askNothing {
		t.Errorf("a session routed before consensus (epoch 0): %d, want askNothing", got)
	}
}

func TestParseProbeRow(t *testing.T) {
	row := func(cols ...[]byte) []byte {
		body := []byte{0, byte(len(cols))}
		for _, c := range cols {
			if c == nil {
				body = append(body, 0xff, 0xff, 0xff, 0xff)
				continue
			}
			body = append(body, 0, 0, 0, byte(len(c)))
			body = append(body, c...)
		}
		return msg('D', body)
	}
	if assigned, xid, failed := parseProbeRow(row([]byte("4294967301"))); !assigned || xid != 4294967301 || failed {
		t.Errorf("an xid8 past 2^32: %v %d %v", assigned, xid, failed)
	}
	if assigned, _, failed := parseProbeRow(row(nil)); assigned || failed {
		t.Errorf("NULL: assigned %v failed %v", assigned, failed)
	}
	for _, bad := range [][]byte{row(), row([]byte("x1")), row([]byte("1"), []byte("2")), msg('D', []byte{0})} {
		if _, _, failed := parseProbeRow(bad); !failed {
			t.Errorf("row %x accepted", bad)
		}
	}
}

func TestPipelinedRequestsAnsweredOneByOne(t *testing.T) {
	v := decideLoss(lossFacts{atBoundary: true, txStatus: 'T', inFlight: 3, inflight: inflightFacts{writes: true}, backend: "pg1"})
	out := v.clientMessages(nil)
	var codes []string
	var statuses []byte
	for len(out) > 0 {
		size := 1 + int(uint32(out[1])<<24|uint32(out[2])<<16|uint32(out[3])<<8|uint32(out[4]))
		m := out[:size]
		out = out[size:]
		switch m[0] {
		case 'E':
			code, _ := errorCode(m)
			codes = append(codes, string(code))
		case 'Z':
			statuses = append(statuses, m[5])
		}
	}
	if strings.Join(codes, ",") != "40001,25P02,25P02" || string(statuses) != "EEE" {
		t.Fatalf("answers %v with statuses %q, want 40001,25P02,25P02 each followed by ReadyForQuery(E)", codes, statuses)
	}
}
