package proxy

import "testing"

func TestDecideTermination(t *testing.T) {
	for _, tc := range []struct {
		name string
		f    terminationFacts
		want terminationVerdict
	}{
		{"pg_terminate_backend on the healthy agreed primary", terminationFacts{routeNamesBackend: true, serverAccepts: true}, terminationDeliver},
		{"the agreed primary shuts down or recovers from a crash", terminationFacts{routeNamesBackend: true}, terminationMove},
		{"a switchover ends the old primary's sessions", terminationFacts{serverAccepts: true}, terminationMove},
		{"failover in progress, server gone", terminationFacts{}, terminationMove},
	} {
		if got := decideTermination(tc.f); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}
