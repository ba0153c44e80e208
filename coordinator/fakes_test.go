package coordinator

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pgquorum/pgquorum/consensus"
	"github.com/pgquorum/pgquorum/consensus/clusterstate"
	"github.com/pgquorum/pgquorum/health"
)

// Fakes for the decision and driver tests: a Raft member that applies every
// proposal at once to a real clusterstate.Machine, PostgreSQL nodes modelled in
// memory, a health view and a clock. PostgreSQL itself is exercised by
// postgres_test.go and e2e_test.go.

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// fakeClock is a settable clock.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{now: t0} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// errCrash is what a fake proposal fails with when the test makes the proposer "crash".
var errCrash = errors.New("test: leader crashed")

// fakeRaft applies proposals synchronously to a clusterstate.Machine.
type fakeRaft struct {
	mu       sync.Mutex
	machine  *clusterstate.Machine
	index    uint64
	leader   bool
	members  []consensus.Member
	applied  chan struct{}
	done     chan struct{}
	commands []clusterstate.Command // every applied command, in order
	// beforeApply, when set, may refuse a proposal: it is then not applied and
	// Propose returns the error (a leader that crashed before proposing).
	beforeApply func(clusterstate.Command) error
	fences      []uint64 // indexes FenceRouting was asked for
	fenceErr    error    // when set, FenceRouting fails with it
}

func newFakeRaft(voters ...uint64) *fakeRaft {
	r := &fakeRaft{machine: clusterstate.NewMachine(), leader: true, applied: make(chan struct{}), done: make(chan struct{})}
	for _, id := range voters {
		r.members = append(r.members, consensus.Member{ID: id, Voter: true})
	}
	return r
}

func (r *fakeRaft) Status() consensus.Status {
	r.mu.Lock()
	defer r.mu.Unlock()
	return consensus.Status{ID: 1, IsLeader: r.leader, Leader: 1}
}

func (r *fakeRaft) Members() []consensus.Member {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.members)
}

func (r *fakeRaft) Applied() <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.applied
}

func (r *fakeRaft) Done() <-chan struct{} { return r.done }

// StatusChanged never fires: the tests set leader before Run.
func (r *fakeRaft) StatusChanged() <-chan struct{} { return nil }

func (r *fakeRaft) Propose(ctx context.Context, data []byte) ([]byte, error) {
	cmd, err := clusterstate.Decode(data)
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.beforeApply != nil {
		if err := r.beforeApply(cmd); err != nil {
			return nil, err
		}
	}
	r.index++
	out, err := r.machine.Apply(r.index, data)
	if err != nil {
		return nil, err
	}
	if res, _ := clusterstate.DecodeResult(out); res.Code == clusterstate.Applied {
		r.commands = append(r.commands, cmd)
	}
	close(r.applied)
	r.applied = make(chan struct{})
	return out, nil
}

func (r *fakeRaft) State() clusterstate.State { return r.machine.State() }

func (r *fakeRaft) AppliedIndex() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.index
}

// FenceRouting answers at once that every member confirmed, unless fenceErr
// says otherwise; fences records the indexes asked for.
func (r *fakeRaft) FenceRouting(ctx context.Context, index uint64) (consensus.FenceReport, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.fences = append(r.fences, index)
	if r.fenceErr != nil {
		return consensus.FenceReport{}, r.fenceErr
	}
	report := consensus.FenceReport{Index: index}
	for _, m := range r.members {
		report.Confirmed = append(report.Confirmed, m.ID)
	}
	return report, nil
}

// count returns how many applied commands satisfy match.
func (r *fakeRaft) count(match func(clusterstate.Command) bool) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, c := range r.commands {
		if match(c) {
			n++
		}
	}
	return n
}

func (r *fakeRaft) applyCount() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.commands)
}

// mustPropose applies cmd and fails the test unless it applied.
func (r *fakeRaft) mustPropose(t testing.TB, cmd clusterstate.Command) {
	t.Helper()
	data, err := clusterstate.Encode(cmd)
	if err != nil {
		t.Fatal(err)
	}
	out, err := r.Propose(context.Background(), data)
	if err != nil {
		t.Fatal(err)
	}
	if res, _ := clusterstate.DecodeResult(out); res.Code != clusterstate.Applied {
		t.Fatalf("command not applied: %s", res)
	}
}

// fakeNode is one modelled PostgreSQL node.
type fakeNode struct {
	inRecovery   bool
	conninfo     string // primary_conninfo; "" = frozen (or a primary)
	fileConninfo string // primary_conninfo in the configuration files (pg_file_settings)
	syncNames    string
	readOnly     bool
	timeline     uint32
	lsn          health.LSN // received (standby) or current (primary) WAL position
	down         bool
	promotions   int // transitions from standby to primary
}

// fakePG models PostgreSQL nodes for the driver. Every action is recorded in calls.
type fakePG struct {
	mu    sync.Mutex
	nodes map[string]*fakeNode
	calls []string
	// fail, when set, may fail an action ("freeze pg2") before it has any effect.
	fail func(call string) error
}

func (p *fakePG) node(name string) *fakeNode {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := *p.nodes[name]
	return &n
}

func (p *fakePG) set(name string, f func(n *fakeNode)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	f(p.nodes[name])
}

func (p *fakePG) begin(call, name string) (*fakeNode, error) {
	p.calls = append(p.calls, call+" "+name)
	if p.fail != nil {
		if err := p.fail(call + " " + name); err != nil {
			return nil, err
		}
	}
	n, ok := p.nodes[name]
	if !ok || n.down {
		return nil, fmt.Errorf("connect to %s: connection refused", name)
	}
	return n, nil
}

func (p *fakePG) callCount(prefix string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, c := range p.calls {
		if strings.HasPrefix(c, prefix) {
			n++
		}
	}
	return n
}

func (p *fakePG) FreezeStandby(_ context.Context, name string) (StandbyPosition, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	n, err := p.begin("freeze", name)
	if err != nil {
		return StandbyPosition{}, err
	}
	if !n.inRecovery {
		return StandbyPosition{InRecovery: false, Timeline: n.timeline, ReceiveLSN: n.lsn}, nil
	}
	prev := n.conninfo
	if prev == "" {
		prev = n.fileConninfo
	}
	n.conninfo = ""
	return StandbyPosition{InRecovery: true, PreviousConninfo: prev, Timeline: n.timeline, ReceiveLSN: n.lsn, ReplayLSN: n.lsn}, nil
}

// WaitReceived succeeds when the node has lsn, or streams (not frozen) from a live
// primary that has it: the model's standbys catch up instantly.
func (p *fakePG) WaitReceived(ctx context.Context, name string, lsn health.LSN) (health.LSN, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	n, err := p.begin("wait", name)
	if err != nil {
		return 0, err
	}
	if n.lsn < lsn && n.conninfo != "" && n.inRecovery {
		for _, other := range p.nodes {
			if !other.inRecovery && !other.down && other.lsn >= lsn {
				n.lsn = lsn
			}
		}
	}
	if n.lsn >= lsn {
		return n.lsn, nil
	}
	return n.lsn, fmt.Errorf("waiting until the standby received %s: %w", lsn, context.DeadlineExceeded)
}

func (p *fakePG) Promote(_ context.Context, name, syncNames string) (Promoted, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	n, err := p.begin("promote", name)
	if err != nil {
		return Promoted{}, err
	}
	n.syncNames = syncNames
	var horizon uint64
	if n.inRecovery {
		n.inRecovery = false
		n.timeline++
		n.promotions++
		horizon = 1000 + uint64(n.timeline)
	}
	return Promoted{Timeline: n.timeline, XidHorizon: horizon}, nil
}

func (p *fakePG) PrimaryConninfo(_ context.Context, name string) (string, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	n, err := p.begin("show", name)
	if err != nil {
		return "", err
	}
	return n.conninfo, nil
}

func (p *fakePG) SetPrimaryConninfo(_ context.Context, name, conninfo string, onlyIfFrozen bool) (bool, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	call := "repoint"
	if onlyIfFrozen {
		call = "repoint-if-frozen"
	}
	n, err := p.begin(call, name)
	if err != nil {
		return false, err
	}
	if !n.inRecovery {
		return false, errors.New("not a standby")
	}
	if n.conninfo == conninfo || (onlyIfFrozen && n.conninfo != "") {
		return false, nil
	}
	n.conninfo = conninfo
	return true, nil
}

func (p *fakePG) MakeReadOnly(_ context.Context, name string, _ time.Duration) (health.LSN, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	n, err := p.begin("readonly", name)
	if err != nil {
		return 0, err
	}
	n.readOnly = true
	return n.lsn, nil
}

func (p *fakePG) MakeReadWrite(_ context.Context, name string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	n, err := p.begin("readwrite", name)
	if err != nil {
		return err
	}
	n.readOnly = false
	return nil
}

// promoted lists the nodes that were promoted at least once.
func (p *fakePG) promoted() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var names []string
	for _, name := range slices.Sorted(maps.Keys(p.nodes)) {
		if p.nodes[name].promotions > 0 {
			names = append(names, name)
		}
	}
	return names
}

// standbyConninfoFixture is the primary_conninfo localcluster gives a standby.
func standbyConninfoFixture(name string) string {
	return "host=upstream port=5432 user=replicator password=s3cret application_name=" + name + " sslmode=disable"
}

// newFakePG models pg1 primary at lsn 0/5000000 and pg2 (0/5000000), pg3 (0/4000000) streaming.
func newFakePG() *fakePG {
	return &fakePG{nodes: map[string]*fakeNode{
		"pg1": {timeline: 1, lsn: 0x5000000, syncNames: "ANY 1 (pg2, pg3)"},
		"pg2": {inRecovery: true, timeline: 1, lsn: 0x5000000, conninfo: standbyConninfoFixture("pg2"), fileConninfo: standbyConninfoFixture("pg2")},
		"pg3": {inRecovery: true, timeline: 1, lsn: 0x4000000, conninfo: standbyConninfoFixture("pg3"), fileConninfo: standbyConninfoFixture("pg3")},
	}}
}

// fakeHealth is a settable HealthView.
type fakeHealth struct {
	mu       sync.Mutex
	statuses map[string]health.NodeStatus
}

func (h *fakeHealth) Snapshot() map[string]health.NodeStatus {
	h.mu.Lock()
	defer h.mu.Unlock()
	return maps.Clone(h.statuses)
}

func (h *fakeHealth) set(name string, s health.NodeStatus) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.statuses == nil {
		h.statuses = map[string]health.NodeStatus{}
	}
	h.statuses[name] = s
}

// primaryProbe is a successful probe of a primary with the given sync settings.
func primaryProbe(name, syncNames string, walsenders ...string) health.Probe {
	spec, err := health.ParseSyncStandbyNames(syncNames)
	p := health.Probe{Node: name, At: t0, Reachable: true, Timeline: 1, CurrentLSN: 0x5000000,
		SyncStandbyNames: syncNames, SyncSpec: spec, SynchronousCommit: "on"}
	if err != nil {
		p.SyncStandbyNamesErr = err.Error()
	}
	for _, w := range walsenders {
		p.Replication = append(p.Replication, health.Replica{ApplicationName: w, State: "streaming", SyncState: "quorum"})
	}
	return p
}

// upStatus is an up node whose latest probe is p.
func upStatus(p health.Probe) health.NodeStatus {
	return health.NodeStatus{
		NodeVerdict: health.NodeVerdict{State: health.NodeState{Health: health.HealthUp, InRecovery: p.InRecovery, Timeline: p.Timeline}, LastGood: p},
		Latest:      p,
	}
}

// downStatus is a down node whose last good probe was p.
func downStatus(p health.Probe) health.NodeStatus {
	return health.NodeStatus{
		NodeVerdict: health.NodeVerdict{State: health.NodeState{Health: health.HealthDown, InRecovery: p.InRecovery, Timeline: p.Timeline}, LastGood: p},
		Latest:      health.Probe{Node: p.Node, At: t0, Err: "connection refused"},
	}
}

// bootCommand bootstraps pg1 primary, pg2 (priority 10) and pg3 (priority 5).
func bootCommand() clusterstate.Command {
	return clusterstate.Command{Bootstrap: &clusterstate.Bootstrap{Primary: "pg1", Nodes: []clusterstate.NodeSpec{
		{Name: "pg1"}, {Name: "pg2", Priority: 10}, {Name: "pg3", Priority: 5},
	}}}
}

// reportCommand is proxy's observation of node at the given time.
func reportCommand(node string, proxy uint64, up bool, at time.Time) clusterstate.Command {
	return clusterstate.Command{ReportHealth: &clusterstate.ReportHealth{Node: node, Observation: clusterstate.Observation{
		Proxy: proxy, Up: up, InRecovery: node != "pg1", Timeline: 1, At: at,
	}}}
}
