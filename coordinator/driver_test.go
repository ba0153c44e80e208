package coordinator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pgquorum/pgquorum/conninfo"
	"github.com/pgquorum/pgquorum/consensus"
	"github.com/pgquorum/pgquorum/consensus/clusterstate"
	"github.com/pgquorum/pgquorum/health"
)

// testLogger sends the coordinator's logs to t.Log.
func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// harness is a bootstrapped cluster (pg1 primary, pg2 and pg3 streaming) behind
// fakes, with three voting proxies 1, 2, 3.
type harness struct {
	t      *testing.T
	raft   *fakeRaft
	pg     *fakePG
	health *fakeHealth
	clock  *fakeClock
	coord  *Coordinator
}

var testAddresses = map[string]string{"pg1": "10.0.0.1:5432", "pg2": "10.0.0.2:5432", "pg3": "10.0.0.3:5432"}

func newHarness(t *testing.T) *harness {
	raft := newFakeRaft(1, 2, 3)
	raft.mustPropose(t, bootCommand())
	h := &harness{t: t, raft: raft, pg: newFakePG(), health: &fakeHealth{}, clock: newFakeClock()}
	h.health.set("pg1", upStatus(primaryProbe("pg1", "ANY 1 (pg2, pg3)", "pg2", "pg3")))
	for _, name := range []string{"pg2", "pg3"} {
		h.health.set(name, upStatus(health.Probe{Node: name, At: t0, Reachable: true, InRecovery: true, Timeline: 1,
			WalReceiver: &health.WalReceiver{Status: "streaming", SenderHost: "10.0.0.1", SenderPort: 5432}}))
	}
	h.coord = &Coordinator{
		Raft: raft, State: raft,
		Nodes:     []clusterstate.NodeSpec{{Name: "pg1"}, {Name: "pg2", Priority: 10}, {Name: "pg3", Priority: 5}},
		Addresses: testAddresses,
		Postgres:  h.pg,
		Health:    h.health,
		Now:       h.clock.Now,
		Logger:    testLogger(t),
	}
	return h
}

// primaryDown makes pg1 unreachable and has proxies 1 and 2 report it down.
func (h *harness) primaryDown() {
	h.pg.set("pg1", func(n *fakeNode) { n.down = true })
	h.health.set("pg1", downStatus(primaryProbe("pg1", "ANY 1 (pg2, pg3)", "pg2", "pg3")))
	h.clock.Advance(time.Second)
	h.raft.mustPropose(h.t, reportCommand("pg1", 1, false, h.clock.Now()))
	h.raft.mustPropose(h.t, reportCommand("pg1", 2, false, h.clock.Now()))
}

// drive runs leader steps of d until stop says so; a step that asks to wait
// advances the fake clock instead. It fails the test after too many steps.
func (h *harness) drive(d *driver, stop func(clusterstate.State) bool) clusterstate.State {
	h.t.Helper()
	for range 100 {
		st := h.raft.State()
		if stop(st) {
			return st
		}
		if wait := d.leaderStep(h.t.Context()); wait > 0 {
			h.clock.Advance(wait)
		}
	}
	h.t.Fatalf("no end after 100 leader steps; state: %+v", h.raft.State())
	return clusterstate.State{}
}

// awaitState waits (bounded) until another goroutine's proposal makes pred true.
func (h *harness) awaitState(pred func(clusterstate.State) bool) {
	h.t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		applied := h.raft.Applied()
		if pred(h.raft.State()) {
			return
		}
		select {
		case <-applied:
		case <-deadline:
			h.t.Fatalf("state never reached the expected condition: %+v", h.raft.State())
		}
	}
}

// failoverEnded: a failover has ended (epoch moved past bootstrap, none in progress).
func failoverEnded(st clusterstate.State) bool { return st.Epoch > 1 && st.Failover == nil }

func isFailoverCommand(c clusterstate.Command) bool {
	return c.BeginFailover != nil || c.RecordStep != nil || c.BlockFailover != nil || c.CompleteFailover != nil || c.AbortFailover != nil
}

// checkFailedOverToPG2 checks the end of a failover pg1 -> pg2 done exactly once.
func (h *harness) checkFailedOverToPG2(st clusterstate.State) {
	h.t.Helper()
	if st.Primary != "pg2" || st.Epoch != 2 || !slices.Equal(st.Fenced, []string{"pg1"}) {
		h.t.Fatalf("primary %q epoch %d fenced %v, want pg2 at epoch 2 with pg1 fenced", st.Primary, st.Epoch, st.Fenced)
	}
	if got := h.raft.count(func(c clusterstate.Command) bool { return c.CompleteFailover != nil }); got != 1 {
		h.t.Errorf("CompleteFailover applied %d times, want once", got)
	}
	if got := h.pg.promoted(); !slices.Equal(got, []string{"pg2"}) || h.pg.node("pg2").promotions != 1 {
		h.t.Errorf("promoted %v (pg2 %d times), want pg2 once", got, h.pg.node("pg2").promotions)
	}
	if got := h.pg.node("pg2").syncNames; got != `ANY 1 ("pg3")` {
		h.t.Errorf("pg2 synchronous_standby_names = %s, want ANY 1 (\"pg3\")", got)
	}
	pg3 := h.pg.node("pg3").conninfo
	for _, want := range []string{"host='10.0.0.2'", "port='5432'", "user='replicator'", "application_name='pg3'", "sslmode='disable'"} {
		if !strings.Contains(pg3, want) {
			h.t.Errorf("pg3 primary_conninfo %s lacks %s", conninfo.Redact(pg3), want)
		}
	}
	last := st.History[len(st.History)-1]
	if last.Outcome != clusterstate.OutcomeCompleted || last.NewPrimary != "pg2" || len(last.LSNTable) != 2 {
		h.t.Errorf("last history entry %+v", last)
	}
}

func TestAutomaticFailoverPromotesTheMostAdvancedStandby(t *testing.T) {
	h := newHarness(t)
	h.primaryDown()
	st := h.drive(newDriver(h.coord), failoverEnded)
	h.checkFailedOverToPG2(st)

	if got := h.pg.node("pg3").conninfo; !strings.Contains(got, "password='s3cret'") {
		t.Errorf("pg3 lost the replication password captured before freezing: %s", conninfo.Redact(got))
	}
	last := st.History[len(st.History)-1]
	var steps []clusterstate.Step
	for _, s := range last.Steps {
		steps = append(steps, s.Step)
		if strings.Contains(s.Detail, "s3cret") {
			t.Errorf("step %s detail leaks the password: %s", s.Step, s.Detail)
		}
	}
	want := []clusterstate.Step{clusterstate.StepFreeze, clusterstate.StepChooseCandidate, clusterstate.StepPromote, clusterstate.StepRepoint}
	if !slices.Equal(steps, want) {
		t.Errorf("steps %v, want %v", steps, want)
	}
	if !strings.Contains(last.Steps[0].Detail, "primary_conninfo template: user='replicator'") {
		t.Errorf("freeze detail %q does not record the template", last.Steps[0].Detail)
	}
	if last.Kind != clusterstate.KindAutomatic || last.Reason != "2 of 3 voting proxies observe pg1 down" {
		t.Errorf("history entry kind %s reason %q", last.Kind, last.Reason)
	}
}

// TestFailoverRepointsTheOtherStandbyWhilePromoting: an automatic failover re-points the
// other frozen standby at the candidate (only if still frozen) before the promote step ends,
// so that its WAL receiver connects before the sessions move (cascade.go); the repoint step
// then finds nothing to change. A switchover does not: it may still be aborted.
func TestFailoverRepointsTheOtherStandbyWhilePromoting(t *testing.T) {
	h := newHarness(t)
	h.primaryDown()
	st := h.drive(newDriver(h.coord), failoverEnded)
	h.checkFailedOverToPG2(st)
	early, step := slices.Index(h.pg.calls, "repoint-if-frozen pg3"), slices.Index(h.pg.calls, "repoint pg3")
	if early < 0 || step < 0 || early > step || h.pg.callCount("repoint-if-frozen pg3") != 1 {
		t.Fatalf("want one early re-point of pg3 before the repoint step; calls %v", h.pg.calls)
	}
	if got := h.pg.node("pg3").conninfo; !strings.Contains(got, "host='10.0.0.2'") {
		t.Errorf("pg3 does not follow pg2: %s", conninfo.Redact(got))
	}

	h = newHarness(t)
	if _, err := runOperator(h, newDriver(h.coord), func(ctx context.Context) (clusterstate.HistoryEntry, error) {
		return h.coord.Switchover(ctx, "pg3")
	}); err != nil {
		t.Fatal(err)
	}
	if n := h.pg.callCount("repoint-if-frozen"); n != 0 {
		t.Errorf("a switchover re-pointed %d standbys before promoting; calls %v", n, h.pg.calls)
	}
}

// TestResumeAfterCrashAtEveryPoint crashes the leader after every possible number of
// applied failover commands, and also after every PostgreSQL action whose proposal
// was then lost; a new leader with an empty memory must finish the failover, and
// exactly once: one promotion, one CompleteFailover.
func TestResumeAfterCrashAtEveryPoint(t *testing.T) {
	const failoverCommands = 6 // begin, freeze, choose, promote, repoint, complete
	for k := 1; k < failoverCommands; k++ {
		t.Run(fmt.Sprintf("crash after %d applied", k), func(t *testing.T) {
			h := newHarness(t)
			h.primaryDown()
			h.drive(newDriver(h.coord), func(clusterstate.State) bool { return h.raft.count(isFailoverCommand) >= k })
			h.checkFailedOverToPG2(h.drive(newDriver(h.coord), failoverEnded))
		})
	}
	for k := 2; k <= failoverCommands; k++ {
		t.Run(fmt.Sprintf("crash before proposal %d", k), func(t *testing.T) {
			h := newHarness(t)
			h.primaryDown()
			proposals, crashed := 0, false
			h.raft.beforeApply = func(c clusterstate.Command) error {
				if !isFailoverCommand(c) {
					return nil
				}
				if proposals++; proposals == k {
					crashed = true
					return errCrash
				}
				return nil
			}
			h.drive(newDriver(h.coord), func(clusterstate.State) bool { return crashed })
			h.raft.beforeApply = nil
			h.checkFailedOverToPG2(h.drive(newDriver(h.coord), failoverEnded))
		})
	}
}

func TestBlockedFailoverHoldsAndProceedsWhenTheStandbyReturns(t *testing.T) {
	h := newHarness(t)
	h.pg.set("pg3", func(n *fakeNode) { n.down = true })
	h.primaryDown()
	d := newDriver(h.coord)
	st := h.drive(d, func(st clusterstate.State) bool { return st.Failover != nil && st.Failover.Blocked })
	const reason = "1 of 2 standbys reachable, need 2 (unreachable: pg3)"
	if st.Failover.BlockedReason != reason || st.Primary != "" {
		t.Fatalf("blocked reason %q primary %q, want %q and no primary", st.Failover.BlockedReason, st.Primary, reason)
	}
	if last := st.History[len(st.History)-1]; last.Outcome != clusterstate.OutcomeBlocked || last.OutcomeReason != reason {
		t.Errorf("history does not record the block: %+v", last)
	}

	// Still blocked: re-checks freeze again but propose nothing.
	applied, freezes := h.raft.applyCount(), h.pg.callCount("freeze pg2")
	for range 3 {
		h.clock.Advance(d.leaderStep(t.Context()))
	}
	if h.raft.applyCount() != applied || h.pg.callCount("freeze pg2") <= freezes {
		t.Errorf("a blocked failover that stays blocked proposed %d commands and re-froze %d times",
			h.raft.applyCount()-applied, h.pg.callCount("freeze pg2")-freezes)
	}
	if len(h.pg.promoted()) != 0 {
		t.Fatalf("promoted %v while blocked", h.pg.promoted())
	}

	// pg3 restarts, still configured to follow pg1: the failover proceeds.
	h.pg.set("pg3", func(n *fakeNode) { n.down = false })
	h.checkFailedOverToPG2(h.drive(d, failoverEnded))
}

func TestBlockedFailoverAbortsWhenTheOldPrimaryReturns(t *testing.T) {
	h := newHarness(t)
	h.pg.set("pg3", func(n *fakeNode) { n.down = true })
	h.primaryDown()
	d := newDriver(h.coord)
	h.drive(d, func(st clusterstate.State) bool { return st.Failover != nil && st.Failover.Blocked })

	h.pg.set("pg1", func(n *fakeNode) { n.down = false })
	h.health.set("pg1", upStatus(primaryProbe("pg1", "ANY 1 (pg2, pg3)", "pg2")))
	h.clock.Advance(time.Second)
	h.raft.mustPropose(t, reportCommand("pg1", 1, true, h.clock.Now()))
	h.raft.mustPropose(t, reportCommand("pg1", 2, true, h.clock.Now()))

	st := h.drive(d, func(st clusterstate.State) bool { return st.Failover == nil })
	if st.Primary != "pg1" || st.Epoch != 3 || len(st.Fenced) != 0 {
		t.Fatalf("primary %q epoch %d fenced %v, want pg1 at epoch 3", st.Primary, st.Epoch, st.Fenced)
	}
	if last := st.History[len(st.History)-1]; last.Outcome != clusterstate.OutcomeAborted ||
		!strings.Contains(last.OutcomeReason, "pg1 is reachable again") {
		t.Errorf("history: %+v", last)
	}
	if got := h.pg.node("pg2").conninfo; !strings.Contains(got, "host='10.0.0.1'") || !strings.Contains(got, "application_name='pg2'") {
		t.Errorf("pg2 not unfrozen towards pg1: %s", conninfo.Redact(got))
	}
	if len(h.pg.promoted()) != 0 {
		t.Errorf("promoted %v", h.pg.promoted())
	}
}

func TestHazardBlocksUntilTheOperatorForces(t *testing.T) {
	h := newHarness(t)
	unsafe := primaryProbe("pg1", "ANY 1 (*)", "pg2", "pg3", "pg_receivewal")
	h.health.set("pg1", upStatus(unsafe))
	if s := h.coord.Safety(); s.Safe || !strings.Contains(strings.Join(s.Reasons, "; "), `walsender "pg_receivewal"`) {
		t.Errorf("Safety() = %+v, want unsafe because of the foreign walsender", s)
	}
	h.primaryDown()
	h.health.set("pg1", downStatus(unsafe))
	d := newDriver(h.coord)
	st := h.drive(d, func(st clusterstate.State) bool { return st.Failover != nil && st.Failover.Blocked })
	if !strings.HasPrefix(st.Failover.BlockedReason, "automatic failover is unsafe") {
		t.Fatalf("blocked reason %q", st.Failover.BlockedReason)
	}
	if _, err := h.coord.Failover(t.Context(), FailoverRequest{Force: true}); !errors.Is(err, ErrBadRequest) {
		t.Errorf("--force without --allow-data-loss: err %v", err)
	}

	type outcome struct {
		entry clusterstate.HistoryEntry
		err   error
	}
	done := make(chan outcome, 1)
	go func() {
		e, err := h.coord.Failover(context.Background(), FailoverRequest{Force: true, AllowDataLoss: true})
		done <- outcome{e, err}
	}()
	h.awaitState(func(st clusterstate.State) bool { return st.Failover != nil && st.Failover.Forced })
	h.drive(d, failoverEnded)
	res := <-done
	if res.err != nil || !res.entry.Forced || res.entry.NewPrimary != "pg2" {
		t.Fatalf("forced failover returned %+v, %v", res.entry, res.err)
	}
}

func TestOperatorRequestsAreValidated(t *testing.T) {
	h := newHarness(t)
	tests := []struct {
		req  FailoverRequest
		want error
	}{
		{FailoverRequest{To: "pg9"}, ErrBadRequest},
		{FailoverRequest{To: "pg1"}, ErrBadRequest},
		{FailoverRequest{AllowDataLoss: true}, ErrBadRequest},
	}
	for _, tt := range tests {
		if _, err := h.coord.Failover(t.Context(), tt.req); !errors.Is(err, tt.want) {
			t.Errorf("Failover(%+v): %v, want %v", tt.req, err, tt.want)
		}
	}
	if _, err := h.coord.Switchover(t.Context(), ""); !errors.Is(err, ErrBadRequest) {
		t.Errorf("switchover without target: %v", err)
	}
	h.raft.mustPropose(t, clusterstate.Command{BeginFailover: &clusterstate.BeginFailover{
		ExpectEpoch: 1, OldPrimary: "pg1", Kind: clusterstate.KindManual, At: t0}})
	if _, err := h.coord.Switchover(t.Context(), "pg2"); !errors.Is(err, ErrConflict) {
		t.Errorf("switchover during a failover: %v", err)
	}
	if _, err := h.coord.Failover(t.Context(), FailoverRequest{}); !errors.Is(err, ErrConflict) {
		t.Errorf("failover during a failover: %v", err)
	}
}

// runOperator runs f in a goroutine while d drives until the failover ends.
func runOperator(h *harness, d *driver, f func(ctx context.Context) (clusterstate.HistoryEntry, error)) (clusterstate.HistoryEntry, error) {
	type outcome struct {
		entry clusterstate.HistoryEntry
		err   error
	}
	done := make(chan outcome, 1)
	go func() {
		e, err := f(context.Background())
		done <- outcome{e, err}
	}()
	h.awaitState(func(st clusterstate.State) bool { return st.Failover != nil })
	h.drive(d, func(st clusterstate.State) bool { return st.Failover == nil })
	res := <-done
	return res.entry, res.err
}

func TestSwitchoverDemotesWaitsAndPromotesTheTarget(t *testing.T) {
	h := newHarness(t)
	d := newDriver(h.coord)
	entry, err := runOperator(h, d, func(ctx context.Context) (clusterstate.HistoryEntry, error) {
		return h.coord.Switchover(ctx, "pg3")
	})
	if err != nil {
		t.Fatal(err)
	}
	st := h.raft.State()
	if st.Primary != "pg3" || entry.Kind != clusterstate.KindSwitchover || entry.NewPrimary != "pg3" || !st.IsFenced("pg1") {
		t.Fatalf("primary %q, entry %+v", st.Primary, entry)
	}
	if !h.pg.node("pg1").readOnly {
		t.Error("old primary is not read-only")
	}
	if h.pg.node("pg3").lsn < 0x5000000 {
		t.Errorf("pg3 was promoted at %s, before the old primary's final LSN 0/5000000", h.pg.node("pg3").lsn)
	}
	if got := h.pg.node("pg3").syncNames; got != `ANY 1 ("pg2")` {
		t.Errorf("pg3 synchronous_standby_names = %s", got)
	}
	if got := h.pg.node("pg2").conninfo; !strings.Contains(got, "host='10.0.0.3'") {
		t.Errorf("pg2 does not follow pg3: %s", conninfo.Redact(got))
	}
	if entry.Steps[0].Step != clusterstate.StepDemoteOldPrimary {
		t.Errorf("first step %s", entry.Steps[0].Step)
	}
}

func TestSwitchoverAbortsWhenTheTargetCannotCatchUp(t *testing.T) {
	h := newHarness(t)
	// pg3 is behind and not streaming: it can never receive pg1's final LSN.
	h.pg.set("pg3", func(n *fakeNode) { n.conninfo = "" })
	// The first attempt to make pg1 read-write again fails; reconcile retries.
	failed := false
	h.pg.fail = func(call string) error {
		if call == "readwrite pg1" && !failed {
			failed = true
			return errors.New("connection reset")
		}
		return nil
	}
	d := newDriver(h.coord)
	_, err := runOperator(h, d, func(ctx context.Context) (clusterstate.HistoryEntry, error) {
		return h.coord.Switchover(ctx, "pg3")
	})
	var outcome *OutcomeError
	if !errors.As(err, &outcome) || outcome.Outcome != clusterstate.OutcomeAborted || !strings.Contains(outcome.Reason, "did not receive the final LSN") {
		t.Fatalf("err %v, want an aborted outcome", err)
	}
	st := h.raft.State()
	if st.Primary != "pg1" || st.Epoch != 3 || len(h.pg.promoted()) != 0 {
		t.Fatalf("primary %q epoch %d promoted %v", st.Primary, st.Epoch, h.pg.promoted())
	}
	if !h.pg.node("pg1").readOnly {
		t.Fatal("test setup: the first read-write attempt should have failed")
	}
	d.leaderStep(t.Context()) // reconcile
	if h.pg.node("pg1").readOnly {
		t.Error("reconcile did not make pg1 read-write after the aborted switchover")
	}
	if got := h.pg.node("pg3").conninfo; !strings.Contains(got, "host='10.0.0.1'") {
		t.Errorf("pg3 not unfrozen towards pg1: %s", conninfo.Redact(got))
	}
	if got := h.pg.node("pg2").conninfo; got != standbyConninfoFixture("pg2") {
		t.Errorf("pg2 was never frozen but its primary_conninfo changed: %s", conninfo.Redact(got))
	}
}

func TestReconcileRepointsStandbysThatDoNotFollowThePrimary(t *testing.T) {
	h := newHarness(t)
	h.coord.ReplicationUser = "rep"
	// pg3 was left frozen: up, in recovery, no WAL receiver.
	h.pg.set("pg3", func(n *fakeNode) { n.conninfo = "" })
	h.health.set("pg3", upStatus(health.Probe{Node: "pg3", At: t0, Reachable: true, InRecovery: true, Timeline: 1}))
	newDriver(h.coord).leaderStep(t.Context())
	got := h.pg.node("pg3").conninfo
	// pg2's captured primary_conninfo is the template; ReplicationUser overrides its
	// user, and the template's password, which belonged to the other user, is dropped.
	if want := "host='10.0.0.1' port='5432' user='rep' sslmode='disable' application_name='pg3'"; got != want {
		t.Errorf("pg3 primary_conninfo = %s, want %s", got, want)
	}
	if n := h.pg.callCount("repoint pg2"); n != 0 {
		t.Errorf("pg2 streams from the primary but was re-pointed %d times", n)
	}
}

func TestRepointedStandbysGetTheBackendTLSPolicy(t *testing.T) {
	h := newHarness(t)
	h.coord.StandbyTLS = conninfo.Params{{Key: "sslmode", Value: "verify-full"}, {Key: "sslrootcert", Value: "/etc/pg/ca.pem"}}
	h.pg.set("pg3", func(n *fakeNode) { n.conninfo = "" })
	h.health.set("pg3", upStatus(health.Probe{Node: "pg3", At: t0, Reachable: true, InRecovery: true, Timeline: 1}))
	newDriver(h.coord).leaderStep(t.Context())
	// The template (pg2's primary_conninfo) says sslmode=disable: the policy makes it
	// verify-full, with the CA path as the standby's host sees it.
	got := h.pg.node("pg3").conninfo
	want := "host='10.0.0.1' port='5432' user='replicator' password='s3cret' sslmode='verify-full' sslrootcert='/etc/pg/ca.pem' application_name='pg3'"
	if got != want {
		t.Errorf("pg3 primary_conninfo = %s\nwant                  %s", conninfo.Redact(got), conninfo.Redact(want))
	}
}

func TestFollowersDoNothing(t *testing.T) {
	h := newHarness(t)
	h.raft.leader = false
	h.primaryDown()
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	h.coord.Interval = 10 * time.Millisecond
	h.coord.Run(ctx)
	if st := h.raft.State(); st.Failover != nil || len(h.pg.calls) != 0 {
		t.Fatalf("a follower acted: failover %+v, calls %v", st.Failover, h.pg.calls)
	}
}

func TestRunDrivesAFailoverWithoutWaiting(t *testing.T) {
	h := newHarness(t)
	h.coord.Now = nil // real clock: observations must be fresh
	h.coord.Interval = time.Hour
	ctx, cancel := context.WithCancel(t.Context())
	stopped := make(chan struct{})
	go func() { defer close(stopped); h.coord.Run(ctx) }()
	h.pg.set("pg1", func(n *fakeNode) { n.down = true })
	start := time.Now()
	h.raft.mustPropose(t, reportCommand("pg1", 1, false, time.Now()))
	h.raft.mustPropose(t, reportCommand("pg1", 2, false, time.Now()))
	h.awaitState(failoverEnded)
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("failover with instant PostgreSQL took %v: steps wait for something", took)
	}
	cancel()
	<-stopped
	h.checkFailedOverToPG2(h.raft.State())
}

// TestNoStandbyIsFrozenBeforeEveryProxyIsFenced: the freeze step first waits for
// the routing fence (every proxy confirmed the failover's epoch or lost its lease);
// while the fence fails, no PostgreSQL node is touched, and the step's record says
// how the proxies were fenced.
func TestNoStandbyIsFrozenBeforeEveryProxyIsFenced(t *testing.T) {
	h := newHarness(t)
	h.primaryDown()
	h.raft.fenceErr = consensus.ErrNotLeader
	d := newDriver(h.coord)
	h.drive(d, func(st clusterstate.State) bool { return st.Failover != nil })
	began := h.raft.AppliedIndex()
	for range 3 {
		d.leaderStep(t.Context())
	}
	if len(h.pg.calls) != 0 {
		t.Fatalf("PostgreSQL actions %v before the routing fence succeeded", h.pg.calls)
	}
	if len(h.raft.fences) == 0 || h.raft.fences[0] < began {
		t.Fatalf("fences asked for %v, want at least the failover's index %d", h.raft.fences, began)
	}
	h.raft.mu.Lock()
	h.raft.fenceErr = nil
	h.raft.mu.Unlock()
	st := h.drive(d, failoverEnded)
	h.checkFailedOverToPG2(st)
	freeze := st.History[len(st.History)-1].Steps[0]
	if freeze.Step != clusterstate.StepFreeze || !strings.HasPrefix(freeze.Detail, "fenced in ") ||
		!strings.Contains(freeze.Detail, "confirmed by proxies 1, 2, 3") {
		t.Fatalf("freeze record %+v does not say how the proxies were fenced", freeze)
	}
}
