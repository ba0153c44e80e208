package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pgquorum/pgquorum/consensus"
	"github.com/pgquorum/pgquorum/consensus/clusterstate"
	"github.com/pgquorum/pgquorum/coordinator"
	"github.com/pgquorum/pgquorum/proxy"
	"github.com/pgquorum/pgquorum/routing"
)

// fakeRaft records membership calls.
type fakeRaft struct {
	mu      sync.Mutex
	members []consensus.Member
	err     error
	learner bool
}

func (f *fakeRaft) Status() consensus.Status {
	f.mu.Lock()
	defer f.mu.Unlock()
	return consensus.Status{ID: 1, Leader: 1, Term: 3, IsLeader: !f.learner, Voter: !f.learner}
}
func (f *fakeRaft) Members() []consensus.Member {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]consensus.Member(nil), f.members...)
}
func (f *fakeRaft) AddMember(_ context.Context, id uint64, addr string, learner bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return f.err
	}
	f.members = append(f.members, consensus.Member{ID: id, Addr: addr, Voter: !learner})
	return nil
}
func (f *fakeRaft) RemoveMember(_ context.Context, id uint64) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i, m := range f.members {
		if m.ID == id {
			f.members = append(f.members[:i], f.members[i+1:]...)
		}
	}
	return f.err
}

func (f *fakeRaft) Propose(context.Context, []byte) ([]byte, error) {
	return nil, errors.New("fake raft: no proposals")
}

type fakeState struct{ st clusterstate.State }

func (f fakeState) State() clusterstate.State { return f.st }

type fakeRouting struct{ v routing.View }

func (f fakeRouting) Current() routing.View { return f.v }

type fakeOperator struct {
	switchoverTo string
	paused       *bool
	err          error
}

func (f *fakeOperator) Failover(context.Context, coordinator.FailoverRequest) (clusterstate.HistoryEntry, error) {
	return clusterstate.HistoryEntry{}, f.err
}
func (f *fakeOperator) Switchover(_ context.Context, to string) (clusterstate.HistoryEntry, error) {
	f.switchoverTo = to
	return clusterstate.HistoryEntry{Kind: clusterstate.KindSwitchover, NewPrimary: to}, f.err
}
func (f *fakeOperator) SetPaused(_ context.Context, p bool) error { f.paused = &p; return f.err }
func (f *fakeOperator) Safety() coordinator.Safety                { return coordinator.Safety{Safe: true} }

// newTestServer serves a fake cluster. An empty token means security.insecure
// (mutating calls without authentication).
func newTestServer(t *testing.T, token string, routingOK bool) (*httptest.Server, *fakeRaft, *fakeOperator) {
	t.Helper()
	raft := &fakeRaft{members: []consensus.Member{{ID: 1, Addr: "127.0.0.1:7001", Voter: true, Reachable: true}}}
	op := &fakeOperator{}
	v := routing.View{Epoch: 4, Reason: "no primary agreed at epoch 4 (failover in progress)"}
	if routingOK {
		v = routing.View{Routing: true, Epoch: 4, Target: proxy.Target{Name: "pg2", Address: "127.0.0.1:5433", Epoch: 4}}
	}
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	st := clusterstate.State{Epoch: 4, Primary: "pg2", Fenced: []string{"pg1"}, Nodes: []clusterstate.NodeState{
		{Name: "pg2", Observations: []clusterstate.Observation{{Proxy: 1, Up: true, ReceiveLSN: 5000, At: now}}},
		{Name: "pg3", Observations: []clusterstate.Observation{{Proxy: 1, Up: true, InRecovery: true, ReceiveLSN: 4000, At: now}}},
	}}
	s := &Server{
		ClusterName: "test", NodeID: 1,
		Backends: []Backend{{"pg1", "127.0.0.1:5432"}, {"pg2", "127.0.0.1:5433"}, {"pg3", "127.0.0.1:5434"}},
		Raft:     raft, State: fakeState{st}, Routing: fakeRouting{v}, Operator: op, Token: token, Insecure: token == "",
	}
	ts := httptest.NewServer(s.Handler())
	t.Cleanup(ts.Close)
	return ts, raft, op
}

// call sends a request as the pgquorum CLI does (JSON on every call that is
// not a GET).
func call(t *testing.T, method, url, token, body string) (int, string) {
	t.Helper()
	contentType := "application/json"
	if method == http.MethodGet {
		contentType = ""
	}
	return callAs(t, http.DefaultClient, method, url, token, contentType, body)
}

func callAs(t *testing.T, client *http.Client, method, url, token, contentType, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if ct := resp.Header.Get("Content-Type"); resp.StatusCode != http.StatusOK && !strings.HasPrefix(ct, "application/json") {
		t.Errorf("%s %s: error answer is %q, want JSON", method, url, ct)
	}
	return resp.StatusCode, string(b)
}

func TestMutatingCallsNeedTheToken(t *testing.T) {
	ts, _, op := newTestServer(t, "s3cret", true)
	for _, c := range []struct{ method, path, body string }{
		{"POST", "/switchover", `{"to":"pg3"}`},
		{"POST", "/failover", `{}`},
		{"POST", "/pause", ``},
		{"POST", "/resume", ``},
		{"POST", "/members", `{"id":4,"addr":"127.0.0.1:7004","learner":true}`},
		{"DELETE", "/members/1", ``},
	} {
		for _, token := range []string{"", "wrong"} {
			code, body := call(t, c.method, ts.URL+c.path, token, c.body)
			if code != http.StatusUnauthorized || !strings.Contains(body, "token") {
				t.Errorf("%s %s with token %q: %d %s, want 401", c.method, c.path, token, code, body)
			}
		}
	}
	if op.switchoverTo != "" || op.paused != nil {
		t.Fatal("an unauthorized call reached the coordinator")
	}
	code, body := call(t, "POST", ts.URL+"/switchover", "s3cret", `{"to":"pg3"}`)
	if code != http.StatusOK || op.switchoverTo != "pg3" {
		t.Fatalf("authorized switchover: %d %s", code, body)
	}
	// Reads stay open.
	if code, _ := call(t, "GET", ts.URL+"/cluster", "", ""); code != http.StatusOK {
		t.Fatalf("GET /cluster without token: %d", code)
	}
}

func TestBadRequestsGetClearErrors(t *testing.T) {
	ts, _, _ := newTestServer(t, "", true)
	tests := []struct {
		method, path, body string
		code               int
		want               string
	}{
		{"POST", "/members", `{"id":0,"addr":"x:1"}`, 400, "id: required"},
		{"POST", "/members", `{"id":4,"addr":"nocolon"}`, 400, "not host:port"},
		{"POST", "/members", `{"id":4,"addr":"a:1","extra":1}`, 400, "unknown field"},
		{"POST", "/members", `not json`, 400, "bad request body"},
		{"DELETE", "/members/abc", ``, 400, "not a positive integer"},
		{"DELETE", "/members/9", ``, 404, "no member with id 9"},
		{"POST", "/switchover", `{}`, 400, "to: required"},
		{"POST", "/switchover", `{"to": 5}`, 400, "bad request body"},
		{"GET", "/replica?lag=-1", ``, 400, "not a number of bytes"},
		{"GET", "/nope", ``, 404, "no such endpoint"},
		{"PUT", "/cluster", ``, 405, ""},
	}
	for _, tt := range tests {
		code, body := call(t, tt.method, ts.URL+tt.path, "", tt.body)
		if code != tt.code || !strings.Contains(body, tt.want) {
			t.Errorf("%s %s %s: %d %s; want %d containing %q", tt.method, tt.path, tt.body, code, body, tt.code, tt.want)
		}
	}
}

func TestReadinessFollowsRouting(t *testing.T) {
	ready, _, _ := newTestServer(t, "", true)
	notReady, _, _ := newTestServer(t, "", false)
	for _, path := range []string{"/readyz", "/primary"} {
		if code, body := call(t, "GET", ready.URL+path, "", ""); code != 200 || !strings.Contains(body, "pg2") {
			t.Errorf("routing %s: %d %s", path, code, body)
		}
		if code, body := call(t, "GET", notReady.URL+path, "", ""); code != 503 || !strings.Contains(body, "failover in progress") {
			t.Errorf("not routing %s: %d %s", path, code, body)
		}
	}
	if code, _ := call(t, "GET", notReady.URL+"/healthz", "", ""); code != 200 {
		t.Errorf("/healthz must be 200 while the process is alive, got %d", code)
	}
}

func TestClusterViewAndReplica(t *testing.T) {
	ts, _, _ := newTestServer(t, "", true)
	_, body := call(t, "GET", ts.URL+"/cluster", "", "")
	var v ClusterView
	if err := json.Unmarshal([]byte(body), &v); err != nil {
		t.Fatal(err)
	}
	roles := map[string]string{}
	for _, n := range v.Nodes {
		roles[n.Name] = n.Role
	}
	if roles["pg1"] != "fenced" || roles["pg2"] != "primary" || roles["pg3"] != "standby" {
		t.Fatalf("roles %v", roles)
	}
	if !v.FailoverSafety.Safe || v.Epoch != 4 || !v.Routing.Routing {
		t.Fatalf("view %+v", v)
	}
	// pg3 lags 1000 bytes behind pg2.
	if code, body := call(t, "GET", ts.URL+"/replica?lag=2000", "", ""); code != 200 || !strings.Contains(body, `"lag_bytes": 1000`) {
		t.Errorf("replica within lag: %d %s", code, body)
	}
	if code, _ := call(t, "GET", ts.URL+"/replica?lag=10", "", ""); code != 503 {
		t.Errorf("replica beyond lag: %d, want 503", code)
	}
}

func TestOperationErrorsMapToStatusCodes(t *testing.T) {
	for _, tt := range []struct {
		err  error
		code int
	}{
		{fmt.Errorf("%w: unknown node pg9", coordinator.ErrBadRequest), 400},
		{fmt.Errorf("%w: a failover is in progress", coordinator.ErrConflict), 409},
		{&coordinator.OutcomeError{Epoch: 5, Outcome: "blocked", Reason: "1 of 2 standbys reachable, need 2"}, 409},
		{context.DeadlineExceeded, 504},
		{errors.New("no leader"), 503},
	} {
		ts, _, op := newTestServer(t, "", true)
		op.err = tt.err
		if code, body := call(t, "POST", ts.URL+"/switchover", "", `{"to":"pg3"}`); code != tt.code {
			t.Errorf("%v: %d %s, want %d", tt.err, code, body, tt.code)
		}
	}
}

func TestMembersAddAndRemove(t *testing.T) {
	ts, raft, _ := newTestServer(t, "", true)
	c := NewClient(ts.URL, "")
	ctx := t.Context()
	if _, err := c.AddMember(ctx, AddMemberRequest{ID: 4, Addr: "127.0.0.1:7004", Learner: true}); err != nil {
		t.Fatal(err)
	}
	members, err := c.Members(ctx)
	if err != nil || len(members) != 2 || members[1].Voter {
		t.Fatalf("members %+v %v", members, err)
	}
	if _, err := c.RemoveMember(ctx, 4); err != nil {
		t.Fatal(err)
	}
	raft.err = context.DeadlineExceeded
	_, err = c.AddMember(ctx, AddMemberRequest{ID: 5, Addr: "127.0.0.1:7005", Force: true})
	var apiErr *APIError
	if !errors.As(err, &apiErr) || apiErr.Status != http.StatusServiceUnavailable {
		t.Fatalf("membership change without quorum: %v", err)
	}
}

func TestClientReportsUnreachableAdmin(t *testing.T) {
	c := NewClient("127.0.0.1:1", "")
	_, err := c.Cluster(t.Context())
	if err == nil || !strings.Contains(err.Error(), "cannot reach the admin API") {
		t.Fatalf("got %v", err)
	}
}

// TestAddingAnUnreachableVoterNeedsForce: a voter that cannot be reached
// raises the quorum without adding a member that acknowledges.
func TestAddingAnUnreachableVoterNeedsForce(t *testing.T) {
	ts, raft, _ := newTestServer(t, "", true)
	c := NewClient(ts.URL, "")
	ctx := t.Context()
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := closed.Addr().String()
	closed.Close()
	_, err = c.AddMember(ctx, AddMemberRequest{ID: 4, Addr: deadAddr})
	var apiErr *APIError
	if !errors.As(err, &apiErr) || apiErr.Status != http.StatusConflict || !strings.Contains(err.Error(), "unreachable from proxy 1") ||
		!strings.Contains(err.Error(), "--force") {
		t.Fatalf("adding an unreachable voter: %v", err)
	}
	if len(raft.Members()) != 1 {
		t.Fatal("the unreachable voter was added")
	}
	// A learner is not checked (it does not count in the quorum) ...
	if _, err := c.AddMember(ctx, AddMemberRequest{ID: 4, Addr: deadAddr, Learner: true}); err != nil {
		t.Fatalf("adding a learner: %v", err)
	}
	// ... but promoting one this node, the leader, has not heard from is refused.
	if _, err := c.AddMember(ctx, AddMemberRequest{ID: 4, Addr: deadAddr}); err == nil || !strings.Contains(err.Error(), "has not been heard from") {
		t.Fatalf("promoting an unreachable learner: %v", err)
	}
	if _, err := c.AddMember(ctx, AddMemberRequest{ID: 5, Addr: deadAddr, Force: true}); err != nil {
		t.Fatalf("--force: %v", err)
	}
	live, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer live.Close()
	if _, err := c.AddMember(ctx, AddMemberRequest{ID: 6, Addr: live.Addr().String()}); err != nil {
		t.Fatalf("adding a reachable voter: %v", err)
	}
}

type fakeDrainer struct{ calls int }

func (f *fakeDrainer) StartDrain() DrainInfo {
	f.calls++
	return DrainInfo{Draining: true, DrainDelay: "5s", Grace: "10s"}
}

type fakeReadiness struct{ reason string }

func (f fakeReadiness) Ready() (bool, string) { return f.reason == "", f.reason }

// TestDrainAndReadiness: POST /drain is an operator's call that starts the
// drain; /readyz adds the node's own conditions to routing.
func TestDrainAndReadiness(t *testing.T) {
	drainer := &fakeDrainer{}
	s := &Server{ClusterName: "test", NodeID: 1, Raft: &fakeRaft{}, State: fakeState{},
		Routing:   fakeRouting{routing.View{Routing: true, Epoch: 4, Target: proxy.Target{Name: "pg2"}}},
		Drainer:   drainer,
		Readiness: fakeReadiness{reason: "draining since 12:00: this proxy takes no new clients"},
		Token:     "s3cret"}
	ts := httptest.NewServer(s.Handler())
	defer ts.Close()
	if code, _ := call(t, "POST", ts.URL+"/drain", "", ""); code != http.StatusUnauthorized || drainer.calls != 0 {
		t.Fatalf("POST /drain without the token: %d, %d calls", code, drainer.calls)
	}
	if code, body := call(t, "POST", ts.URL+"/drain", "s3cret", ""); code != http.StatusAccepted || !strings.Contains(body, `"grace": "10s"`) || drainer.calls != 1 {
		t.Fatalf("POST /drain: %d %s", code, body)
	}
	if code, body := call(t, "GET", ts.URL+"/readyz", "", ""); code != http.StatusServiceUnavailable || !strings.Contains(body, "draining since") {
		t.Fatalf("/readyz while draining: %d %s", code, body)
	}
}
