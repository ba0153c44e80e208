package consensus

import (
	"bufio"
	"context"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.etcd.io/raft/v3/raftpb"

	"github.com/pgquorum/pgquorum/pki"
)

func TestClusterOverTCP(t *testing.T) {
	t.Parallel()
	c := newTCPTestCluster(t, 3)
	leader := c.waitLeader()
	follower := without(c.running(), leader)[0]
	want := values("tcp", 5)
	for _, kv := range want {
		c.propose(follower, kv) // forwarded to the leader over TCP
	}
	c.waitValues(want)

	// A node of another cluster is refused at the handshake and never joins.
	foreign := c.config(50, false)
	foreign.ClusterName = "other"
	foreign.PeerTLS = testCredentials(t, testCA(t, "other"), 50, pki.RoleLearner)
	foreign.Logger = testLogger(t).With("test_node", 50, "note", "expected to be rejected")
	foreignSM := &kvMachine{}
	foreign.StateMachine = foreignSM
	foreignNode, err := Start(context.Background(), foreign)
	if err != nil {
		t.Fatalf("start foreign node: %v", err)
	}
	defer foreignNode.Close()

	// A learner on an ephemeral port joins, advertising its actual address.
	c.start(20, false)
	waitFor(t, testWait, func() bool { return c.get(20).node.Status().Member }, "learner to join over TCP")
	c.waitValues(want, 20)
	members := c.get(leader).node.Members()
	i := slices.IndexFunc(members, func(m Member) bool { return m.ID == 20 })
	if i < 0 || members[i].Addr != c.get(20).node.Addr() {
		t.Fatalf("leader's members %+v: want learner 20 at %s", members, c.get(20).node.Addr())
	}

	// A crashed follower restarts on the same address; peers reconnect.
	c.crash(follower)
	more := values("again", 3)
	for _, kv := range more {
		c.propose(leader, kv)
	}
	c.start(follower, true)
	c.waitValues(append(slices.Clone(want), more...))

	if foreignNode.Status().Member || len(foreignSM.snapshotValues()) != 0 {
		t.Fatalf("node of another cluster joined: %+v", foreignNode.Status())
	}
	for _, m := range c.get(leader).node.Members() {
		if m.ID == 50 {
			t.Fatalf("node of another cluster is a member: %+v", m)
		}
	}
}

// recordingInbox records what a transport delivers. Safe for concurrent use.
type recordingInbox struct {
	mu          sync.Mutex
	messages    []*raftpb.Message
	senders     []Sender
	joins       []JoinRequest
	removed     []uint64
	unreachable int
	snapOK      int
	snapFailed  int
	calls       []PeerCall
	callSenders []Sender
}

func (r *recordingInbox) DeliverCall(from Sender, c PeerCall) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, c)
	r.callSenders = append(r.callSenders, from)
}

func (r *recordingInbox) Deliver(from Sender, m *raftpb.Message) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.messages = append(r.messages, m)
	r.senders = append(r.senders, from)
}

func (r *recordingInbox) DeliverJoin(_ Sender, req JoinRequest) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.joins = append(r.joins, req)
}

func (r *recordingInbox) DeliverRemoved(from Sender) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.removed = append(r.removed, from.ID)
}

func (r *recordingInbox) ReportUnreachable(uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.unreachable++
}

func (r *recordingInbox) ReportSnapshot(_ uint64, ok bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if ok {
		r.snapOK++
	} else {
		r.snapFailed++
	}
}

func (r *recordingInbox) counts() (messages, joins, removed, unreachable, snapOK, snapFailed int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.messages), len(r.joins), len(r.removed), r.unreachable, r.snapOK, r.snapFailed
}

// startTCPTransport starts a transport for node id; peerTLS nil means
// plaintext.
func startTCPTransport(t *testing.T, peerTLS PeerTLS, cluster string, id uint64, inbox Inbox) *tcpTransport {
	t.Helper()
	tr, err := NewTCPTransport(TransportConfig{
		ClusterName: cluster,
		NodeID:      id,
		ListenAddr:  "127.0.0.1:0",
		Logger:      testLogger(t),
		TLS:         peerTLS,
		Plaintext:   peerTLS == nil,
		Refusals:    &PeerRefusals{},
	}, inbox)
	if err != nil {
		t.Fatalf("start transport: %v", err)
	}
	t.Cleanup(func() { _ = tr.Close() })
	return tr.(*tcpTransport)
}

// transportPair is a TLS sender (node 1, voter) and receiver (node 2) of
// one cluster CA.
func transportPair(t *testing.T) (ca *pki.CA, sender, receiver *tcpTransport, senderInbox, receiverInbox *recordingInbox) {
	ca = testCA(t, "c")
	receiverInbox, senderInbox = &recordingInbox{}, &recordingInbox{}
	receiver = startTCPTransport(t, testCredentials(t, ca, 2, pki.RoleVoter), "c", 2, receiverInbox)
	sender = startTCPTransport(t, testCredentials(t, ca, 1, pki.RoleVoter), "c", 1, senderInbox)
	sender.SetPeer(2, receiver.Addr())
	return ca, sender, receiver, senderInbox, receiverInbox
}

func TestTCPTransportRequiresTLSOrPlaintext(t *testing.T) {
	_, err := NewTCPTransport(TransportConfig{ClusterName: "c", NodeID: 1, ListenAddr: "127.0.0.1:0", Logger: testLogger(t)}, &recordingInbox{})
	if err == nil || !strings.Contains(err.Error(), "peer TLS") {
		t.Fatalf("a transport without TLS or Plaintext: %v", err)
	}
}

func TestTCPTransportDeliversFramesAndReportsSnapshots(t *testing.T) {
	t.Parallel()
	_, sender, receiver, senderInbox, receiverInbox := transportPair(t)

	sender.Send([]*raftpb.Message{
		{Type: raftpb.MsgHeartbeat.Enum(), From: new(uint64(1)), To: new(uint64(2)), Term: new(uint64(3))},
		{Type: raftpb.MsgSnap.Enum(), From: new(uint64(1)), To: new(uint64(2)), Snapshot: &raftpb.Snapshot{
			Data:     []byte("state"),
			Metadata: &raftpb.SnapshotMetadata{Index: new(uint64(7)), Term: new(uint64(3))},
		}},
	})
	sender.SendJoin(2, JoinRequest{NodeID: 1, Addr: sender.Addr()})
	sender.SendRemoved(2)

	waitFor(t, testWait, func() bool {
		msgs, joins, removed, _, _, _ := receiverInbox.counts()
		return msgs == 2 && joins == 1 && removed == 1
	}, "frames to arrive")
	waitFor(t, testWait, func() bool { _, _, _, _, ok, _ := senderInbox.counts(); return ok == 1 }, "snapshot report")
	receiverInbox.mu.Lock()
	snap := receiverInbox.messages[1]
	join := receiverInbox.joins[0]
	from := receiverInbox.senders[0]
	receiverInbox.mu.Unlock()
	if from != (Sender{ID: 1, Role: PeerVoter}) {
		t.Fatalf("frames arrived from %+v, want voter 1 as its certificate says", from)
	}
	if string(snap.GetSnapshot().GetData()) != "state" || snap.GetSnapshot().GetMetadata().GetIndex() != 7 {
		t.Fatalf("snapshot arrived as %v", snap)
	}
	if join.NodeID != 1 || join.Addr != sender.Addr() {
		t.Fatalf("join arrived as %+v", join)
	}
	// The receiver learned the sender's address from the handshake.
	if got := receiver.peerAddr(1); got != sender.Addr() {
		t.Fatalf("receiver learned address %q, want %q", got, sender.Addr())
	}
}

func TestTCPTransportReportsUnreachablePeers(t *testing.T) {
	t.Parallel()
	// A port with nothing listening.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := ln.Addr().String()
	_ = ln.Close()

	inbox := &recordingInbox{}
	tr := startTCPTransport(t, testCredentials(t, testCA(t, "c"), 1, pki.RoleVoter), "c", 1, inbox)
	tr.SetPeer(2, deadAddr)
	tr.Send([]*raftpb.Message{
		{Type: raftpb.MsgApp.Enum(), From: new(uint64(1)), To: new(uint64(2))},
		{Type: raftpb.MsgSnap.Enum(), From: new(uint64(1)), To: new(uint64(2)), Snapshot: &raftpb.Snapshot{}},
	})
	// No address at all: dropped at once.
	tr.Send([]*raftpb.Message{{Type: raftpb.MsgApp.Enum(), From: new(uint64(1)), To: new(uint64(3))}})
	waitFor(t, testWait, func() bool {
		_, _, _, unreachable, _, failed := inbox.counts()
		return unreachable >= 2 && failed == 1
	}, "unreachable and snapshot failure reports")
}

func TestTCPTransportNeverBlocksOnAStalledPeer(t *testing.T) {
	t.Parallel()
	// A listener that never accepts: dials succeed (kernel backlog) but the
	// handshake reply never comes, so the sender is stuck and its queue fills.
	stalled, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer stalled.Close()

	inbox := &recordingInbox{}
	tr := startTCPTransport(t, testCredentials(t, testCA(t, "c"), 1, pki.RoleVoter), "c", 1, inbox)
	tr.SetPeer(2, stalled.Addr().String())
	start := time.Now()
	for range 3 * peerQueueSize {
		tr.Send([]*raftpb.Message{{Type: raftpb.MsgApp.Enum(), From: new(uint64(1)), To: new(uint64(2))}})
	}
	if took := time.Since(start); took > time.Second {
		t.Fatalf("Send blocked for %v on a stalled peer", took)
	}
	if _, _, _, unreachable, _, _ := inbox.counts(); unreachable < peerQueueSize {
		t.Fatalf("%d drops reported, want at least %d", unreachable, peerQueueSize)
	}
	closeStart := time.Now()
	if err := tr.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	if took := time.Since(closeStart); took > time.Second {
		t.Fatalf("Close took %v with a stalled handshake", took)
	}
}

// TestPlaintextTransportRejectsAnotherClusterAndBadHandshakes covers the
// protocol handshake alone (security.insecure).
func TestPlaintextTransportRejectsAnotherClusterAndBadHandshakes(t *testing.T) {
	t.Parallel()
	inbox := &recordingInbox{}
	tr := startTCPTransport(t, nil, "mine", 1, inbox)
	cases := []struct {
		name  string
		write func(conn net.Conn) error
		want  byte
	}{
		{"another cluster", func(conn net.Conn) error {
			return writeHandshake(conn, handshake{ClusterName: "theirs", NodeID: 2, Addr: "x"})
		}, handshakeWrongCluster},
		{"not our protocol", func(conn net.Conn) error {
			_, err := conn.Write([]byte("GET / HTTP/1.1\r\n\r\n"))
			return err
		}, handshakeBad},
		{"sender id zero", func(conn net.Conn) error {
			return writeHandshake(conn, handshake{ClusterName: "mine", NodeID: 0})
		}, handshakeBad},
		{"accepted", func(conn net.Conn) error {
			return writeHandshake(conn, handshake{ClusterName: "mine", NodeID: 2})
		}, handshakeAccepted},
	}
	for _, tc := range cases {
		conn, err := net.Dial("tcp", tr.Addr())
		if err != nil {
			t.Fatal(err)
		}
		_ = conn.SetDeadline(time.Now().Add(testWait))
		if err := tc.write(conn); err != nil {
			t.Fatalf("%s: write: %v", tc.name, err)
		}
		reply, err := bufio.NewReader(conn).ReadByte()
		if err != nil || reply != tc.want {
			t.Errorf("%s: reply %d (err %v), want %d", tc.name, reply, err, tc.want)
		}
		_ = conn.Close()
	}
	if msgs, joins, removed, _, _, _ := inbox.counts(); msgs+joins+removed != 0 {
		t.Fatalf("rejected connections delivered frames")
	}
}
