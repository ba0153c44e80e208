package consensus

import (
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// memNetwork is an in-process network for tests with fault injection:
// isolated nodes, one-way cuts, random drops from a seeded generator, and a
// fixed delivery delay. Messages are cloned through protobuf encoding, as on
// the wire. Safe for concurrent use.
type memNetwork struct {
	mu        sync.Mutex
	inboxes   map[uint64]Inbox
	isolated  map[uint64]bool
	cut       map[memLink]bool
	dropRate  float64
	rng       *rand.Rand
	delay     time.Duration
	snapshots map[uint64]int // MsgSnap delivered, by target
	sent      map[memSent]int
	roles     map[uint64]PeerRole // what each node's "certificate" says; default PeerUnverified
}

// memSent counts messages by sender and type.
type memSent struct {
	from uint64
	typ  raftpb.MessageType
}

type memLink struct{ from, to uint64 }

func newMemNetwork(seed uint64) *memNetwork {
	return &memNetwork{
		inboxes:   make(map[uint64]Inbox),
		isolated:  make(map[uint64]bool),
		cut:       make(map[memLink]bool),
		rng:       rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
		snapshots: make(map[uint64]int),
		sent:      make(map[memSent]int),
		roles:     make(map[uint64]PeerRole),
	}
}

// setRole makes id's messages arrive as sent by a peer with that role, as if
// its certificate said so.
func (nw *memNetwork) setRole(id uint64, role PeerRole) {
	nw.mu.Lock()
	defer nw.mu.Unlock()
	nw.roles[id] = role
}

// sender is the authenticated sender of id's messages.
func (nw *memNetwork) sender(id uint64) Sender {
	nw.mu.Lock()
	defer nw.mu.Unlock()
	return Sender{ID: id, Role: nw.roles[id]}
}

func (nw *memNetwork) factory() TransportFactory {
	return func(cfg TransportConfig, inbox Inbox) (Transport, error) {
		nw.mu.Lock()
		defer nw.mu.Unlock()
		nw.inboxes[cfg.NodeID] = inbox
		return &memTransport{nw: nw, id: cfg.NodeID, inbox: inbox}, nil
	}
}

// isolate cuts id off from everyone, both ways.
func (nw *memNetwork) isolate(id uint64) {
	nw.mu.Lock()
	defer nw.mu.Unlock()
	nw.isolated[id] = true
}

// cutOneWay drops everything from `from` to `to` (the reverse still flows).
func (nw *memNetwork) cutOneWay(from, to uint64) {
	nw.mu.Lock()
	defer nw.mu.Unlock()
	nw.cut[memLink{from, to}] = true
}

// heal removes every isolation and cut (drops and delay stay).
func (nw *memNetwork) heal() {
	nw.mu.Lock()
	defer nw.mu.Unlock()
	clear(nw.isolated)
	clear(nw.cut)
}

func (nw *memNetwork) setDropRate(rate float64) {
	nw.mu.Lock()
	defer nw.mu.Unlock()
	nw.dropRate = rate
}

func (nw *memNetwork) setDelay(d time.Duration) {
	nw.mu.Lock()
	defer nw.mu.Unlock()
	nw.delay = d
}

func (nw *memNetwork) snapshotsTo(id uint64) int {
	nw.mu.Lock()
	defer nw.mu.Unlock()
	return nw.snapshots[id]
}

// route decides the fate of one message: the target inbox (nil = dropped)
// and the delay.
func (nw *memNetwork) route(from, to uint64, isSnapshot bool) (Inbox, time.Duration) {
	nw.mu.Lock()
	defer nw.mu.Unlock()
	target := nw.inboxes[to]
	if target == nil || nw.isolated[from] || nw.isolated[to] || nw.cut[memLink{from, to}] {
		return nil, 0
	}
	if nw.dropRate > 0 && nw.rng.Float64() < nw.dropRate {
		return nil, 0
	}
	if isSnapshot {
		nw.snapshots[to]++
	}
	return target, nw.delay
}

// sentBy counts the messages of one type that from tried to send.
func (nw *memNetwork) sentBy(from uint64, typ raftpb.MessageType) int {
	nw.mu.Lock()
	defer nw.mu.Unlock()
	return nw.sent[memSent{from, typ}]
}

func (nw *memNetwork) countSent(from uint64, typ raftpb.MessageType) {
	nw.mu.Lock()
	defer nw.mu.Unlock()
	nw.sent[memSent{from, typ}]++
}

func (nw *memNetwork) inbox(id uint64) Inbox {
	nw.mu.Lock()
	defer nw.mu.Unlock()
	return nw.inboxes[id]
}

// memTransport is one node's end of a memNetwork.
type memTransport struct {
	nw    *memNetwork
	id    uint64
	inbox Inbox
}

func (t *memTransport) Addr() string                   { return "" }
func (t *memTransport) SetPeer(id uint64, addr string) {}

func (t *memTransport) Send(msgs []*raftpb.Message) {
	for _, m := range msgs {
		t.nw.countSent(t.id, m.GetType())
		to := m.GetTo()
		isSnapshot := m.GetType() == raftpb.MsgSnap
		target, delay := t.nw.route(t.id, to, isSnapshot)
		if target == nil {
			if isSnapshot {
				t.inbox.ReportSnapshot(to, false)
			}
			continue
		}
		clone := cloneMessage(m)
		from := t.nw.sender(t.id)
		if delay > 0 {
			time.AfterFunc(delay, func() {
				if in := t.nw.inbox(to); in != nil {
					in.Deliver(from, clone)
				}
			})
		} else {
			target.Deliver(from, clone)
		}
		if isSnapshot {
			t.inbox.ReportSnapshot(to, true)
		}
	}
}

func (t *memTransport) SendJoin(to uint64, req JoinRequest) {
	if target, _ := t.nw.route(t.id, to, false); target != nil {
		target.DeliverJoin(t.nw.sender(t.id), req)
	}
}

func (t *memTransport) SendRemoved(to uint64) {
	if target, _ := t.nw.route(t.id, to, false); target != nil {
		target.DeliverRemoved(t.nw.sender(t.id))
	}
}

func (t *memTransport) SendCall(to uint64, c PeerCall) error {
	if target, _ := t.nw.route(t.id, to, false); target != nil {
		c.Payload = slices.Clone(c.Payload)
		target.DeliverCall(t.nw.sender(t.id), c)
	}
	return nil
}

func (t *memTransport) Close() error {
	t.nw.mu.Lock()
	defer t.nw.mu.Unlock()
	if t.nw.inboxes[t.id] == t.inbox {
		delete(t.nw.inboxes, t.id)
	}
	return nil
}

func cloneMessage(m *raftpb.Message) *raftpb.Message {
	b, err := proto.Marshal(m)
	if err != nil {
		panic(err)
	}
	out := &raftpb.Message{}
	if err := proto.Unmarshal(b, out); err != nil {
		panic(err)
	}
	return out
}
