package health

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultInterval is how often the Monitor probes each node when
// MonitorConfig.Interval is zero.
const DefaultInterval = 500 * time.Millisecond

// MonitorNode is one PostgreSQL node to watch.
type MonitorNode struct {
	Name       string // the configured backend name
	ConnString string // see ProberConfig.ConnString
}

// MonitorConfig configures a Monitor. Zero fields take the defaults.
type MonitorConfig struct {
	Nodes    []MonitorNode
	Interval time.Duration // between the starts of two probes of one node (see probeLoop); default DefaultInterval
	Timeout  time.Duration // bound on one probe; default DefaultProbeTimeout
	// Detector sets the hysteresis and the clock. A zero DownAfter is derived
	// from the probes: FailAfter intervals, and at least one timeout plus one
	// interval, so a node that answers slowly but within the timeout is never
	// down by the time rule (500 ms probes with a 1 s timeout: 1.5 s).
	Detector DetectorConfig
	Logger   *slog.Logger // nil discards
}

// nodeProber is what the Monitor needs from a Prober; tests substitute a
// scripted one.
type nodeProber interface {
	Probe(ctx context.Context) Probe
	Close()
}

// NodeStatus is the Monitor's view of one node.
type NodeStatus struct {
	NodeVerdict
	Latest Probe // the most recent probe, successful or not; zero before the first one
}

// Monitor watches every configured PostgreSQL node.
//
// Run starts one goroutine per node, which owns that node's Prober and
// probes every Interval, each probe bounded by Timeout, so one hung node
// never delays the others. One more goroutine, the detector loop, owns the
// Detector and the queue of undelivered changes: it receives every probe,
// publishes it for Latest and Snapshot, and offers state changes on
// Changes. It never waits for the consumer of Changes: while the consumer
// is slow, at most one change per node waits, later ones merged into it
// (see Change.Coalesced).
type Monitor struct {
	nodes      []MonitorNode
	interval   time.Duration
	detector   *Detector
	logger     *slog.Logger
	probers    map[string]nodeProber
	checkEvery time.Duration
	// stallAfter: a detector loop that wakes this much later than its check
	// timer allows concludes that the process could not run (noticeStall).
	stallAfter time.Duration
	now        func() time.Time
	stallLog   time.Time // when a stall was last logged as a warning

	changes chan Change
	started atomic.Bool // set by the first Run

	mu       sync.Mutex // guards snapshot; held only to copy
	snapshot map[string]NodeStatus
}

// NewMonitor checks cfg and prepares one Prober per node. It does no I/O.
func NewMonitor(cfg MonitorConfig) (*Monitor, error) {
	if len(cfg.Nodes) == 0 {
		return nil, errors.New("health: monitor needs at least one node")
	}
	probers := map[string]nodeProber{}
	for _, node := range cfg.Nodes {
		if _, dup := probers[node.Name]; dup {
			return nil, fmt.Errorf("health: node %q listed twice", node.Name)
		}
		prober, err := NewProber(ProberConfig{Node: node.Name, ConnString: node.ConnString, Timeout: cfg.Timeout, Logger: cfg.Logger})
		if err != nil {
			return nil, err
		}
		probers[node.Name] = prober
	}
	return newMonitor(cfg, probers)
}

// newMonitor builds a Monitor around the given probers, one per node.
func newMonitor(cfg MonitorConfig, probers map[string]nodeProber) (*Monitor, error) {
	if cfg.Interval < 0 {
		return nil, fmt.Errorf("health: negative interval %v", cfg.Interval)
	}
	interval := cfg.Interval
	if interval == 0 {
		interval = DefaultInterval
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	names := make([]string, 0, len(cfg.Nodes))
	for _, node := range cfg.Nodes {
		names = append(names, node.Name)
	}
	if cfg.Detector.DownAfter <= 0 {
		failAfter := cfg.Detector.FailAfter
		if failAfter <= 0 {
			failAfter = DefaultFailAfter
		}
		timeout := cfg.Timeout
		if timeout <= 0 {
			timeout = DefaultProbeTimeout
		}
		cfg.Detector.DownAfter = max(time.Duration(failAfter)*interval, timeout+interval)
	}
	detector := NewDetector(cfg.Detector, names...)
	m := &Monitor{
		nodes:    cfg.Nodes,
		interval: interval,
		detector: detector,
		logger:   logger,
		probers:  probers,
		// The time rule is checked often enough that a silent node is
		// declared down within a small fraction of DownAfter.
		checkEvery: max(min(interval, detector.config.DownAfter)/5, time.Millisecond),
		stallAfter: max(interval/2, minStall),
		now:        detector.config.Now,
		changes:    make(chan Change),
		snapshot:   map[string]NodeStatus{},
	}
	m.publish()
	return m, nil
}

// Changes returns the stream of state changes. The channel is closed when
// Run returns; changes not yet taken then are dropped. The first change of
// every node is from HealthUnknown.
func (m *Monitor) Changes() <-chan Change {
	return m.changes
}

// Latest returns the most recent probe of every node that has been probed
// at least once: the place to read LSN progress, which is never a Change.
func (m *Monitor) Latest() map[string]Probe {
	m.mu.Lock()
	defer m.mu.Unlock()
	latest := make(map[string]Probe, len(m.snapshot))
	for node, status := range m.snapshot {
		if !status.Latest.At.IsZero() {
			latest[node] = status.Latest
		}
	}
	return latest
}

// Snapshot returns the detector's verdict and the latest probe of every
// configured node.
func (m *Monitor) Snapshot() map[string]NodeStatus {
	m.mu.Lock()
	defer m.mu.Unlock()
	snapshot := make(map[string]NodeStatus, len(m.snapshot))
	for node, status := range m.snapshot {
		snapshot[node] = status
	}
	return snapshot
}

// Run probes until ctx is done, then stops every goroutine it started,
// closes the probe connections and the Changes channel, and returns nil.
// Run may be called only once.
func (m *Monitor) Run(ctx context.Context) error {
	if !m.started.CompareAndSwap(false, true) {
		return errors.New("health: monitor already ran")
	}
	defer close(m.changes)

	probes := make(chan Probe, len(m.nodes))
	var probing sync.WaitGroup
	for _, node := range m.nodes {
		probing.Add(1)
		go func() {
			defer probing.Done()
			m.probeLoop(ctx, m.probers[node.Name], probes)
		}()
	}
	m.detectorLoop(ctx, probes)
	probing.Wait()
	return nil
}

// probeLoop is the goroutine of one node: probe, hand over, wait. It owns
// prober and closes it on the way out.
//
// The next probe starts one Interval after the previous one started, but
// never sooner than Interval/2 after it finished. So a probe that hung until
// its timeout is retried soon, yet two successes that end a Down are always
// at least Interval/2 apart: RecoverAfter counts probes spread over time,
// not a burst. After a failed probe the next one starts Interval/5 later, so
// that a dead node is confirmed down within about Interval + (FailAfter-1) *
// Interval/5 of its death instead of FailAfter intervals.
func (m *Monitor) probeLoop(ctx context.Context, prober nodeProber, probes chan<- Probe) {
	defer prober.Close()
	timer := time.NewTimer(0)
	defer timer.Stop()
	<-timer.C
	for {
		start := time.Now()
		probe := prober.Probe(ctx)
		if ctx.Err() != nil {
			return
		}
		select {
		case probes <- probe:
		case <-ctx.Done():
			return
		}
		next := max(m.interval-time.Since(start), m.interval/2)
		if !probe.Reachable {
			// Confirm a failure quickly: the detector needs FailAfter failures
			// in a row, and a dead primary should not wait FailAfter intervals.
			next = max(m.interval/5, time.Millisecond)
		}
		timer.Reset(next)
		select {
		case <-timer.C:
		case <-ctx.Done():
			return
		}
	}
}

// detectorLoop is the goroutine that owns the Detector and the change
// queue. It returns when ctx is done.
func (m *Monitor) detectorLoop(ctx context.Context, probes <-chan Probe) {
	var queue changeQueue
	check := time.NewTicker(m.checkEvery)
	defer check.Stop()
	lastWake := m.now()
	for {
		// Offer the oldest waiting change; a nil channel disables the case.
		var out chan<- Change
		next, waiting := queue.peek()
		if waiting {
			out = m.changes
		}
		var probe Probe
		var probed, checked bool
		select {
		case <-ctx.Done():
			return
		case out <- next:
			queue.pop()
		case probe = <-probes:
			probed = true
		case <-check.C:
			checked = true
		}
		// Before anything is judged: did this process run meanwhile?
		lastWake = m.noticeStall(lastWake)
		switch {
		case probed:
			m.record(probe)
			if change, ok := m.detector.Observe(probe); ok {
				m.logChange(change)
				queue.push(change)
			}
			m.publish()
		case checked:
			changes := m.detector.Check()
			for _, change := range changes {
				m.logChange(change)
				queue.push(change)
			}
			if len(changes) > 0 {
				m.publish()
			}
		}
	}
}

// minStall is the shortest delay noticeStall takes for a stall of the process.
const minStall = 100 * time.Millisecond

// noticeStall runs at every wake-up of the detector loop, whose check timer
// wakes it at least every checkEvery. A wake-up much later than that means
// this process did not run in between (a stopped process, a CPU or GC stall):
// the detector is told, so that the probes in flight do not count as failures
// and no node is down for a silence this process caused. It returns the time
// of this wake-up.
func (m *Monitor) noticeStall(lastWake time.Time) time.Time {
	now := m.now()
	if gap := now.Sub(lastWake); gap > m.checkEvery+m.stallAfter {
		m.detector.Stalled(now)
		level := slog.LevelDebug
		if now.Sub(m.stallLog) >= stallLogEvery {
			level, m.stallLog = slog.LevelWarn, now
		}
		m.logger.Log(context.Background(), level, "health: this process did not run for a while (stopped, or starved of CPU): "+
			"the probes in flight do not count as failures", "stalled", gap.Round(time.Millisecond))
	}
	return now
}

// stallLogEvery bounds the warnings about stalls of this process.
const stallLogEvery = 10 * time.Second

// record stores probe as the node's latest.
func (m *Monitor) record(probe Probe) {
	m.mu.Lock()
	defer m.mu.Unlock()
	status := m.snapshot[probe.Node]
	status.Latest = probe
	m.snapshot[probe.Node] = status
}

// publish copies the detector's verdicts into the snapshot.
func (m *Monitor) publish() {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, node := range m.nodes {
		verdict, _ := m.detector.Verdict(node.Name)
		status := m.snapshot[node.Name]
		status.NodeVerdict = verdict
		m.snapshot[node.Name] = status
	}
}

func (m *Monitor) logChange(c Change) {
	m.logger.Info("health: node state changed", "node", c.Node, "from", c.From.String(), "to", c.To.String(), "reason", c.Reason)
}
