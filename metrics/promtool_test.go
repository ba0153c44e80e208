package metrics

import (
	"bytes"
	"io"
	"net/http/httptest"
	"os/exec"
	"testing"

	"github.com/pgquorum/pgquorum/testenv"
)

// requirePromtool returns the path of promtool (Debian package prometheus,
// installed by .ci/run). Without it the test is skipped, or fails when
// CI=true.
func requirePromtool(t *testing.T) string {
	t.Helper()
	path, err := exec.LookPath("promtool")
	if err == nil {
		return path
	}
	testenv.Missing(t, "promtool not found (apt-get install prometheus): %v", err)
	return ""
}

// TestPromtoolChecksMetrics runs `promtool check metrics` (Prometheus's own
// linter: names, units, help, types) on what a fully populated node serves,
// runtime collectors included, after every kind of event.
func TestPromtoolChecksMetrics(t *testing.T) {
	promtool := requirePromtool(t)
	m := New(Options{ClusterName: "demo", NodeID: 1, Version: "test", Backends: []string{"pg1", "pg2"}, MaxHeld: 100})
	if err := m.AddSources(healthySources()); err != nil {
		t.Fatal(err)
	}
	m.ClientError("57P03")
	m.HoldStarted()
	m.BackendConnected("pg1", 0)
	m.QueryFinished(0)
	srv := httptest.NewServer(m.Handler())
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = bytes.NewReader(body)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("promtool check metrics: %v\n%s", err, out)
	}
}

// TestPromtoolChecksRules runs `promtool check rules` on the example alerting
// rules (PromQL syntax, templates).
func TestPromtoolChecksRules(t *testing.T) {
	promtool := requirePromtool(t)
	out, err := exec.Command(promtool, "check", "rules", "../configs/prometheus/rules.yml").CombinedOutput()
	if err != nil {
		t.Fatalf("promtool check rules: %v\n%s", err, out)
	}
}
