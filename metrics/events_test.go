package metrics

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestEventsAreCounted drives every event method and checks the exposition.
func TestEventsAreCounted(t *testing.T) {
	m := newTestMetrics(t)

	m.AddQueries(3)
	m.AddQueries(2)
	m.AddQueries(0)  // ignored
	m.AddQueries(-4) // ignored: a counter never goes down
	m.AddTransactions(2)
	m.AddTransactions(-1)

	m.ClientError("57P03")
	m.ClientError("57P03")
	m.ClientError("40001")
	m.ClientError("not-a-code")

	// Three holds begin; two end, one is still waiting.
	m.HoldStarted()
	m.HoldStarted()
	m.HoldStarted()
	m.HoldFinished(250*time.Millisecond, HoldRouted)
	m.HoldFinished(31*time.Second, HoldTimedOut)

	m.SessionMoved()
	m.SessionMoved()

	m.AdminRefused("unauthorized")
	m.AdminRefused("unauthorized")
	m.AdminRefused("unsupported_media_type")

	m.LearnerRemoved()

	m.BackendConnected("other", 2*time.Millisecond)
	m.BackendConnected("pg7", 3*time.Millisecond) // not configured: "other"
	m.BackendSessionClosed("other")
	m.BackendConnectFailed("other", ConnectTooMany)
	m.BackendConnectFailed("other", ConnectFailure("gremlins")) // bounded: other
	m.QueryFinished(300 * time.Microsecond)
	m.AuthFailed(AuthBadPassword)
	m.AuthFailed(AuthFailure("cosmic ray")) // bounded: other

	m.ObserveFailoverPhase(PhaseDetect, 1500*time.Millisecond)
	m.ObserveFailoverPhase(PhaseFreeze, 40*time.Millisecond)
	m.ObserveFailoverPhase(PhaseFreeze, 60*time.Millisecond)
	m.ObserveFailoverPhase(PhasePromote, -time.Second) // a clock step: observed as 0
	m.ObserveFailoverPhase("teleport", time.Second)    // unknown phase: ignored

	m.AsyncCommitSession()
	m.AsyncCommitSession()
	m.AsyncCommitRefused()

	families := pgquorumFamilies(scrape(t, m))
	want := parseLines(infoLines + `
pgquorum_proxy_async_commit_sessions_total 2
pgquorum_proxy_async_commit_refused_total 1
pgquorum_proxy_queries_total 5
pgquorum_proxy_transactions_total 2
pgquorum_client_errors_total{sqlstate="57P03"} 2
pgquorum_client_errors_total{sqlstate="40001"} 1
pgquorum_client_errors_total{sqlstate="invalid"} 1
pgquorum_proxy_held_requests 1
pgquorum_proxy_hold_duration_seconds_count{outcome="routed"} 1
pgquorum_proxy_hold_duration_seconds_sum{outcome="routed"} 0.25
pgquorum_proxy_hold_duration_seconds_count{outcome="timeout"} 1
pgquorum_proxy_hold_duration_seconds_sum{outcome="timeout"} 31
pgquorum_proxy_hold_duration_seconds_count{outcome="canceled"} 0
pgquorum_proxy_hold_duration_seconds_sum{outcome="canceled"} 0
pgquorum_proxy_sessions_moved_total 2
pgquorum_failover_phase_duration_seconds_count{phase="detect"} 1
pgquorum_failover_phase_duration_seconds_sum{phase="detect"} 1.5
pgquorum_failover_phase_duration_seconds_count{phase="decide"} 0
pgquorum_failover_phase_duration_seconds_sum{phase="decide"} 0
pgquorum_failover_phase_duration_seconds_count{phase="freeze"} 2
pgquorum_failover_phase_duration_seconds_sum{phase="freeze"} 0.1
pgquorum_failover_phase_duration_seconds_count{phase="promote"} 1
pgquorum_failover_phase_duration_seconds_sum{phase="promote"} 0
pgquorum_failover_phase_duration_seconds_count{phase="reroute"} 0
pgquorum_failover_phase_duration_seconds_sum{phase="reroute"} 0
pgquorum_admin_refused_requests_total{reason="unauthorized"} 2
pgquorum_admin_refused_requests_total{reason="unsupported_media_type"} 1
pgquorum_learners_removed_total 1
pgquorum_proxy_held_requests_limit 10000
pgquorum_proxy_backend_sessions{node="other"} 1
pgquorum_proxy_backend_connect_duration_seconds_count{node="other"} 2
pgquorum_proxy_backend_connect_duration_seconds_sum{node="other"} 0.005
pgquorum_proxy_backend_connect_errors_total{node="other",reason="refused"} 0
pgquorum_proxy_backend_connect_errors_total{node="other",reason="timeout"} 0
pgquorum_proxy_backend_connect_errors_total{node="other",reason="auth"} 0
pgquorum_proxy_backend_connect_errors_total{node="other",reason="not_accepting"} 0
pgquorum_proxy_backend_connect_errors_total{node="other",reason="too_many"} 1
pgquorum_proxy_backend_connect_errors_total{node="other",reason="protocol"} 0
pgquorum_proxy_backend_connect_errors_total{node="other",reason="other"} 1
pgquorum_proxy_query_duration_seconds_count 1
pgquorum_proxy_query_duration_seconds_sum 0.0003
pgquorum_proxy_auth_failures_total{reason="bad_password"} 1
pgquorum_proxy_auth_failures_total{reason="no_verifier"} 0
pgquorum_proxy_auth_failures_total{reason="timeout"} 0
pgquorum_proxy_auth_failures_total{reason="protocol"} 0
pgquorum_proxy_auth_failures_total{reason="tls_required"} 0
pgquorum_proxy_auth_failures_total{reason="lookup"} 0
pgquorum_proxy_auth_failures_total{reason="other"} 1
`)
	checkLines(t, want, sampleLines(families))

	// Buckets are cumulative and their upper bounds inclusive.
	hold := families["pgquorum_proxy_hold_duration_seconds"]
	for _, c := range []struct {
		outcome string
		le      float64
		want    int64
	}{
		{"routed", 0.1, 0},
		{"routed", 0.25, 1},
		{"routed", 60, 1},
		{"timeout", 30, 0},
		{"timeout", 60, 1},
	} {
		if got := bucketCount(hold, c.outcome, c.le); got != c.want {
			t.Errorf("hold %s bucket le=%g: %d, want %d", c.outcome, c.le, got, c.want)
		}
	}
	phases := families["pgquorum_failover_phase_duration_seconds"]
	if got := bucketCount(phases, "freeze", 0.05); got != 1 {
		t.Errorf("freeze bucket le=0.05: %d, want 1", got)
	}
	if got := bucketCount(phases, "freeze", 0.1); got != 2 {
		t.Errorf("freeze bucket le=0.1: %d, want 2", got)
	}
}

// TestUnknownHoldOutcomeKeepsGaugeBalanced: a hold that ends with an unknown
// outcome still leaves the held gauge and counts it as canceled.
func TestUnknownHoldOutcomeKeepsGaugeBalanced(t *testing.T) {
	m := newTestMetrics(t)
	m.HoldStarted()
	m.HoldFinished(time.Millisecond, HoldOutcome("lost"))
	got := sampleLines(pgquorumFamilies(scrape(t, m)))
	for _, want := range []string{
		"pgquorum_proxy_held_requests 0",
		`pgquorum_proxy_hold_duration_seconds_count{outcome="canceled"} 1`,
	} {
		if !contains(got, want) {
			t.Errorf("missing %s", want)
		}
	}
}

// TestNilMetricsIsANoOp: components run without metrics in tests.
func TestNilMetricsIsANoOp(t *testing.T) {
	var m *Metrics
	m.AddQueries(1)
	m.AddTransactions(1)
	m.ClientError("57P03")
	m.HoldStarted()
	m.HoldFinished(time.Second, HoldRouted)
	m.SessionMoved()
	m.ObserveFailoverPhase(PhaseFreeze, time.Second)
	if err := m.AddSources(healthySources()); err != nil {
		t.Errorf("AddSources on nil: %v", err)
	}
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if rec.Code != http.StatusNotFound {
		t.Errorf("nil Handler: status %d, want 404", rec.Code)
	}
}

// TestNodesHaveSeparateRegistries: two nodes in one process do not share or
// clash on metrics (no global registry).
func TestNodesHaveSeparateRegistries(t *testing.T) {
	a := New(Options{NodeID: 1})
	b := New(Options{NodeID: 2})
	if err := a.AddSources(healthySources()); err != nil {
		t.Fatal(err)
	}
	if err := b.AddSources(healthySources()); err != nil {
		t.Fatal(err)
	}
	a.AddQueries(7)
	linesA := sampleLines(pgquorumFamilies(scrape(t, a)))
	linesB := sampleLines(pgquorumFamilies(scrape(t, b)))
	if !contains(linesA, "pgquorum_proxy_queries_total 7") || !contains(linesB, "pgquorum_proxy_queries_total 0") {
		t.Errorf("queries leaked between nodes: a=%v b=%v", grep(linesA, "queries"), grep(linesB, "queries"))
	}
	if !contains(linesB, `pgquorum_node_info{cluster_name="",node_id="2"} 1`) {
		t.Errorf("node b's info: %v", grep(linesB, "node_info"))
	}
}

// TestConcurrentEventsAndScrapes runs event methods and scrapes at once (run
// with -race) and checks that no update is lost.
func TestConcurrentEventsAndScrapes(t *testing.T) {
	m := newTestMetrics(t)
	if err := m.AddSources(healthySources()); err != nil {
		t.Fatal(err)
	}
	const workers, perWorker = 4, 500
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < perWorker; i++ {
				m.AddQueries(1)
				m.ClientError("57P03")
				m.HoldStarted()
				m.HoldFinished(time.Millisecond, HoldRouted)
			}
		}()
	}
	for i := 0; i < 5; i++ {
		scrape(t, m)
	}
	wg.Wait()
	got := sampleLines(pgquorumFamilies(scrape(t, m)))
	for _, want := range []string{
		"pgquorum_proxy_queries_total 2000",
		`pgquorum_client_errors_total{sqlstate="57P03"} 2000`,
		"pgquorum_proxy_held_requests 0",
		`pgquorum_proxy_hold_duration_seconds_count{outcome="routed"} 2000`,
	} {
		if !contains(got, want) {
			t.Errorf("missing %s", want)
		}
	}
}

func contains(lines []string, want string) bool {
	for _, l := range lines {
		if l == want {
			return true
		}
	}
	return false
}

func grep(lines []string, substr string) []string {
	var out []string
	for _, l := range lines {
		if strings.Contains(l, substr) {
			out = append(out, l)
		}
	}
	return out
}
