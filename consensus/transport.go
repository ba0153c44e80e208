package consensus

import (
	"crypto/tls"
	"crypto/x509"
	"log/slog"

	"go.etcd.io/raft/v3/raftpb"

	"github.com/pgquorum/pgquorum/pki"
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
	// SendCall queues a peer call or reply (calls.go) for peer `to`. It
	// fails when the frame cannot be queued; a queued frame may still be
	// lost (the caller's context bounds the wait for the reply).
	SendCall(to uint64, c PeerCall) error
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

// Inbox is where a Transport hands over what it receives, each item with its
// authenticated sender. Every method returns immediately: the Node queues the
// item for the Raft loop or drops it when the queue is full (Raft tolerates
// lost messages). The Node decides what the sender may do (peerauth.go).
type Inbox interface {
	// Deliver hands over a Raft message received from a peer.
	Deliver(from Sender, m *raftpb.Message)
	// DeliverJoin hands over a join request.
	DeliverJoin(from Sender, req JoinRequest)
	// DeliverRemoved says peer `from` told this node it was removed.
	DeliverRemoved(from Sender)
	// DeliverCall hands over a peer call or reply (calls.go).
	DeliverCall(from Sender, c PeerCall)
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
	// TLS authenticates peers with mutual TLS 1.3. Required by the TCP
	// transport unless Plaintext is set.
	TLS PeerTLS
	// Plaintext allows a TCP transport without TLS: peers are not
	// authenticated (security.insecure, loopback only; tests).
	Plaintext bool
	// Refusals counts the connections and frames the transport refuses (nil: none counted).
	Refusals *PeerRefusals
}

// PeerTLS is the mutual TLS of the peer transport (*pki.Credentials).
type PeerTLS interface {
	// PeerServerConfig is the acceptor's configuration: it requires and
	// verifies the dialer's certificate.
	PeerServerConfig() *tls.Config
	// PeerClientConfig is the dialer's configuration: it presents this node's
	// certificate and verifies the acceptor's chain.
	PeerClientConfig() *tls.Config
	// PeerIdentity returns the verified identity of the other side.
	PeerIdentity(cs tls.ConnectionState, usage x509.ExtKeyUsage) (pki.Identity, error)
}

// TransportFactory builds the transport of one node. The default is
// NewTCPTransport; tests inject an in-process transport with fault injection.
type TransportFactory func(cfg TransportConfig, inbox Inbox) (Transport, error)

// nodeInbox adapts the Node's loop channels to Inbox.
type nodeInbox struct{ n *Node }

// inboundMessage is a Raft message with its authenticated sender.
type inboundMessage struct {
	from Sender
	m    *raftpb.Message
}

// inboundJoin is a join request with its authenticated sender.
type inboundJoin struct {
	from Sender
	req  JoinRequest
}

func (in nodeInbox) Deliver(from Sender, m *raftpb.Message) {
	select {
	case in.n.incoming <- inboundMessage{from: from, m: m}:
	default:
		in.n.log.Debug("raft inbox full, dropping message", "from", m.GetFrom(), "type", m.GetType().String())
	}
}

func (in nodeInbox) DeliverJoin(from Sender, req JoinRequest) {
	select {
	case in.n.joins <- inboundJoin{from: from, req: req}:
	default:
	}
}

func (in nodeInbox) DeliverRemoved(from Sender) {
	in.report(transportReport{kind: reportRemoved, id: from.ID, role: from.Role})
}

func (in nodeInbox) DeliverCall(from Sender, c PeerCall) { in.n.deliverCall(from, c) }

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
	role PeerRole // reportRemoved: the sender's role
}

type reportKind int

const (
	reportUnreachable reportKind = iota + 1
	reportSnapshot
	reportRemoved
)
