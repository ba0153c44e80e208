package health

import (
	"context"
	"math"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/pgquorum/pgquorum/testenv"
)

// scriptedProber answers probes as the test says, without PostgreSQL. It
// stands in for a Prober only in tests of the Monitor's goroutines and
// channels; everything that talks to PostgreSQL is tested against a real
// server.
type scriptedProber struct {
	node   string
	mu     sync.Mutex
	fail   bool          // answer with a failure
	hang   time.Duration // block this long (or until ctx is done) before answering
	now    func() time.Time
	probes atomic.Int64
	closed atomic.Bool
}

func (s *scriptedProber) set(fail bool, hang time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fail, s.hang = fail, hang
}

func (s *scriptedProber) Probe(ctx context.Context) Probe {
	s.mu.Lock()
	fail, hang := s.fail, s.hang
	s.mu.Unlock()
	start := s.now()
	s.probes.Add(1)
	if hang > 0 {
		select {
		case <-time.After(hang):
		case <-ctx.Done():
		}
	}
	if fail || hang > 0 {
		return Probe{Node: s.node, At: start, Err: "scripted failure"}
	}
	return Probe{Node: s.node, At: start, Reachable: true, InRecovery: s.node != "pg1", Timeline: 1}
}

func (s *scriptedProber) Close() { s.closed.Store(true) }

// startScriptedMonitor runs a Monitor over scripted probers for pg1..pg3 and
// stops it when the test ends, checking that every goroutine is gone.
func startScriptedMonitor(t *testing.T) (*Monitor, map[string]*scriptedProber) {
	return startScriptedMonitorOn(t, time.Now, true)
}

// startScriptedMonitorOn is startScriptedMonitor with the clock now for the
// monitor, its detector and the probers; stallRule false turns off the
// detection of stalls of this process (noticeStall), for negative controls.
func startScriptedMonitorOn(t *testing.T, now func() time.Time, stallRule bool) (*Monitor, map[string]*scriptedProber) {
	t.Helper()
	probers := map[string]*scriptedProber{}
	asProbers := map[string]nodeProber{}
	var nodes []MonitorNode
	for _, name := range []string{"pg1", "pg2", "pg3"} {
		probers[name] = &scriptedProber{node: name, now: now}
		asProbers[name] = probers[name]
		nodes = append(nodes, MonitorNode{Name: name})
	}
	m, err := newMonitor(MonitorConfig{
		Nodes:    nodes,
		Interval: 5 * time.Millisecond,
		Detector: DetectorConfig{DownAfter: time.Second, Now: now},
	}, asProbers)
	if err != nil {
		t.Fatal(err)
	}
	if !stallRule {
		m.stallAfter = time.Duration(math.MaxInt64 / 2) // no wake-up is ever that late
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run = %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("Run did not return after cancel")
		}
		for name, p := range probers {
			if !p.closed.Load() {
				t.Errorf("prober %s not closed", name)
			}
		}
		if _, open := <-m.Changes(); open {
			t.Error("Changes not closed after Run returned")
		}
		goleak.VerifyNone(t, goleak.IgnoreCurrent())
	})
	return m, probers
}

// nextChange waits (bounded) for the next change.
func nextChange(t *testing.T, m *Monitor) Change {
	t.Helper()
	select {
	case c := <-m.Changes():
		return c
	case <-time.After(10 * time.Second):
		t.Fatal("no change within 10s")
		return Change{}
	}
}

// waitFor waits (testenv.Eventually) until cond holds, failing after 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testenv.Eventually(t, t.Context(), 10*time.Second, what, testenv.Cond(cond))
}

func healthOf(m *Monitor, node string) Health {
	return m.Snapshot()[node].State.Health
}

func TestMonitorReportsEachNodeUpOnce(t *testing.T) {
	m, _ := startScriptedMonitor(t)
	seen := map[string]Change{}
	for len(seen) < 3 {
		c := nextChange(t, m)
		if _, dup := seen[c.Node]; dup {
			t.Fatalf("second change for %s: %+v", c.Node, c)
		}
		if c.From.Health != HealthUnknown || c.To.Health != HealthUp {
			t.Fatalf("first change of %s = %v -> %v", c.Node, c.From, c.To)
		}
		seen[c.Node] = c
	}
	if seen["pg1"].To.InRecovery || !seen["pg2"].To.InRecovery {
		t.Fatalf("roles wrong: %+v", seen)
	}
	// Probes keep coming, but nothing changes, so no Change is sent.
	before := m.Latest()["pg2"].At
	waitFor(t, "newer probes", func() bool { return m.Latest()["pg2"].At.After(before) })
	select {
	case c := <-m.Changes():
		t.Fatalf("change without a state change: %+v", c)
	case <-time.After(50 * time.Millisecond):
	}
}

func TestMonitorSlowConsumerNeverBlocksProbingAndGetsTheNetChange(t *testing.T) {
	m, probers := startScriptedMonitor(t)
	for range 3 {
		nextChange(t, m) // the three Unknown -> Up
	}

	// Nobody reads Changes from here on. pg2 fails and recovers, pg3 fails.
	probers["pg2"].set(true, 0)
	waitFor(t, "pg2 down", func() bool { return healthOf(m, "pg2") == HealthDown })
	probers["pg3"].set(true, 0)
	waitFor(t, "pg3 down", func() bool { return healthOf(m, "pg3") == HealthDown })
	probers["pg2"].set(false, 0)
	waitFor(t, "pg2 up", func() bool { return healthOf(m, "pg2") == HealthUp })

	// Probing went on all along.
	count := probers["pg1"].probes.Load()
	waitFor(t, "more probes of pg1", func() bool { return probers["pg1"].probes.Load() > count+5 })

	// pg2's down-and-up cancelled out; pg3's down is waiting.
	c := nextChange(t, m)
	if c.Node != "pg3" || c.From.Health != HealthUp || c.To.Health != HealthDown {
		t.Fatalf("waiting change = %s %v -> %v, want pg3 up -> down", c.Node, c.From, c.To)
	}
	select {
	case c := <-m.Changes():
		t.Fatalf("unexpected change %s %v -> %v", c.Node, c.From, c.To)
	case <-time.After(50 * time.Millisecond):
	}
}

func TestMonitorHungNodeDoesNotDelayTheOthers(t *testing.T) {
	m, probers := startScriptedMonitor(t)
	for range 3 {
		nextChange(t, m)
	}
	probers["pg1"].set(false, time.Hour) // every probe of pg1 hangs until Run stops
	start := time.Now()
	c := nextChange(t, m)
	if c.Node != "pg1" || c.To.Health != HealthDown || !strings.Contains(c.Reason, "no successful probe for") {
		t.Fatalf("change = %+v, want pg1 down by the time rule", c)
	}
	if elapsed := time.Since(start); elapsed > 5*time.Second {
		t.Fatalf("pg1 went down after %v, DownAfter is 1s", elapsed)
	}
	count := probers["pg2"].probes.Load()
	waitFor(t, "probes of pg2 while pg1 hangs", func() bool { return probers["pg2"].probes.Load() > count+5 })
	if got := m.Snapshot()["pg2"].State.Health; got != HealthUp {
		t.Fatalf("pg2 = %v", got)
	}
}

// jumpClock is the real clock plus an offset the test moves forward: what a
// process sees after it was stopped (SIGSTOP) or starved of CPU for a while.
type jumpClock struct{ offset atomic.Int64 }

func (c *jumpClock) Now() time.Time       { return time.Now().Add(time.Duration(c.offset.Load())) }
func (c *jumpClock) Jump(d time.Duration) { c.offset.Add(int64(d)) }
func probesOf(p *scriptedProber) int64    { return p.probes.Load() }
func probeCounts(ps map[string]*scriptedProber) map[string]int64 {
	counts := map[string]int64{}
	for name, p := range ps {
		counts[name] = probesOf(p)
	}
	return counts
}

// A process that did not run for 10 s (its probes in flight time out, nobody
// probed, the time rule's silence is long over) reports no node down: it could
// not run, the nodes did not fail to answer. The root cause of proxies that
// reported the primary down when they were resumed after a SIGSTOP.
func TestMonitorAProcessThatDidNotRunReportsNobodyDown(t *testing.T) {
	m, seen := stallScenario(t, true)
	for _, c := range seen {
		t.Errorf("change after the stall: %s %v -> %v (%s)", c.Node, c.From, c.To, c.Reason)
	}
	for _, node := range []string{"pg1", "pg2", "pg3"} {
		if h := healthOf(m, node); h != HealthUp {
			t.Errorf("%s is %v after the stall", node, h)
		}
	}
}

// The negative control of the test above: without the stall rule the same
// scenario reports nodes down, so that test can fail.
func TestMonitorWithoutTheStallRuleAStallReportsNodesDown(t *testing.T) {
	_, seen := stallScenario(t, false)
	for _, c := range seen {
		if c.To.Health == HealthDown {
			return
		}
	}
	t.Fatalf("no node reported down after a 10 s stall without the stall rule; changes: %+v", seen)
}

// stallScenario makes every probe hang then fail, moves the clock 10 s
// forward while those probes are in flight (what a process sees after it was
// stopped), then lets probes succeed. It returns the monitor and every change it reported after start.
func stallScenario(t *testing.T, stallRule bool) (*Monitor, []Change) {
	clock := &jumpClock{}
	m, probers := startScriptedMonitorOn(t, clock.Now, stallRule)
	for range 3 {
		nextChange(t, m) // the three Unknown -> Up
	}
	// Take every change as it comes (a slow reader would see a down and
	// the up after it cancel out).
	var mu sync.Mutex
	var seen []Change
	go func() {
		for c := range m.Changes() {
			mu.Lock()
			seen = append(seen, c)
			mu.Unlock()
		}
	}()
	// Every probe now hangs, then fails: an answer nobody read in time.
	before := probeCounts(probers)
	for _, p := range probers {
		p.set(true, 50*time.Millisecond)
	}
	waitFor(t, "a failing probe in flight on every node", func() bool {
		for name, p := range probers {
			if probesOf(p) < before[name]+2 {
				return false
			}
		}
		return true
	})
	clock.Jump(10 * time.Second)
	for _, p := range probers {
		p.set(false, 0)
	}
	after := probeCounts(probers)
	waitFor(t, "probes after the stall", func() bool {
		for name, p := range probers {
			if probesOf(p) < after[name]+5 {
				return false
			}
		}
		return true
	})
	mu.Lock()
	defer mu.Unlock()
	return m, slices.Clone(seen)
}

func TestMonitorRunsOnce(t *testing.T) {
	m, _ := startScriptedMonitor(t)
	nextChange(t, m) // Run is under way
	if err := m.Run(context.Background()); err == nil {
		t.Fatal("second Run succeeded")
	}
}

func TestNewMonitorChecksItsConfig(t *testing.T) {
	tests := []struct {
		name string
		cfg  MonitorConfig
		want string
	}{
		{"no nodes", MonitorConfig{}, "at least one node"},
		{"duplicate", MonitorConfig{Nodes: []MonitorNode{{Name: "a", ConnString: "host=127.0.0.1"}, {Name: "a", ConnString: "host=127.0.0.1"}}}, "twice"},
		{"no name", MonitorConfig{Nodes: []MonitorNode{{ConnString: "host=127.0.0.1"}}}, "node name"},
		{"bad conn string", MonitorConfig{Nodes: []MonitorNode{{Name: "a", ConnString: "host=127.0.0.1 port=x"}}}, "a:"},
		{"negative interval", MonitorConfig{Nodes: []MonitorNode{{Name: "a", ConnString: "host=127.0.0.1"}}, Interval: -1}, "negative interval"},
		{"negative timeout", MonitorConfig{Nodes: []MonitorNode{{Name: "a", ConnString: "host=127.0.0.1"}}, Timeout: -1}, "negative timeout"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewMonitor(tt.cfg)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("NewMonitor = %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

func TestNewProberNeverEchoesThePassword(t *testing.T) {
	_, err := NewProber(ProberConfig{Node: "a", ConnString: "host=127.0.0.1 password=hunter2 port=notaport"})
	if err == nil {
		t.Fatal("bad port accepted")
	}
	if strings.Contains(err.Error(), "hunter2") {
		t.Fatalf("error reveals the password: %v", err)
	}
}
