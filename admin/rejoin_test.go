package admin

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pgquorum/pgquorum/consensus/clusterstate"
	"github.com/pgquorum/pgquorum/health"
)

var since = time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)

// streamingProbes are fresh probes of pg2 (primary) and pg1 (rejoined, streaming from it).
func streamingProbes() map[string]health.Probe {
	return map[string]health.Probe{
		"pg2": {Node: "pg2", At: since.Add(time.Second), Reachable: true, Timeline: 2,
			Replication: []health.Replica{{ApplicationName: "pg1", State: "streaming"}, {ApplicationName: "pg3", State: "streaming"}}},
		"pg1": {Node: "pg1", At: since.Add(time.Second), Reachable: true, InRecovery: true, Timeline: 2,
			WalReceiver: &health.WalReceiver{Status: "streaming", SenderHost: "127.0.0.1", SenderPort: 5433}},
	}
}

func TestStreamingEvidence(t *testing.T) {
	tests := []struct {
		name   string
		change func(p map[string]health.Probe)
		want   string // substring of the reason; "" = evidence holds
	}{
		{"streaming", func(map[string]health.Probe) {}, ""},
		{"no WAL receiver details (role lacks pg_read_all_stats)", func(p map[string]health.Probe) {
			n := p["pg1"]
			n.WalReceiver = nil
			p["pg1"] = n
		}, ""},
		{"stale primary probe", func(p map[string]health.Probe) {
			n := p["pg2"]
			n.At = since.Add(-time.Second)
			p["pg2"] = n
		}, "fresh probe of the primary"},
		{"stale node probe", func(p map[string]health.Probe) { delete(p, "pg1") }, "fresh probe of pg1"},
		{"primary unreachable", func(p map[string]health.Probe) {
			n := p["pg2"]
			n.Reachable, n.Err = false, "connection refused"
			p["pg2"] = n
		}, "connection refused"},
		{"walsender catching up", func(p map[string]health.Probe) {
			n := p["pg2"]
			n.Replication = []health.Replica{{ApplicationName: "pg1", State: "catchup"}}
			p["pg2"] = n
		}, "(catchup)"},
		{"no walsender", func(p map[string]health.Probe) {
			n := p["pg2"]
			n.Replication = nil
			p["pg2"] = n
		}, "(absent)"},
		{"node is a primary", func(p map[string]health.Probe) {
			n := p["pg1"]
			n.InRecovery = false
			p["pg1"] = n
		}, "not in recovery"},
		{"other timeline", func(p map[string]health.Probe) {
			n := p["pg1"]
			n.Timeline = 1
			p["pg1"] = n
		}, "timeline 1"},
		{"streams from elsewhere", func(p map[string]health.Probe) {
			n := p["pg1"]
			n.WalReceiver = &health.WalReceiver{Status: "streaming", SenderHost: "127.0.0.1", SenderPort: 5434}
			p["pg1"] = n
		}, "streams from 127.0.0.1:5434"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			probes := streamingProbes()
			tt.change(probes)
			got := streamingEvidence(probes, "pg1", "pg2", "127.0.0.1:5433", since)
			if (tt.want == "") != (got == "") || !strings.Contains(got, tt.want) {
				t.Fatalf("streamingEvidence = %q, want %q", got, tt.want)
			}
		})
	}
}

type probeView struct{ probes map[string]health.Probe }

func (f probeView) Latest() map[string]health.Probe { return f.probes }

// unfenceRaft applies proposals to its own State; it stands in for Raft and the state machine.
type unfenceRaft struct {
	mu sync.Mutex
	st clusterstate.State
}

func (f *unfenceRaft) Propose(_ context.Context, data []byte) ([]byte, error) {
	cmd, err := clusterstate.Decode(data)
	if err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	next, res := clusterstate.Apply(f.st, cmd)
	f.st = next
	return json.Marshal(res)
}

func (f *unfenceRaft) State() clusterstate.State {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.st
}

// fencedState is the state after pg1 failed over to pg2: pg1 is fenced.
func fencedState(t *testing.T) clusterstate.State {
	t.Helper()
	st := clusterstate.State{
		Epoch:   2,
		Primary: "pg2",
		Nodes:   []clusterstate.NodeState{{Name: "pg1"}, {Name: "pg2"}, {Name: "pg3"}},
		Fenced:  []string{"pg1"},
	}
	if err := st.Validate(); err != nil {
		t.Fatalf("test state: %v", err)
	}
	return st
}

func TestRejoinEndpoint(t *testing.T) {
	st := fencedState(t)
	backends := []Backend{{Name: "pg1", Address: "127.0.0.1:5432"}, {Name: "pg2", Address: "127.0.0.1:5433"}, {Name: "pg3", Address: "127.0.0.1:5434"}}
	freshProbes := func() map[string]health.Probe {
		p := streamingProbes()
		for name, probe := range p {
			probe.At = time.Now().Add(time.Hour) // taken "after" the request arrives
			p[name] = probe
		}
		return p
	}
	post := func(t *testing.T, s *Server, handler http.HandlerFunc, node string, timeout time.Duration) (int, string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		mux := http.NewServeMux()
		mux.HandleFunc("POST /rejoin/{node}", s.mutating(handler))
		req := httptest.NewRequestWithContext(ctx, http.MethodPost, "/rejoin/"+node, nil)
		req.Header.Set("Authorization", "Bearer tok")
		req.Header.Set("Content-Type", "application/json")
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, req)
		return rec.Code, rec.Body.String()
	}

	t.Run("unfences a node seen streaming", func(t *testing.T) {
		raft := &unfenceRaft{st: st}
		s := &Server{Backends: backends, State: raft, Token: "tok"}
		code, body := post(t, s, s.rejoin(probeView{freshProbes()}, raft), "pg1", 5*time.Second)
		if code != http.StatusOK || !strings.Contains(body, `"unfenced": true`) {
			t.Fatalf("got %d %s", code, body)
		}
		if raft.State().IsFenced("pg1") {
			t.Fatal("pg1 is still fenced")
		}
		// Again: nothing to do.
		code, body = post(t, s, s.rejoin(probeView{freshProbes()}, raft), "pg1", 5*time.Second)
		if code != http.StatusOK || !strings.Contains(body, `"unfenced": false`) {
			t.Fatalf("second call: got %d %s", code, body)
		}
	})
	t.Run("refuses without fresh evidence", func(t *testing.T) {
		raft := &unfenceRaft{st: st}
		s := &Server{Backends: backends, State: raft, Token: "tok"}
		// Probes taken before the request: never fresh enough.
		code, body := post(t, s, s.rejoin(probeView{streamingProbes()}, raft), "pg1", 300*time.Millisecond)
		if code != http.StatusConflict || !strings.Contains(body, "fresh probe") {
			t.Fatalf("got %d %s", code, body)
		}
		if !raft.State().IsFenced("pg1") {
			t.Fatal("pg1 was unfenced without evidence")
		}
	})
	t.Run("refuses a node that does not stream", func(t *testing.T) {
		raft := &unfenceRaft{st: st}
		s := &Server{Backends: backends, State: raft, Token: "tok"}
		probes := freshProbes()
		p := probes["pg2"]
		p.Replication = nil
		probes["pg2"] = p
		code, body := post(t, s, s.rejoin(probeView{probes}, raft), "pg1", 300*time.Millisecond)
		if code != http.StatusConflict || !strings.Contains(body, "no streaming walsender for pg1") || !raft.State().IsFenced("pg1") {
			t.Fatalf("got %d %s", code, body)
		}
	})
	t.Run("needs the token", func(t *testing.T) {
		raft := &unfenceRaft{st: st}
		s := &Server{Backends: backends, State: raft, Token: "other"}
		code, _ := post(t, s, s.rejoin(probeView{freshProbes()}, raft), "pg1", time.Second)
		if code != http.StatusUnauthorized || !raft.State().IsFenced("pg1") {
			t.Fatalf("got %d", code)
		}
	})
	t.Run("check only: checks the token and the node, changes nothing", func(t *testing.T) {
		raft := &unfenceRaft{st: st}
		handler := func(s *Server, body string) (int, string) {
			mux := http.NewServeMux()
			mux.HandleFunc("POST /rejoin/{node}", s.mutating(s.rejoin(probeView{}, raft)))
			req := httptest.NewRequest(http.MethodPost, "/rejoin/pg1", strings.NewReader(body))
			req.Header.Set("Authorization", "Bearer tok")
			req.Header.Set("Content-Type", "application/json")
			rec := httptest.NewRecorder()
			mux.ServeHTTP(rec, req)
			return rec.Code, rec.Body.String()
		}
		if code, body := handler(&Server{Backends: backends, State: raft, Token: "tok"}, `{"check_only": true}`); code != http.StatusOK ||
			!strings.Contains(body, "check only") || !strings.Contains(body, "fenced: true") {
			t.Fatalf("good token: got %d %s", code, body)
		}
		if code, _ := handler(&Server{Backends: backends, State: raft, Token: "other"}, `{"check_only": true}`); code != http.StatusUnauthorized {
			t.Fatalf("bad token: got %d, want 401", code)
		}
		if code, body := handler(&Server{Backends: backends, State: raft, Token: "tok"}, `check`); code != http.StatusBadRequest {
			t.Fatalf("a body that is not JSON: got %d %s", code, body)
		}
		if !raft.State().IsFenced("pg1") {
			t.Fatal("a check unfenced pg1")
		}
	})
	for _, tc := range []struct {
		name, node string
		health     HealthView
		want       int
	}{
		{"unknown node", "pg9", probeView{}, http.StatusNotFound},
		{"the primary", "pg2", probeView{}, http.StatusBadRequest},
		{"not fenced", "pg3", probeView{}, http.StatusOK},
		{"no health view", "pg1", nil, http.StatusServiceUnavailable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			raft := &unfenceRaft{st: st}
			s := &Server{Backends: backends, State: raft, Token: "tok"}
			code, body := post(t, s, s.rejoin(tc.health, raft), tc.node, time.Second)
			if code != tc.want {
				t.Fatalf("got %d %s, want %d", code, body, tc.want)
			}
		})
	}
}
