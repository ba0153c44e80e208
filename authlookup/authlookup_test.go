package authlookup

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/pgquorum/pgquorum/consensus"
	"github.com/pgquorum/pgquorum/proxy/pgauth"
)

var (
	mock      = pgauth.NewMockKey([]byte("the cluster's mock secret"))
	members   = []consensus.Member{{ID: 1, Voter: true}, {ID: 2, Voter: true, Reachable: true}, {ID: 3, Voter: true}, {ID: 101}}
	errNoSQL  = errors.New("no primary")
	testVerif = mustVerifier("s3cret")
)

func mustVerifier(password string) pgauth.Verifier {
	v, err := pgauth.NewSCRAMVerifier(password, []byte("sixteen byte slt"), 4096)
	if err != nil {
		panic(err)
	}
	return v
}

func TestCallerMayAsk(t *testing.T) {
	for _, tt := range []struct {
		from consensus.Sender
		ok   bool
	}{
		{consensus.Sender{ID: 101, Role: consensus.PeerLearner}, true},
		{consensus.Sender{ID: 2, Role: consensus.PeerVoter}, true},
		{consensus.Sender{ID: 102, Role: consensus.PeerLearner}, false},    // not (or no longer) a member
		{consensus.Sender{ID: 101, Role: consensus.PeerUnverified}, false}, // plaintext transport
	} {
		if err := callerMayAsk(tt.from, members); (err == nil) != tt.ok {
			t.Errorf("%+v: %v, want allowed %v", tt.from, err, tt.ok)
		}
	}
}

func TestAnswersNeverTellUnknownRolesApart(t *testing.T) {
	md5 := pgauth.Verifier{Kind: pgauth.MD5, MD5: pgauth.MD5Verifier("old", "pw")}
	noRole := fmt.Errorf("role does not exist: %w", pgauth.ErrNoVerifier)
	got, err := answerFor("app", testVerif, nil, mock)
	if err != nil || got.Text() != testVerif.Text() {
		t.Fatalf("a real role: %v, %v", got, err)
	}
	ghost, err := answerFor("ghost", pgauth.Verifier{}, noRole, mock)
	if err != nil || ghost.Text() != mock.Verifier("ghost").Text() {
		t.Fatalf("an unknown role: %v, %v", ghost, err)
	}
	// Same shape as a real PostgreSQL verifier: kind, iterations, salt length.
	if ghost.Kind != testVerif.Kind || ghost.Iterations != testVerif.Iterations || len(ghost.Salt) != len(testVerif.Salt) {
		t.Errorf("the mock answer %v does not look like a real one %v", ghost, testVerif)
	}
	if got, err := answerFor("old", md5, nil, mock); err != nil || got.Text() != mock.Verifier("old").Text() {
		t.Errorf("an MD5 role is answered with %v, %v; want the mock (MD5 verifiers are password-equivalent)", got, err)
	}
	if _, err := answerFor("app", pgauth.Verifier{}, errNoSQL, mock); err == nil {
		t.Error("a failed lookup was answered")
	}
}

func TestVotersToAsk(t *testing.T) {
	for _, tt := range []struct {
		status consensus.Status
		want   []uint64
	}{
		{consensus.Status{ID: 101, Leader: 3}, []uint64{3, 2, 1}},
		{consensus.Status{ID: 101}, []uint64{2, 1, 3}},
		{consensus.Status{ID: 2, Leader: 2}, []uint64{1, 3}},        // a voter asking: never itself
		{consensus.Status{ID: 101, Leader: 101}, []uint64{2, 1, 3}}, // a learner is never the leader to ask
	} {
		if got := votersToAsk(tt.status, members); !slices.Equal(got, tt.want) {
			t.Errorf("%+v: ask %v, want %v", tt.status, got, tt.want)
		}
	}
}

func TestRequestAndReplyFormats(t *testing.T) {
	user, err := decodeRequest(encodeRequest("o'dd"))
	if err != nil || user != "o'dd" {
		t.Fatalf("request round trip: %q, %v", user, err)
	}
	for _, bad := range [][]byte{nil, {2, 'a'}, append([]byte{protocolVersion}, strings.Repeat("x", maxRoleName+1)...)} {
		if _, err := decodeRequest(bad); err == nil {
			t.Errorf("request %q accepted", bad)
		}
	}
	v, err := decodeReply(encodeReply(testVerif))
	if err != nil || v.Text() != testVerif.Text() {
		t.Fatalf("reply round trip: %v", err)
	}
	md5 := append([]byte{protocolVersion}, pgauth.MD5Verifier("u", "p")...)
	if _, err := decodeReply(md5); err == nil {
		t.Error("an MD5 verifier was accepted from a voter")
	}
}

// fakeNode is a voter's handler table and a learner's caller at once: Call runs the
// handler registered on the callee with the caller's identity.
type fakeNode struct {
	self     consensus.Status
	handlers map[uint64]consensus.CallHandler // by voter
	down     map[uint64]bool
	calls    atomic.Int64
	release  chan struct{} // when set, calls wait for it
}

func (n *fakeNode) Call(ctx context.Context, to uint64, service string, payload []byte) ([]byte, error) {
	n.calls.Add(1)
	if n.release != nil {
		<-n.release
	}
	if n.down[to] || n.handlers[to] == nil || service != Service {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	return n.handlers[to](ctx, consensus.Sender{ID: n.self.ID, Role: consensus.PeerLearner}, payload)
}
func (n *fakeNode) Members() []consensus.Member { return members }
func (n *fakeNode) Status() consensus.Status    { return n.self }

// voter is the Handlers of one voter.
type voter struct {
	id uint64
	n  *fakeNode
}

func (v voter) HandleCalls(_ string, h consensus.CallHandler) { v.n.handlers[v.id] = h }
func (v voter) Members() []consensus.Member                   { return members }

func newFakeCluster(lookup Lookup) *fakeNode {
	n := &fakeNode{self: consensus.Status{ID: 101, Leader: 1}, handlers: map[uint64]consensus.CallHandler{}, down: map[uint64]bool{}}
	for _, id := range []uint64{1, 2, 3} {
		Serve(voter{id, n}, lookup, mock, nil)
	}
	return n
}

func TestClientAsksTheVotersAndCaches(t *testing.T) {
	synctest.Test(t, testClientAsksTheVotersAndCaches) // the cut-off leader's timeouts pass at once
}

func testClientAsksTheVotersAndCaches(t *testing.T) {
	var lookups atomic.Int64
	n := newFakeCluster(func(_ context.Context, user string) (pgauth.Verifier, error) {
		lookups.Add(1)
		if user == "app" {
			return testVerif, nil
		}
		return pgauth.Verifier{}, pgauth.ErrNoVerifier
	})
	n.down[1] = true // the leader is cut off: the next voter answers
	c := NewClient(n)
	ctx := t.Context()
	v, err := c.LookupVerifier(ctx, "app")
	if err != nil || v.Text() != testVerif.Text() {
		t.Fatalf("app: %v, %v", v, err)
	}
	ghost, err := c.LookupVerifier(ctx, "ghost")
	if err != nil || ghost.Text() != mock.Verifier("ghost").Text() {
		t.Fatalf("ghost: %v, %v", ghost, err)
	}
	if lookups.Load() != 2 {
		t.Fatalf("%d lookups", lookups.Load())
	}
	// Cached, the unknown role too (its answer looks like any other).
	for _, user := range []string{"app", "ghost"} {
		if _, err := c.LookupVerifier(ctx, user); err != nil {
			t.Fatal(err)
		}
	}
	if lookups.Load() != 2 {
		t.Fatalf("cached answers were asked again: %d lookups", lookups.Load())
	}
	time.Sleep(CacheTTL)
	if _, err := c.LookupVerifier(ctx, "app"); err != nil || lookups.Load() != 3 {
		t.Fatalf("after the TTL: %v, %d lookups", err, lookups.Load())
	}
}

func TestClientAsksOnceForManyConnections(t *testing.T) {
	n := newFakeCluster(func(context.Context, string) (pgauth.Verifier, error) { return testVerif, nil })
	n.release = make(chan struct{})
	c := NewClient(n)
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			if _, err := c.LookupVerifier(t.Context(), "app"); err != nil {
				t.Error(err)
			}
		})
	}
	for c.inflightCount() == 0 {
		time.Sleep(time.Millisecond)
	}
	close(n.release)
	wg.Wait()
	if got := n.calls.Load(); got != 1 {
		t.Fatalf("%d calls for one role, want 1", got)
	}
}

func (c *Client) inflightCount() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.inflight)
}

func TestClientFailsWhenNoVoterCanLookUp(t *testing.T) {
	n := newFakeCluster(func(context.Context, string) (pgauth.Verifier, error) { return pgauth.Verifier{}, errNoSQL })
	_, err := NewClient(n).LookupVerifier(t.Context(), "app")
	if err == nil || !strings.Contains(err.Error(), "no voting proxy answered") {
		t.Fatalf("err = %v", err)
	}
}
