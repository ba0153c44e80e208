package consensus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/pgquorum/pgquorum/pki"
	"github.com/pgquorum/pgquorum/testenv"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// Test timing: 20 ms ticks, so an election takes 200-400 ms plus a round trip.
const (
	testTick          = 20 * time.Millisecond
	testElectionTicks = 10
	testLease         = 150 * time.Millisecond
	testWait          = 15 * time.Second // bound for any single wait; never reached when healthy
)

// kvMachine is the tests' StateMachine: an append-only log of "key=value"
// payloads. It records apply-order violations instead of trusting the caller.
type kvMachine struct {
	mu         sync.Mutex
	values     []string
	lastIndex  uint64
	violations []string
}

func (m *kvMachine) Apply(index uint64, data []byte) ([]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if index <= m.lastIndex {
		m.violations = append(m.violations, fmt.Sprintf("index %d applied after %d", index, m.lastIndex))
	}
	m.lastIndex = index
	if v, ok := strings.CutPrefix(string(data), "needs-version:"); ok {
		m.lastIndex = index - 1 // not applied
		return nil, haltError(v)
	}
	if !strings.Contains(string(data), "=") {
		return nil, fmt.Errorf("payload %q is not key=value", data)
	}
	m.values = append(m.values, string(data))
	return []byte(strconv.Itoa(len(m.values))), nil
}

// haltError is what a state machine returns for an entry of a version it
// does not know.
type haltError string

func (e haltError) Error() string   { return "entry needs version " + string(e) }
func (e haltError) HaltApply() bool { return true }

type kvSnapshot struct {
	Values    []string `json:"values"`
	LastIndex uint64   `json:"last_index"`
}

func (m *kvMachine) Snapshot() ([]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return json.Marshal(kvSnapshot{Values: m.values, LastIndex: m.lastIndex})
}

func (m *kvMachine) Restore(data []byte) error {
	var s kvSnapshot
	if err := json.Unmarshal(data, &s); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.values = s.Values
	m.lastIndex = s.LastIndex
	return nil
}

func (m *kvMachine) snapshotValues() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.values)
}

func (m *kvMachine) problems() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.violations)
}

// testLogger writes warnings (or CONSENSUS_TEST_LOG=debug|info) to the test
// output.
func testLogger(t testing.TB) *slog.Logger {
	level := slog.LevelWarn
	switch os.Getenv("CONSENSUS_TEST_LOG") {
	case "debug":
		level = slog.LevelDebug
	case "info":
		level = slog.LevelInfo
	}
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: level}))
}

// testCluster runs Nodes on a memNetwork, each with its own DataDir and
// kvMachine. Cleanup closes every running node.
type testCluster struct {
	t        testing.TB
	net      *memNetwork
	dir      string
	peers    []Peer
	mu       sync.Mutex
	nodes    map[uint64]*testNode
	tweakCfg func(*Config)
	// tcp: real TCP on 127.0.0.1 instead of the memNetwork. listeners holds
	// the voters' listeners opened up front (used by their first start).
	tcp       bool
	listeners map[uint64]net.Listener
	ca        *pki.CA // tcp: the cluster CA; every node gets a certificate of its role
}

type testNode struct {
	id   uint64
	node *Node
	sm   *kvMachine
	cfg  Config
}

// newTestCluster starts voters 1..voters on a fresh network.
func newTestCluster(t testing.TB, voters int, tweak func(*Config)) *testCluster {
	c := &testCluster{
		t:        t,
		net:      newMemNetwork(1),
		dir:      t.TempDir(),
		nodes:    make(map[uint64]*testNode),
		tweakCfg: tweak,
	}
	for id := uint64(1); id <= uint64(voters); id++ {
		c.peers = append(c.peers, Peer{ID: id, Addr: fmt.Sprintf("mem-%d", id)})
	}
	t.Cleanup(c.closeAll)
	for _, p := range c.peers {
		c.start(p.ID, true)
	}
	return c
}

// newTCPTestCluster is newTestCluster over real TCP on 127.0.0.1: the
// voters' listeners are opened first so their addresses go into Peers.
func newTCPTestCluster(t testing.TB, voters int) *testCluster {
	c := &testCluster{
		t:         t,
		dir:       t.TempDir(),
		nodes:     make(map[uint64]*testNode),
		tcp:       true,
		listeners: make(map[uint64]net.Listener),
		ca:        testCA(t, "test"),
	}
	t.Cleanup(c.closeAll)
	for id := uint64(1); id <= uint64(voters); id++ {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("listen: %v", err)
		}
		c.listeners[id] = ln
		c.peers = append(c.peers, Peer{ID: id, Addr: ln.Addr().String()})
	}
	for _, p := range c.peers {
		c.start(p.ID, true)
	}
	return c
}

func (c *testCluster) config(id uint64, voter bool) Config {
	cfg := Config{
		ClusterName:   "test",
		NodeID:        id,
		DataDir:       filepath.Join(c.dir, fmt.Sprintf("node-%d", id)),
		Voter:         voter,
		AdvertiseAddr: fmt.Sprintf("mem-%d", id),
		Peers:         c.peers,
		TickInterval:  testTick,
		ElectionTicks: testElectionTicks,
		LeaseDuration: testLease,
		Logger:        testLogger(c.t).With("test_node", id),
	}
	if c.net != nil {
		cfg.Transport = c.net.factory()
	}
	if c.tcp {
		cfg.AdvertiseAddr = ""
		cfg.Transport = nil // NewTCPTransport on ListenAddr
		cfg.ListenAddr = "127.0.0.1:0"
		if i := slices.IndexFunc(c.peers, func(p Peer) bool { return p.ID == id }); i >= 0 {
			cfg.ListenAddr = c.peers[i].Addr // a restart listens on the same address again
		}
		if ln, ok := c.listeners[id]; ok {
			delete(c.listeners, id)
			cfg.Transport = TCPTransportOn(ln)
		}
		role := pki.RoleLearner
		if voter {
			role = pki.RoleVoter
		}
		cfg.PeerTLS = testCredentials(c.t, c.ca, id, role)
	}
	if c.tweakCfg != nil {
		c.tweakCfg(&cfg)
	}
	return cfg
}

// testCA makes a throwaway cluster CA.
func testCA(t testing.TB, cluster string) *pki.CA {
	t.Helper()
	ca, err := pki.NewCA(cluster, 1)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

// testCredentials issues node id a certificate of ca with role.
func testCredentials(t testing.TB, ca *pki.CA, id uint64, role pki.Role) *pki.Credentials {
	t.Helper()
	kp, err := ca.IssueNode(id, id, role, nil, 1)
	if err != nil {
		t.Fatal(err)
	}
	creds, err := pki.NewCredentials(ca.CertPEM(), kp.CertPEM, kp.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return creds
}

// start starts node id with a fresh state machine (its DataDir may hold state
// from an earlier run).
func (c *testCluster) start(id uint64, voter bool) *testNode {
	c.t.Helper()
	cfg := c.config(id, voter)
	sm := &kvMachine{}
	cfg.StateMachine = sm
	n, err := Start(context.Background(), cfg)
	if err != nil {
		c.t.Fatalf("start node %d: %v", id, err)
	}
	tn := &testNode{id: id, node: n, sm: sm, cfg: cfg}
	c.mu.Lock()
	c.nodes[id] = tn
	c.mu.Unlock()
	return tn
}

func (c *testCluster) get(id uint64) *testNode {
	c.mu.Lock()
	defer c.mu.Unlock()
	tn := c.nodes[id]
	if tn == nil {
		c.t.Fatalf("node %d is not running", id)
	}
	return tn
}

// running lists the ids of running nodes, sorted.
func (c *testCluster) running() []uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	var ids []uint64
	for id := range c.nodes {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

// crash stops node id without a leadership transfer, like kill -9 (bbolt
// commits are durable, so the disk holds what a real crash would leave).
func (c *testCluster) crash(id uint64) {
	tn := c.get(id)
	tn.node.stopLoop()
	<-tn.node.Done()
	c.mu.Lock()
	delete(c.nodes, id)
	c.mu.Unlock()
}

// stop closes node id cleanly.
func (c *testCluster) stop(id uint64) {
	tn := c.get(id)
	if err := tn.node.Close(); err != nil {
		c.t.Errorf("close node %d: %v", id, err)
	}
	c.mu.Lock()
	delete(c.nodes, id)
	c.mu.Unlock()
}

func (c *testCluster) closeAll() {
	var wg sync.WaitGroup
	for _, id := range c.running() {
		tn := c.get(id)
		wg.Go(func() {
			tn.node.stopLoop() // no leadership transfers during teardown
			<-tn.node.Done()
			if problems := tn.sm.problems(); len(problems) > 0 {
				c.t.Errorf("node %d applied out of order: %v", id, problems)
			}
		})
	}
	wg.Wait()
}

// waitLeader waits until every listed node (default: all running) reports
// the same leader, and returns it.
func (c *testCluster) waitLeader(ids ...uint64) uint64 {
	c.t.Helper()
	if len(ids) == 0 {
		ids = c.running()
	}
	var leader uint64
	waitFor(c.t, testWait, func() bool {
		leader = 0
		for _, id := range ids {
			st := c.get(id).node.Status()
			if st.Leader == 0 || (leader != 0 && st.Leader != leader) {
				return false
			}
			leader = st.Leader
		}
		return slices.Contains(c.running(), leader) // not a crashed one
	}, "nodes %v to agree on a running leader", ids)
	return leader
}

// propose proposes "key=value" through node id, retrying while no leader is
// known or the proposal is dropped, and fails the test after testWait.
func (c *testCluster) propose(id uint64, kv string) []byte {
	c.t.Helper()
	deadline := time.Now().Add(testWait)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		res, err := c.get(id).node.Propose(ctx, []byte(kv))
		cancel()
		if err == nil {
			return res
		}
		if !errors.Is(err, ErrNoLeader) && !errors.Is(err, ErrProposalDropped) || time.Now().After(deadline) {
			c.t.Fatalf("propose %q via node %d: %v", kv, id, err)
		}
		time.Sleep(testTick)
	}
}

// waitValues waits until every listed node (default: all running) has
// applied exactly want.
func (c *testCluster) waitValues(want []string, ids ...uint64) {
	c.t.Helper()
	if len(ids) == 0 {
		ids = c.running()
	}
	for _, id := range ids {
		tn := c.get(id)
		var got []string
		waitFor(c.t, testWait, func() bool {
			got = tn.sm.snapshotValues()
			return len(got) >= len(want)
		}, "node %d to apply %d values", id, len(want))
		if !slices.Equal(got, want) {
			c.t.Fatalf("node %d applied %v, want %v", id, got, want)
		}
	}
}

// waitFor waits (testenv.Eventually) until cond holds, failing after timeout.
func waitFor(t testing.TB, timeout time.Duration, cond func() bool, format string, args ...any) {
	t.Helper()
	testenv.Eventually(t, context.Background(), timeout, fmt.Sprintf(format, args...), testenv.Cond(cond))
}

func values(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s%d=v%d", prefix, i, i)
	}
	return out
}
