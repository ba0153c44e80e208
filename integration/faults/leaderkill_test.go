package faults

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/pgquorum/pgquorum/admin"
	"github.com/pgquorum/pgquorum/consensus/clusterstate"
	"github.com/pgquorum/pgquorum/integration/proxies"
)

// failpoints are the points of a failover where the leader is killed: before
// anything (the routing fence included), and after each step's PostgreSQL
// action but before its record reached the Raft log (coordinator/failpoint_on.go).
var failpoints = []string{
	"before:" + string(clusterstate.StepFreeze),
	"after:" + string(clusterstate.StepFreeze),
	"after:" + string(clusterstate.StepChooseCandidate),
	"after:" + string(clusterstate.StepPromote),
	"after:" + string(clusterstate.StepRepoint),
	"before:" + string(clusterstate.StepComplete),
}

// testLeaderKilledAtEveryStep kills -9 the Raft leader proxy at each failpoint
// of a failover of a killed primary. The failover is recorded step by step in
// the Raft log and every action is idempotent, so the new leader finishes it,
// exactly once, with one new primary; the workload's history stays
// linearizable and no acknowledged write is lost.
func testLeaderKilledAtEveryStep(t *testing.T, s *suite) {
	for _, point := range failpoints {
		if !t.Run(strings.ReplaceAll(point, ":", "_"), func(t *testing.T) { leaderKilledAt(t, s, point) }) {
			t.Fatalf("the leader killed at %s: failed; the later failpoints are not run", point)
		}
	}
}

func leaderKilledAt(t *testing.T, s *suite, point string) {
	ctx, cancel := context.WithTimeout(t.Context(), stepTimeout)
	defer cancel()
	old := s.pg.Node(s.primary)
	w := s.startLoad(t)
	hit := s.failpoint + ".hit"
	if err := os.WriteFile(s.failpoint, []byte(point), 0o644); err != nil {
		t.Fatal(err)
	}
	disarm := func() {
		for _, f := range []string{s.failpoint, hit} {
			if err := os.Remove(f); err != nil && !errors.Is(err, os.ErrNotExist) {
				t.Error(err)
			}
		}
	}
	t.Cleanup(disarm)

	killedAt := time.Now()
	if err := killPostgres(w, old); err != nil {
		t.Fatal(err)
	}
	waitFile(ctx, t, hit, "the leader to reach failpoint "+point)
	leader := s.leader(t)
	disarm() // the next leader must not stop there too
	leader.Kill()
	leaderKilledAt := time.Now()
	var survivors []*proxies.Process
	for _, p := range s.running() {
		if p != leader {
			survivors = append(survivors, p)
		}
	}
	newName := s.waitFailover(t, old.Name, survivors...)
	h := s.completed(t, survivors[0])
	t.Logf("%s killed; leader proxy %d killed at %s %v later; %s agreed %v after the leader's death; freeze step: %s",
		old.Name, leader.ID, point, leaderKilledAt.Sub(killedAt).Round(time.Millisecond), newName,
		h.At.Sub(leaderKilledAt).Round(time.Millisecond), stepDetail(h, clusterstate.StepFreeze))

	// The killed proxy restarts from its log and agrees.
	if err := s.proxies.Start(leader); err != nil {
		t.Fatal(err)
	}
	if err := leader.WaitCluster(ctx, "routing to "+newName, func(v admin.ClusterView) bool {
		return v.Routing.Routing && v.Primary == newName && v.Epoch == s.epoch
	}); err != nil {
		t.Fatal(err)
	}
	// One new primary: the other standby is still in recovery.
	other := s.pg.Node(otherStandby(s, old.Name, newName))
	if in, err := other.IsInRecovery(ctx); err != nil || !in {
		t.Fatalf("%s is not a standby after the failover to %s (in recovery %v, %v)", other.Name, newName, in, err)
	}
	if err := w.WaitAcks(ctx, 30); err != nil {
		t.Fatal(err)
	}
	s.finishLoad(t, w, s.pg.Node(newName), other)
	s.rejoin(t, old.Name)
}

// waitFile waits until path exists.
func waitFile(ctx context.Context, t *testing.T, path, what string) {
	t.Helper()
	for {
		if _, err := os.Stat(path); err == nil {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("timed out waiting for %s", what)
		case <-time.After(20 * time.Millisecond):
		}
	}
}
