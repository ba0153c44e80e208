package node

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/pgquorum/pgquorum/config"
	"github.com/pgquorum/pgquorum/consensus"
	"github.com/pgquorum/pgquorum/pki"
)

// These tests start real nodes (Raft member, listeners, admin API) on
// loopback. No PostgreSQL is needed: the backends point at a closed port, so
// no primary is ever agreed, which none of them needs.

// freeAddr returns a loopback address with a port free right now.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// testConfig is a one-voter cluster on loopback, without TLS.
func testConfig(t *testing.T) *config.Config {
	t.Helper()
	raft := freeAddr(t)
	cfg := &config.Config{
		ClusterName: "nodetest",
		Node:        config.Node{ID: 1, DataDir: filepath.Join(t.TempDir(), "proxy-1")},
		Listen:      config.Listen{Postgres: "127.0.0.1:0", Admin: "127.0.0.1:0", Raft: raft},
		Peers:       []config.Peer{{ID: 1, Raft: raft}},
		Backends:    []config.Backend{{Name: "pg1", Address: freeAddr(t)}},
		Auth:        config.Auth{Method: "trust", QueryUser: "pgquorum", QueryDatabase: "postgres"},
		Security:    config.Security{Insecure: true},
	}
	cfg.ApplyDefaults()
	return cfg
}

// TestAComponentThatFailsStopsTheNode: the admin API's listener dies; the
// node does not go on without it (with /healthz unreachable and the rest
// still serving): Done is closed, Err names the component, Close returns it.
func TestAComponentThatFailsStopsTheNode(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	cfg := testConfig(t)
	var admin net.Listener
	n, err := Start(t.Context(), cfg, nil, Options{NoRuntimeMetrics: true, AdminListen: func(addr string) (net.Listener, error) {
		var err error
		admin, err = net.Listen("tcp", addr)
		return admin, err
	}})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-n.Done():
		t.Fatalf("the node stopped before anything failed: %v", n.Err())
	default:
	}
	admin.Close() // the socket is gone under the admin API
	select {
	case <-n.Done():
	case <-time.After(time.Minute):
		t.Fatal("the admin API died and the node went on")
	}
	if err := n.Err(); err == nil || !strings.HasPrefix(err.Error(), "admin: ") || !strings.Contains(err.Error(), "closed") {
		t.Fatalf("Err() = %v, want the admin API's failure", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := n.Close(ctx); err == nil || !strings.HasPrefix(err.Error(), "admin: ") {
		t.Fatalf("Close() = %v, want the failure", err)
	}
}

// TestStartUndoesWhatItStartedOnError: a node whose admin address is taken
// fails to start, and leaves nothing behind: the Raft log is closed (the
// next start opens it) and the client port is free again.
func TestStartUndoesWhatItStartedOnError(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	cfg := testConfig(t)
	cfg.Listen.Postgres = freeAddr(t)
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Listen.Admin = taken.Addr().String()
	if _, err := Start(t.Context(), cfg, nil, Options{NoRuntimeMetrics: true}); err == nil || !strings.Contains(err.Error(), "admin listen") {
		t.Fatalf("Start with a taken admin port: %v", err)
	}
	taken.Close()
	if l, err := net.Listen("tcp", cfg.Listen.Postgres); err != nil {
		t.Fatalf("the failed start left the client port bound: %v", err)
	} else {
		l.Close()
	}
	n, err := Start(t.Context(), cfg, nil, Options{NoRuntimeMetrics: true})
	if err != nil {
		t.Fatalf("the failed start left something behind: %v", err)
	}
	if err := n.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// TestDrainStopsAcceptingAfterTheDelay: draining turns /readyz (Ready) false
// at once, keeps accepting clients for shutdown.drain_delay, then closes the
// client listener; the node itself (Raft, admin API) goes on, not failed.
func TestDrainStopsAcceptingAfterTheDelay(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	cfg := testConfig(t)
	cfg.Shutdown.DrainDelay.Duration = 300 * time.Millisecond
	n, err := Start(t.Context(), cfg, nil, Options{NoRuntimeMetrics: true})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close(context.Background())
	// No PostgreSQL here, so no primary is agreed: not ready, but not
	// because of a drain.
	if _, reason := n.Ready(); strings.Contains(reason, "draining") {
		t.Fatalf("draining before the drain: %s", reason)
	}
	info := n.StartDrain()
	if !info.Draining || info.DrainDelay != "300ms" || info.Grace != DefaultShutdownGrace.String() {
		t.Fatalf("drain info %+v", info)
	}
	if ok, reason := n.Ready(); ok || !strings.Contains(reason, "draining") {
		t.Fatalf("Ready() while draining = %v %q", ok, reason)
	}
	// Still accepting during the delay (the drain goroutine has not shut the
	// proxy down before the delay).
	if c, err := net.Dial("tcp", n.PostgresAddr().String()); err != nil {
		t.Fatalf("no longer accepting during the drain delay: %v", err)
	} else {
		c.Close()
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := n.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	if c, err := net.Dial("tcp", n.PostgresAddr().String()); err == nil {
		c.Close()
		t.Fatal("still accepting clients after the drain")
	}
	select {
	case <-n.Done():
		t.Fatalf("draining failed the node: %v", n.Err())
	default:
	}
	if st := n.Raft().Status(); st.Stopped {
		t.Fatalf("the Raft member stopped with the drain: %v", n.Raft().Err())
	}
	if err := n.Close(ctx); err != nil {
		t.Fatalf("Close after a drain: %v", err)
	}
}

// TestSilentLearnerIsRemovedAndDrawsANewID: a sidecar with node.id: auto
// draws its id from its certificate's block; once it stops answering, the
// leader removes it after learners.remove_after (never a voter), and the
// learner, learning it was removed, drops its id so that its next start joins
// under a new one.
func TestSilentLearnerIsRemovedAndDrawsANewID(t *testing.T) {
	dir := t.TempDir()
	ca, err := pki.NewCA("nodetest", 1)
	if err != nil {
		t.Fatal(err)
	}
	caFile, _, err := pki.WriteCA(dir, ca, false)
	if err != nil {
		t.Fatal(err)
	}
	issue := func(first, last uint64, role pki.Role) *config.PeerTLS {
		kp, err := ca.IssueNode(first, last, role, []string{"127.0.0.1"}, 1)
		if err != nil {
			t.Fatal(err)
		}
		cert, key := pki.NodeFiles(dir, pki.Identity{Cluster: "nodetest", Role: role, FirstID: first, LastID: last})
		if err := pki.WriteKeyPair(cert, key, kp.CertPEM, kp.KeyPEM, false); err != nil {
			t.Fatal(err)
		}
		return &config.PeerTLS{CA: caFile, Cert: cert, Key: key}
	}
	voterCfg := testConfig(t)
	voterCfg.Security.Insecure = false
	voterCfg.PeerTLS = issue(1, 1, pki.RoleVoter)
	voterCfg.Admin.Token = "0123456789abcdef0123456789abcdef"
	voterCfg.Admin.TokenFile = "token"
	voterCfg.Learners.RemoveAfter = &config.Duration{Duration: 5 * time.Second}
	voter, err := Start(t.Context(), voterCfg, nil, Options{NoRuntimeMetrics: true})
	if err != nil {
		t.Fatal(err)
	}
	defer voter.Close(context.Background())

	learnerCfg := testConfig(t)
	learnerCfg.Security.Insecure = false
	no := false
	learnerCfg.Node = config.Node{AutoID: true, DataDir: filepath.Join(dir, "sidecar"), Voter: &no}
	learnerCfg.Peers = voterCfg.Peers
	learnerCfg.PeerTLS = issue(1000, 999_999, pki.RoleLearner)
	learner, err := Start(t.Context(), learnerCfg, nil, Options{NoRuntimeMetrics: true})
	if err != nil {
		t.Fatal(err)
	}
	id := learnerCfg.Node.ID
	if id < 1000 || id > 999_999 {
		t.Fatalf("drew id %d, not in the certificate's block 1000-999999", id)
	}
	if kept, err := readAutoID(filepath.Join(learnerCfg.Node.DataDir, autoIDFile)); err != nil || kept != id {
		t.Fatalf("kept id %d %v, want %d", kept, err, id)
	}
	waitFor(t, voter, "the learner joins", func() bool { return hasMember(voter.Raft().Members(), id) })

	// The learner goes silent: its process is stopped (a pod gone for good),
	// without leaving the cluster. The voter removes it after 5 s of silence.
	if err := learner.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	silentSince := time.Now()
	waitFor(t, voter, "the voter removes the silent learner", func() bool { return !hasMember(voter.Raft().Members(), id) })
	if took := time.Since(silentSince); took < 5*time.Second {
		t.Fatalf("removed %v after the learner went silent, before learners.remove_after (5s)", took)
	}
	if !hasMember(voter.Raft().Members(), 1) {
		t.Fatal("the voter removed itself")
	}

	// The learner comes back under the same id: it is refused, fails with
	// ErrRemoved, and drops its id; the start after that draws a new one.
	learnerCfg.Node.ID = 0
	learner, err = Start(t.Context(), learnerCfg, nil, Options{NoRuntimeMetrics: true})
	if err != nil {
		t.Fatal(err)
	}
	if learnerCfg.Node.ID != id {
		t.Fatalf("restarted under id %d, want its kept id %d", learnerCfg.Node.ID, id)
	}
	select {
	case <-learner.Done():
	case <-time.After(time.Minute):
		t.Fatal("a removed learner went on running")
	}
	if err := learner.Err(); !errors.Is(err, consensus.ErrRemoved) {
		t.Fatalf("the removed learner failed with %v, want ErrRemoved", err)
	}
	learner.Close(context.Background())
	if _, err := os.Stat(filepath.Join(learnerCfg.Node.DataDir, autoIDFile)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the removed learner kept its id file: %v", err)
	}
	learnerCfg.Node.ID = 0
	learner, err = Start(t.Context(), learnerCfg, nil, Options{NoRuntimeMetrics: true})
	if err != nil {
		t.Fatal(err)
	}
	defer learner.Close(context.Background())
	if learnerCfg.Node.ID == id {
		t.Fatalf("drew the removed id %d again", id)
	}
	newID := learnerCfg.Node.ID
	waitFor(t, voter, "the learner joins under its new id", func() bool { return hasMember(voter.Raft().Members(), newID) })
}

func hasMember(members []consensus.Member, id uint64) bool {
	for _, m := range members {
		if m.ID == id {
			return true
		}
	}
	return false
}

// waitFor checks cond (a read of n's published membership) whenever n
// applies an entry, and at least every 100 ms, until it holds; at most a
// minute.
func waitFor(t *testing.T, n *Node, what string, cond func() bool) {
	t.Helper()
	deadline := time.After(time.Minute)
	for !cond() {
		select {
		case <-n.Raft().Applied():
		case <-time.After(100 * time.Millisecond):
		case <-deadline:
			t.Fatalf("timed out waiting until %s", what)
		}
	}
}
