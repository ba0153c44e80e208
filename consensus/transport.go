package consensus

import (
	"log/slog"

	"go.etcd.io/raft/v3/raftpb"
)

// Transport carries Raft messages, join requests and removal notices between
// the nodes of one cluster. Implementations must never block the caller (the
// Raft loop): they queue, and drop what they cannot queue.
type Transport interface {
	// Addr is the address peers should dial ("" when the transport does not
	// listen, e.g. an in-process test transport).
	Addr() string
	// SetPeer records or updates the address of a peer.
	SetPeer(id uint64, addr string)
	// Send queues messages for their m.To. A message that cannot be queued
	// or sent is dropped and its target reported to Inbox.ReportUnreachable
	// (and Inbox.ReportSnapshot for a MsgSnap). After a MsgSnap was written
	// to the peer, the transport calls Inbox.ReportSnapshot(to, true).
	Send(msgs []*raftpb.Message)
	// SendJoin asks peer `to` to add this node as a learner.
	SendJoin(to uint64, req JoinRequest)
	// SendRemoved tells peer `to` that it is no longer a member.
	SendRemoved(to uint64)
	// Close stops every goroutine of the transport and waits for them.
	Close() error
}

// JoinRequest asks the leader to add NodeID as a learner reachable at Addr.
type JoinRequest struct {
	NodeID uint64
	Addr   string
	// Forwarded: a follower passed the request on to the leader it knows.
	// A forwarded request is never forwarded again.
	Forwarded bool
}

// Inbox is where a Transport hands over what it receives. Every method
// returns immediately: the Node queues the item for the Raft loop or drops it
// when the queue is full (Raft tolerates lost messages).
type Inbox interface {
	// Deliver hands over a Raft message received from a peer.
	Deliver(m *raftpb.Message)
	// DeliverJoin hands over a join request.
	DeliverJoin(req JoinRequest)
	// DeliverRemoved says peer `from` told this node it was removed.
	DeliverRemoved(from uint64)
	// ReportUnreachable says a message to id could not be sent.
	ReportUnreachable(id uint64)
	// ReportSnapshot says whether a MsgSnap to id was sent (ok) or not.
	ReportSnapshot(id uint64, ok bool)
}

// TransportConfig is what a TransportFactory gets from Start.
type TransportConfig struct {
	ClusterName   string
	NodeID        uint64
	ListenAddr    string
	AdvertiseAddr string // "" = the actual listen address
	Logger        *slog.Logger
}

// TransportFactory builds the transport of one node. The default is
// NewTCPTransport; tests inject an in-process transport with fault injection.
type TransportFactory func(cfg TransportConfig, inbox Inbox) (Transport, error)

// nodeInbox adapts the Node's loop channels to Inbox.
type nodeInbox struct{ n *Node }

func (in nodeInbox) Deliver(m *raftpb.Message) {
	select {
	case in.n.incoming <- m:
	default:
		in.n.log.Debug("raft inbox full, dropping message", "from", m.GetFrom(), "type", m.GetType().String())
	}
}

func (in nodeInbox) DeliverJoin(req JoinRequest) {
	select {
	case in.n.joins <- req:
	default:
	}
}

func (in nodeInbox) DeliverRemoved(from uint64) {
	in.report(transportReport{kind: reportRemoved, id: from})
}

func (in nodeInbox) ReportUnreachable(id uint64) {
	in.report(transportReport{kind: reportUnreachable, id: id})
}

func (in nodeInbox) ReportSnapshot(id uint64, ok bool) {
	in.report(transportReport{kind: reportSnapshot, id: id, ok: ok})
}

func (in nodeInbox) report(r transportReport) {
	select {
	case in.n.reports <- r:
	default:
	}
}

// transportReport is a transport event for the Raft loop.
type transportReport struct {
	kind reportKind
	id   uint64
	ok   bool
}

type reportKind int

const (
	reportUnreachable reportKind = iota + 1
	reportSnapshot
	reportRemoved
)
