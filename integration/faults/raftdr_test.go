package faults

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pgquorum/pgquorum/admin"
	"github.com/pgquorum/pgquorum/integration/proxies"
)

// testVoterLostItsDataDirectory restarts a voter with an empty data
// directory. It must not panic, nor rejoin as itself: it exits with an error
// that names the procedure, and the procedure (docs/operations.md) replaces it:
// remove its id, start a proxy with a new id and a voter certificate, add it.
func testVoterLostItsDataDirectory(t *testing.T, s *suite) {
	ctx, cancel := context.WithTimeout(t.Context(), stepTimeout)
	defer cancel()
	leader := s.leader(t)
	var victim *proxies.Process
	for _, p := range s.running() {
		if p != leader {
			victim = p
		}
	}
	victim.Kill()
	if err := os.RemoveAll(victim.DataDir); err != nil {
		t.Fatal(err)
	}
	if err := s.proxies.Start(victim); err != nil {
		t.Fatal(err)
	}
	exited, state := victim.Exited()
	select {
	case <-exited:
	case <-ctx.Done():
		t.Fatalf("proxy %d restarted with an empty data directory kept running", victim.ID)
	}
	log, _ := os.ReadFile(victim.LogPath)
	if code := state().ExitCode(); code != 1 || !strings.Contains(string(log), "Raft log was lost") ||
		!strings.Contains(string(log), "pgquorum members remove") || strings.Contains(string(log), "goroutine ") {
		t.Fatalf("proxy %d with a lost data directory exited with %d; want 1, a clear error naming the procedure and no panic:\n%s",
			victim.ID, code, lastLines(log, 5))
	}
	t.Logf("proxy %d with an empty data directory: exit 1: %s", victim.ID, lastLines(log, 1))

	// The procedure: remove the old id; start a proxy with a new id, a voter
	// certificate, node.voter: false and an empty data directory; add it.
	s.retired[victim.ID] = true
	cli(ctx, t, "members", "remove", strconv.FormatUint(victim.ID, 10), "--admin", leader.Admin, "--token-file", s.proxies.TokenFile)
	replacement := addVoter(ctx, t, s, leader)
	t.Logf("proxy %d replaced by proxy %d (a voter)", victim.ID, replacement.ID)
	w := s.startLoad(t)
	if err := w.WaitAcks(ctx, 30); err != nil {
		t.Fatal(err)
	}
	s.finishLoad(t, w, s.pg.Node(s.primary))
}

// testMajorityOfVotersLost kills every voter for good but one (after a
// failover, so that a node is fenced), runs the emergency procedure on the
// survivor — pgquorum recover to compare the logs, then
// pgquorum recover --force-new-cluster — and starts it: it routes to the same
// primary at the same epoch, the fenced node stays fenced, a lost voter that
// comes back with its old log is refused, and new voters can be added.
func testMajorityOfVotersLost(t *testing.T, s *suite) {
	ctx, cancel := context.WithTimeout(t.Context(), stepTimeout)
	defer cancel()
	old := s.pg.Node(s.primary)
	if err := old.Kill(); err != nil {
		t.Fatal(err)
	}
	s.waitFailover(t, old.Name)
	voters := s.running()
	for _, p := range voters {
		p.Kill()
	}

	// Compare the survivors' logs; recover the one that goes furthest.
	var survivor *proxies.Process
	var best [2]uint64
	for _, p := range voters {
		out := cli(ctx, t, "recover", "--config", p.ConfigPath)
		term, index := logPosition(t, out)
		if survivor == nil || term > best[0] || term == best[0] && index > best[1] {
			survivor, best = p, [2]uint64{term, index}
		}
	}
	out := cli(ctx, t, "recover", "--force-new-cluster", "--config", survivor.ConfigPath)
	t.Logf("pgquorum recover --force-new-cluster on proxy %d:\n%s", survivor.ID, out)
	for _, p := range voters {
		if p != survivor {
			s.retired[p.ID] = true
		}
	}
	if err := s.proxies.Start(survivor); err != nil {
		t.Fatal(err)
	}
	v, err := waitView(ctx, survivor, "routing after the recovery", func(v admin.ClusterView) bool { return v.Routing.Routing })
	if err != nil {
		t.Fatal(err)
	}
	if v.Primary != s.primary || v.Epoch != s.epoch || !slices.Contains(v.Fenced, old.Name) {
		t.Fatalf("after the recovery: primary %s epoch %d fenced %v; want %s at epoch %d with %s still fenced",
			v.Primary, v.Epoch, v.Fenced, s.primary, s.epoch, old.Name)
	}
	t.Logf("proxy %d alone routes to %s at epoch %d; fenced %v", survivor.ID, v.Primary, v.Epoch, v.Fenced)

	// A lost voter that comes back with its old log gets nowhere: the survivor
	// refuses what it sends, it never routes. (It is not stopped by the one
	// survivor's removal notice: a removal is believed only from the leader it
	// knows or a majority of its voters. Never start a lost voter again.)
	var lost *proxies.Process
	for _, p := range voters {
		if p != survivor {
			lost = p
		}
	}
	if err := s.proxies.Start(lost); err != nil {
		t.Fatal(err)
	}
	watchUntil := time.Now().Add(3 * time.Second) // a window to watch that nothing happens; no event to await
	for time.Now().Before(watchUntil) {
		if v, err := lost.Cluster(ctx); err == nil && (v.Routing.Routing || v.Raft.Leader == survivor.ID) {
			t.Fatalf("removed voter %d came back and follows the recovered cluster: routing %+v, leader %d", lost.ID, v.Routing, v.Raft.Leader)
		}
		if v, err := survivor.Cluster(ctx); err != nil || !v.Routing.Routing {
			t.Fatalf("the recovered proxy %d stopped routing while a removed voter was back: %+v, %v", survivor.ID, v.Routing, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	lost.Kill()
	if log, _ := os.ReadFile(survivor.LogPath); !strings.Contains(string(log), "telling removed node it is no longer a member") {
		t.Errorf("the recovered proxy never refused the removed voter %d", lost.ID)
	}

	// New voters join, the cluster has three voters again.
	for range 2 {
		addVoter(ctx, t, s, survivor)
	}
	w := s.startLoad(t)
	if err := w.WaitAcks(ctx, 30); err != nil {
		t.Fatal(err)
	}
	s.finishLoad(t, w, s.pg.Node(s.primary))
	if v, err := survivor.Cluster(ctx); err != nil || !slices.Contains(v.Fenced, old.Name) {
		t.Fatalf("%s is no longer fenced after the recovery (fenced %v, %v)", old.Name, v.Fenced, err)
	}
	s.rejoin(t, old.Name)
}

// cli runs the pgquorum binary and fails the test unless it exits 0.
func cli(ctx context.Context, t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.CommandContext(ctx, failpointBinary(t), args...).CombinedOutput()
	if err != nil {
		t.Fatalf("pgquorum %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

var logPositionLine = regexp.MustCompile(`last index (\d+), last term (\d+)`)

// logPosition reads "last index I, last term T" from pgquorum recover's output.
func logPosition(t *testing.T, out string) (term, index uint64) {
	t.Helper()
	m := logPositionLine.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("pgquorum recover printed no log position:\n%s", out)
	}
	index, _ = strconv.ParseUint(m[1], 10, 64)
	term, _ = strconv.ParseUint(m[2], 10, 64)
	return term, index
}

// nextID is an id no proxy of the suite ever had (ids are never reused).
func nextID(s *suite) uint64 {
	var id uint64
	for _, p := range s.proxies.Proxies {
		id = max(id, p.ID)
	}
	return id + 1
}

// waitMember waits until p's member list has id, as a voter or a learner.
// addVoter starts a proxy with a new id and a voter certificate (node.voter:
// false, not a member yet) and, once it runs, adds it as a voter through via,
// as docs/operations.md tells an operator: members add checks that the new
// voter can be reached, so it must listen first (its admin API answers once
// its Raft listener is bound). It returns when the new voter routes.
func addVoter(ctx context.Context, t *testing.T, s *suite, via *proxies.Process) *proxies.Process {
	t.Helper()
	p := s.proxies.AddNode(t, nextID(s), true)
	if err := p.WaitCluster(ctx, "its admin API", func(admin.ClusterView) bool { return true }); err != nil {
		t.Fatal(err)
	}
	cli(ctx, t, "members", "add", strconv.FormatUint(p.ID, 10), p.Raft, "--admin", via.Admin, "--token-file", s.proxies.TokenFile)
	waitMember(ctx, t, via, p.ID, true)
	if err := p.WaitRouting(ctx); err != nil {
		t.Fatal(err)
	}
	return p
}

func waitMember(ctx context.Context, t *testing.T, p *proxies.Process, id uint64, voter bool) {
	t.Helper()
	if _, err := waitView(ctx, p, fmt.Sprintf("member %d (voter %v)", id, voter), func(v admin.ClusterView) bool {
		return slices.ContainsFunc(v.Members, func(m admin.MemberView) bool { return m.ID == id && m.Voter == voter })
	}); err != nil {
		t.Fatal(err)
	}
}

// waitView waits until cond holds for p's /cluster and returns that view.
func waitView(ctx context.Context, p *proxies.Process, what string, cond func(admin.ClusterView) bool) (admin.ClusterView, error) {
	var last admin.ClusterView
	err := p.WaitCluster(ctx, what, func(v admin.ClusterView) bool {
		last = v
		return cond(v)
	})
	return last, err
}

// lastLines returns the last n lines of a log.
func lastLines(log []byte, n int) string {
	lines := strings.Split(strings.TrimRight(string(log), "\n"), "\n")
	return strings.Join(lines[max(len(lines)-n, 0):], "\n")
}
