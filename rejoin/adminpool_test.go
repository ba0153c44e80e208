package rejoin

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"

	"github.com/pgquorum/pgquorum/admin"
)

// fakeProxy answers GET /cluster with view and POST /rejoin/{node} when the
// bearer token is token.
func fakeProxy(t *testing.T, view admin.ClusterView, token string) *httptest.Server {
	t.Helper()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /cluster", func(w http.ResponseWriter, _ *http.Request) { _ = json.NewEncoder(w).Encode(view) })
	mux.HandleFunc("POST /rejoin/{node}", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+token {
			w.WriteHeader(http.StatusUnauthorized)
			_ = json.NewEncoder(w).Encode(map[string]string{"error": "needs a valid bearer token"})
			return
		}
		var req admin.RejoinRequest
		_ = json.NewDecoder(r.Body).Decode(&req)
		_ = json.NewEncoder(w).Encode(admin.RejoinResult{Node: r.PathValue("node"), Unfenced: !req.CheckOnly})
	})
	s := httptest.NewServer(mux)
	t.Cleanup(s.Close)
	return s
}

func TestAdminPoolFailsOverAndTrustsOnlyALeader(t *testing.T) {
	ctx := context.Background()
	down := httptest.NewServer(http.NotFoundHandler())
	down.Close()
	cutOff := fakeProxy(t, admin.ClusterView{NodeID: 2, Epoch: 3, Primary: "pg1"}, "tok")
	good := fakeProxy(t, admin.ClusterView{NodeID: 3, Epoch: 4, Primary: "pg2", Raft: admin.RaftView{Leader: 1}}, "tok")

	p := newAdminPool(Options{Admin: []string{down.URL, cutOff.URL, good.URL}, Token: "tok"})
	view, trusted, err := p.cluster(ctx)
	if err != nil || !trusted || view.NodeID != 3 {
		t.Fatalf("cluster = node %d, trusted %v, %v; want node 3 (the one that knows a leader)", view.NodeID, trusted, err)
	}
	if p.current != 2 {
		t.Fatalf("current = %d, want 2: the next call starts with the node that answered", p.current)
	}
	res, err := p.rejoin(ctx, "pg1", true)
	if err != nil || res.Unfenced {
		t.Fatalf("check only: %+v, %v", res, err)
	}

	p = newAdminPool(Options{Admin: []string{down.URL, cutOff.URL}})
	view, trusted, err = p.cluster(ctx)
	if err != nil || trusted || view.NodeID != 2 {
		t.Fatalf("without a leader anywhere: node %d, trusted %v, %v; want node 2, untrusted", view.NodeID, trusted, err)
	}
	if c := clusterFactsOf(view, trusted, "pg1"); c.Known {
		t.Fatal("an untrusted view must not count as the agreed state")
	}

	p = newAdminPool(Options{Admin: []string{down.URL}})
	if _, _, err := p.cluster(ctx); !errors.Is(err, ErrAdmin) {
		t.Fatalf("nobody answers: %v, want ErrAdmin", err)
	}
}

func TestAdminPoolReadsTheTokenFileEachTime(t *testing.T) {
	ctx := context.Background()
	s := fakeProxy(t, admin.ClusterView{Raft: admin.RaftView{Leader: 1}}, "new")
	file := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(file, []byte("old\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p := newAdminPool(Options{Admin: []string{s.URL}, TokenFile: file})
	if _, err := p.rejoin(ctx, "pg1", true); !isUnauthorized(err) {
		t.Fatalf("with the old token: %v, want 401", err)
	}
	if err := os.WriteFile(file, []byte("new\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := p.rejoin(ctx, "pg1", true); err != nil {
		t.Fatalf("after the token was rotated: %v", err)
	}
}
