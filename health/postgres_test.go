package health

import (
	"context"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/pgquorum/pgquorum/integration"
	"github.com/pgquorum/pgquorum/localcluster"
)

// The tests in this file run against a real PostgreSQL 15 quorum cluster
// (pg1 primary; pg2, pg3 standbys; 'ANY 1 (pg2, pg3)').

var clusterNodes = []string{"pg1", "pg2", "pg3"}

func queryConnString(n *localcluster.Node) string {
	return n.ConnString(localcluster.QueryUser, localcluster.QueryPassword, "postgres")
}

func newTestProber(t *testing.T, n *localcluster.Node, timeout time.Duration) *Prober {
	t.Helper()
	p, err := NewProber(ProberConfig{Node: n.Name, ConnString: queryConnString(n), Timeout: timeout})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

func mustProbe(t *testing.T, p *Prober) Probe {
	t.Helper()
	probe := p.Probe(t.Context())
	if !probe.Reachable {
		t.Fatalf("probe of %s failed: %s", probe.Node, probe.Err)
	}
	return probe
}

// pollProbe probes until cond holds, failing after 20 s.
func pollProbe(t *testing.T, p *Prober, what string, cond func(Probe) bool) Probe {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		probe := p.Probe(t.Context())
		if probe.Reachable && cond(probe) {
			return probe
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s; last probe %+v", what, probe)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestProbeRealCluster(t *testing.T) {
	c := integration.StartCluster(t, localcluster.Options{})
	ctx := t.Context()
	probers := map[string]*Prober{}
	for _, n := range c.Nodes {
		probers[n.Name] = newTestProber(t, n, 5*time.Second)
	}
	pg1 := c.Node("pg1")

	t.Run("primary", func(t *testing.T) {
		p := mustProbe(t, probers["pg1"])
		if p.Role() != "primary" || p.InRecovery || p.Timeline != 1 || p.CurrentLSN == 0 {
			t.Fatalf("primary probe = %+v", p)
		}
		if p.ServerVersionNum/10000 != 15 || !strings.HasPrefix(p.ServerVersion, "15.") {
			t.Errorf("version = %d %q", p.ServerVersionNum, p.ServerVersion)
		}
		if p.WalReceiver != nil {
			t.Errorf("a primary has a WAL receiver: %+v", p.WalReceiver)
		}
		if p.SyncStandbyNames != c.SyncStandbyNames() || p.SyncStandbyNamesErr != "" || !reflect.DeepEqual(p.SyncSpec, AnyOf(1, "pg2", "pg3")) {
			t.Errorf("sync names %q parsed as %#v (%s)", p.SyncStandbyNames, p.SyncSpec, p.SyncStandbyNamesErr)
		}
		if p.SynchronousCommit != "on" {
			t.Errorf("synchronous_commit = %q", p.SynchronousCommit)
		}
		if len(p.Replication) != 2 {
			t.Fatalf("pg_stat_replication = %+v, want pg2 and pg3", p.Replication)
		}
		for i, name := range []string{"pg2", "pg3"} {
			r := p.Replication[i]
			if r.ApplicationName != name || r.ClientAddr != "127.0.0.1" || r.State != "streaming" || r.SyncState != "quorum" ||
				r.SyncPriority != 1 || r.FlushLSN == 0 || r.SentLSN < r.FlushLSN {
				t.Errorf("replication row %d = %+v", i, r)
			}
		}
		if hazards := FailoverHazards(p, clusterNodes); len(hazards) != 0 {
			t.Errorf("hazards on a healthy quorum cluster: %q", hazards)
		}
		q, err := QuorumFor(p.SyncSpec, clusterNodes, "pg1")
		if err != nil || q.RequiredReachable() != 2 {
			t.Errorf("quorum = %+v, %v; want 2 of pg2, pg3 required", q, err)
		}
	})

	t.Run("standbys", func(t *testing.T) {
		for _, name := range []string{"pg2", "pg3"} {
			p := pollProbe(t, probers[name], name+" streaming", func(p Probe) bool {
				return p.WalReceiver != nil && p.WalReceiver.Status == "streaming"
			})
			if p.Role() != "standby" || p.Timeline != 1 || p.CurrentLSN != 0 || p.ReceiveLSN == 0 || p.ReplayLSN == 0 {
				t.Errorf("%s probe = %+v", name, p)
			}
			w := p.WalReceiver
			if w.SenderHost != "127.0.0.1" || w.SenderPort != pg1.Port || w.ApplicationName != name || w.ReceivedTimeline != 1 || w.FlushedLSN == 0 {
				t.Errorf("%s WAL receiver = %+v, want streaming from 127.0.0.1:%d as %s", name, w, pg1.Port, name)
			}
			if len(p.Replication) != 0 {
				t.Errorf("%s has walsenders: %+v", name, p.Replication)
			}
		}
	})

	t.Run("LSNs advance after a write", func(t *testing.T) {
		before := mustProbe(t, probers["pg1"])
		if err := pg1.Exec(ctx, "CREATE TABLE probe_test AS SELECT g FROM generate_series(1, 1000) g"); err != nil {
			t.Fatal(err)
		}
		after := mustProbe(t, probers["pg1"])
		if after.CurrentLSN <= before.CurrentLSN {
			t.Fatalf("primary LSN %v -> %v after a write", before.CurrentLSN, after.CurrentLSN)
		}
		for _, name := range []string{"pg2", "pg3"} {
			p := pollProbe(t, probers[name], name+" catching up", func(p Probe) bool {
				return p.ReceiveLSN >= after.CurrentLSN && p.ReplayLSN >= after.CurrentLSN
			})
			t.Logf("%s received %v, replayed %v (primary at %v)", name, p.ReceiveLSN, p.ReplayLSN, after.CurrentLSN)
		}
		pollProbe(t, probers["pg1"], "walsenders confirming the write", func(p Probe) bool {
			return len(p.Replication) == 2 && p.Replication[0].FlushLSN >= after.CurrentLSN && p.Replication[1].FlushLSN >= after.CurrentLSN
		})
	})

	t.Run("one connection is reused between probes", func(t *testing.T) {
		p := newTestProber(t, c.Node("pg2"), 5*time.Second)
		for range 5 {
			mustProbe(t, p)
		}
		conn, err := c.Node("pg2").Conn(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(ctx)
		var n int
		if err := conn.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1", DefaultProbeApplicationName).Scan(&n); err != nil {
			t.Fatal(err)
		}
		// The subtest's prober and the one of the enclosing test.
		if n != 2 {
			t.Fatalf("%d probe connections to pg2, want 2", n)
		}
	})

	t.Run("a role without pg_monitor still gets an answer", func(t *testing.T) {
		if err := pg1.Exec(ctx, "CREATE ROLE plain LOGIN PASSWORD 'plain-secret'"); err != nil {
			t.Fatal(err)
		}
		for _, n := range c.Nodes {
			p, err := NewProber(ProberConfig{Node: n.Name, ConnString: n.ConnString("plain", "plain-secret", "postgres")})
			if err != nil {
				t.Fatal(err)
			}
			// The role reaches the standbys through replication.
			probe := pollProbe(t, p, "a probe as plain on "+n.Name, func(Probe) bool { return true })
			p.Close()
			if probe.InRecovery != (n.Name != "pg1") || probe.Timeline != 1 {
				t.Errorf("%s as plain: %+v", n.Name, probe)
			}
			if n.Name == "pg1" {
				// Walsenders are listed, but their details are hidden.
				if len(probe.Replication) != 2 || probe.Replication[0].FlushLSN != 0 {
					t.Errorf("pg1 walsenders as plain: %+v", probe.Replication)
				}
			} else if probe.WalReceiver != nil || probe.ReceiveLSN == 0 {
				t.Errorf("%s as plain: WAL receiver %+v, receive LSN %v", n.Name, probe.WalReceiver, probe.ReceiveLSN)
			}
		}
	})

	t.Run("parser agrees with PostgreSQL", func(t *testing.T) {
		// ALTER SYSTEM runs PostgreSQL's own check of the value (and only
		// writes postgresql.auto.conf, which nobody reloads here).
		pg3 := c.Node("pg3")
		t.Cleanup(func() {
			if err := pg3.Exec(context.Background(), "ALTER SYSTEM RESET synchronous_standby_names"); err != nil {
				t.Errorf("reset: %v", err)
			}
		})
		checked := 0
		for _, tt := range syncNamesCases {
			if strings.ContainsAny(tt.in, "\n\x00") {
				continue // ALTER SYSTEM refuses newlines; NUL cannot be sent at all
			}
			if tt.postgresDiffers != "" {
				t.Logf("%q: not compared: %s", tt.in, tt.postgresDiffers)
				continue
			}
			literal := "'" + strings.ReplaceAll(tt.in, "'", "''") + "'"
			pgErr := pg3.Exec(ctx, "ALTER SYSTEM SET synchronous_standby_names = "+literal)
			_, ourErr := ParseSyncStandbyNames(tt.in)
			if (pgErr == nil) != (ourErr == nil) {
				t.Errorf("%q: PostgreSQL says %v, we say %v", tt.in, pgErr, ourErr)
			}
			checked++
		}
		if checked < 40 {
			t.Fatalf("only %d values checked", checked)
		}
	})

	// Last, because it changes the topology. This is the coordinator's
	// failover by hand: freeze pg3, wait until pg2 has all pg3 has, promote
	// pg2 (timeline 2, next to pg1 which stays a primary on timeline 1),
	// point pg3 at pg2, freeze pg3 again.
	t.Run("timelines across a promotion", func(t *testing.T) {
		pg2, pg3 := c.Node("pg2"), c.Node("pg3")
		setUpstream := func(conninfo string) {
			t.Helper()
			if err := pg3.Exec(ctx, "ALTER SYSTEM SET primary_conninfo = '"+conninfo+"'"); err != nil {
				t.Fatal(err)
			}
			if err := pg3.Exec(ctx, "SELECT pg_reload_conf()"); err != nil {
				t.Fatal(err)
			}
		}
		setUpstream("")
		frozen := pollProbe(t, probers["pg3"], "pg3 without a WAL receiver", func(p Probe) bool { return p.WalReceiver == nil })
		pollProbe(t, probers["pg2"], "pg2 to have everything pg3 has", func(p Probe) bool {
			return p.ReplayLSN >= max(frozen.ReceiveLSN, frozen.ReplayLSN)
		})
		if err := pg2.Promote(ctx); err != nil {
			t.Fatal(err)
		}
		// The primary's timeline changes at once; pg_control_checkpoint()
		// would still say 1 until the end-of-recovery checkpoint is done.
		p := mustProbe(t, probers["pg2"])
		if p.Role() != "primary" || p.Timeline != 2 || p.CurrentLSN == 0 {
			t.Fatalf("promoted pg2 = %+v", p)
		}

		setUpstream(fmt.Sprintf("host=127.0.0.1 port=%d user=%s application_name=pg3 sslmode=disable", pg2.Port, localcluster.ReplicationUser))
		following := pollProbe(t, probers["pg3"], "pg3 streaming timeline 2 from pg2", func(p Probe) bool {
			return p.WalReceiver != nil && p.WalReceiver.Status == "streaming" && p.WalReceiver.SenderPort == pg2.Port && p.Timeline == 2
		})
		if following.WalReceiver.ReceivedTimeline != 2 {
			t.Fatalf("pg3 following pg2 = %+v", following.WalReceiver)
		}

		// Frozen again: no WAL receiver, yet the timeline stays 2 (from
		// pg_wal) while pg_control_checkpoint() still says 1.
		setUpstream("")
		frozen = pollProbe(t, probers["pg3"], "pg3 without a WAL receiver", func(p Probe) bool { return p.WalReceiver == nil })
		conn, err := pg3.Conn(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(ctx)
		var checkpointTimeline int
		if err := conn.QueryRow(ctx, "SELECT timeline_id FROM pg_control_checkpoint()").Scan(&checkpointTimeline); err != nil {
			t.Fatal(err)
		}
		t.Logf("frozen pg3: pg_control_checkpoint() says timeline %d, the probe says %d", checkpointTimeline, frozen.Timeline)
		if frozen.Timeline != 2 || frozen.ReceiveLSN < following.ReceiveLSN {
			t.Fatalf("frozen pg3 = timeline %d, receive LSN %v (was %v)", frozen.Timeline, frozen.ReceiveLSN, following.ReceiveLSN)
		}

		// pg1 did not notice anything: still a primary on timeline 1.
		if p := mustProbe(t, probers["pg1"]); p.Role() != "primary" || p.Timeline != 1 {
			t.Fatalf("pg1 = %+v", p)
		}
	})
}

// changeLog collects a Monitor's changes in the background, so the test
// can wait for a given change and look at everything that happened.
type changeLog struct {
	changes chan Change
}

func watchChanges(m *Monitor) *changeLog {
	l := &changeLog{changes: make(chan Change, 100)}
	go func() {
		for c := range m.Changes() {
			l.changes <- c
		}
		close(l.changes)
	}()
	return l
}

// await returns the next change, which must be of node to health within
// limit.
func (l *changeLog) await(t *testing.T, node string, to Health, limit time.Duration) Change {
	t.Helper()
	select {
	case c, ok := <-l.changes:
		if !ok {
			t.Fatal("Changes closed")
		}
		if c.Node != node || c.To.Health != to {
			t.Fatalf("change = %s %v -> %v (%s), want %s to %v", c.Node, c.From, c.To, c.Reason, node, to)
		}
		return c
	case <-time.After(limit):
		t.Fatalf("%s did not become %v within %v", node, to, limit)
		return Change{}
	}
}

func (l *changeLog) expectNone(t *testing.T) {
	t.Helper()
	select {
	case c := <-l.changes:
		t.Fatalf("unexpected change %s %v -> %v (%s)", c.Node, c.From, c.To, c.Reason)
	default:
	}
}

func TestMonitorRealCluster(t *testing.T) {
	c := integration.StartCluster(t, localcluster.Options{})
	ctx := t.Context()
	goroutinesBefore := goleak.IgnoreCurrent()
	var nodes []MonitorNode
	for _, n := range c.Nodes {
		nodes = append(nodes, MonitorNode{Name: n.Name, ConnString: queryConnString(n)})
	}
	m, err := NewMonitor(MonitorConfig{Nodes: nodes, Interval: 100 * time.Millisecond}) // default timeout and thresholds
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	var runErr error
	ran := make(chan struct{})
	go func() {
		defer close(ran)
		runErr = m.Run(runCtx)
	}()
	t.Cleanup(func() {
		stop()
		select {
		case <-ran:
		case <-time.After(10 * time.Second):
			t.Error("Run did not return within 10s of cancel")
		}
	})
	changes := watchChanges(m)

	// Every node comes up once, with its role.
	up := map[string]Change{}
	for range 3 {
		select {
		case ch := <-changes.changes:
			up[ch.Node] = ch
		case <-time.After(20 * time.Second):
			t.Fatalf("only %d nodes came up: %+v", len(up), up)
		}
	}
	for _, name := range clusterNodes {
		ch := up[name]
		if ch.From.Health != HealthUnknown || ch.To.Health != HealthUp || ch.To.InRecovery != (name != "pg1") || ch.To.Timeline != 1 {
			t.Fatalf("first change of %s = %+v", name, ch)
		}
	}

	// LSN progress shows in Latest, not as changes.
	pg1 := c.Node("pg1")
	if err := pg1.Exec(ctx, "CREATE TABLE monitor_test AS SELECT g FROM generate_series(1, 1000) g"); err != nil {
		t.Fatal(err)
	}
	var primaryLSN LSN
	deadline := time.Now().Add(20 * time.Second)
	for {
		latest := m.Latest()
		if primaryLSN == 0 && latest["pg1"].CurrentLSN > up["pg1"].Probe.CurrentLSN {
			primaryLSN = latest["pg1"].CurrentLSN
		}
		if primaryLSN != 0 && latest["pg2"].ReceiveLSN >= primaryLSN && latest["pg3"].ReceiveLSN >= primaryLSN {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("LSN progress not visible in Latest: %+v", latest)
		}
		time.Sleep(20 * time.Millisecond)
	}
	changes.expectNone(t)

	// A killed standby goes down once and comes back up once.
	pg3 := c.Node("pg3")
	killed := time.Now()
	if err := pg3.Kill(); err != nil {
		t.Fatal(err)
	}
	down := changes.await(t, "pg3", HealthDown, 10*time.Second)
	t.Logf("pg3 down %v after kill: %s", time.Since(killed).Round(time.Millisecond), down.Reason)
	if !down.To.InRecovery || down.To.Timeline != 1 {
		t.Errorf("down state %v lost the last known role", down.To)
	}
	if err := pg3.Start(ctx); err != nil {
		t.Fatal(err)
	}
	started := time.Now()
	changes.await(t, "pg3", HealthUp, 10*time.Second)
	t.Logf("pg3 up %v after start", time.Since(started).Round(time.Millisecond))

	// A probe of a frozen primary is bounded by its timeout.
	direct := newTestProber(t, pg1, 500*time.Millisecond)
	mustProbe(t, direct) // connected before the freeze
	frozen := time.Now()
	if err := pg1.Freeze(); err != nil {
		t.Fatal(err)
	}
	probeStart := time.Now()
	p := direct.Probe(ctx)
	elapsed := time.Since(probeStart)
	if p.Reachable || !strings.Contains(p.Err, "no answer within 500ms") {
		t.Errorf("probe of a frozen primary = %+v", p)
	}
	if elapsed > 2*time.Second || p.Duration > time.Second {
		t.Errorf("probe of a frozen primary took %v (reported %v), timeout 500ms", elapsed, p.Duration)
	}

	// The monitor declares the frozen primary down, and up again after thaw.
	down = changes.await(t, "pg1", HealthDown, 10*time.Second)
	t.Logf("pg1 down %v after freeze: %s", time.Since(frozen).Round(time.Millisecond), down.Reason)
	if err := pg1.Thaw(); err != nil {
		t.Fatal(err)
	}
	thawed := time.Now()
	changes.await(t, "pg1", HealthUp, 10*time.Second)
	t.Logf("pg1 up %v after thaw", time.Since(thawed).Round(time.Millisecond))
	mustProbe(t, direct) // the direct prober reconnects too

	// Nothing else happened: pg2 never changed.
	changes.expectNone(t)
	if s := m.Snapshot(); s["pg2"].State.Health != HealthUp || s["pg1"].State.Health != HealthUp || s["pg3"].State.Health != HealthUp {
		t.Fatalf("snapshot = %+v", s)
	}

	// Run stops with its context and closes Changes.
	stop()
	select {
	case <-ran:
		if runErr != nil {
			t.Fatalf("Run = %v", runErr)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not stop")
	}
	for range changes.changes {
	}
	// Every probing goroutine is gone, pgconn's connection cleanup included.
	goleak.VerifyNone(t, goroutinesBefore)
}
