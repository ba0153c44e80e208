package consensus

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"runtime"
	"testing"
	"time"

	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/pgquorum/pgquorum/pki"
)

// dialPeer connects to tr as an attacker or a test peer would: TLS with
// clientTLS (nil = plaintext), then the protocol handshake claiming id. It
// returns the connection and the acceptor's reply (or the error that ended
// the attempt).
func dialPeer(t *testing.T, tr *tcpTransport, clientTLS *tls.Config, id uint64) (net.Conn, byte, error) {
	t.Helper()
	raw, err := net.Dial("tcp", tr.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = raw.Close() })
	_ = raw.SetDeadline(time.Now().Add(testWait))
	conn := raw
	if clientTLS != nil {
		tc := tls.Client(raw, clientTLS)
		if err := tc.Handshake(); err != nil {
			return nil, 0, err
		}
		conn = tc
	}
	if err := writeHandshake(conn, handshake{ClusterName: tr.cfg.ClusterName, NodeID: id, Addr: "127.0.0.1:1"}); err != nil {
		return nil, 0, err
	}
	var reply [1]byte
	if _, err := io.ReadFull(conn, reply[:]); err != nil {
		return nil, 0, err
	}
	return conn, reply[0], nil
}

func sendRaftFrame(t *testing.T, conn net.Conn, m *raftpb.Message) {
	t.Helper()
	payload, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	w := bufio.NewWriter(conn)
	if err := writeFrame(w, frameRaft, payload); err != nil {
		t.Fatal(err)
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
}

// waitClosed waits until the other side closes conn.
func waitClosed(t *testing.T, conn net.Conn) {
	t.Helper()
	_ = conn.SetReadDeadline(time.Now().Add(testWait))
	if _, err := io.Copy(io.Discard, conn); err != nil && !errors.Is(err, io.EOF) {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatal("the acceptor did not close the connection")
		}
	}
}

func TestTLSTransportAuthenticatesEveryPeer(t *testing.T) {
	t.Parallel()
	ca := testCA(t, "c")
	inbox := &recordingInbox{}
	tr := startTCPTransport(t, testCredentials(t, ca, 1, pki.RoleVoter), "c", 1, inbox)
	peer3 := testCredentials(t, ca, 3, pki.RoleVoter).PeerClientConfig()

	t.Run("plaintext peer", func(t *testing.T) {
		_, reply, err := dialPeer(t, tr, nil, 3)
		if err == nil {
			t.Fatalf("a plaintext handshake got reply %d", reply)
		}
	})
	t.Run("no certificate", func(t *testing.T) {
		cfg := &tls.Config{MinVersion: tls.VersionTLS13, InsecureSkipVerify: true}
		if _, reply, err := dialPeer(t, tr, cfg, 3); err == nil {
			t.Fatalf("a peer without a certificate got reply %d", reply)
		}
	})
	t.Run("another CA", func(t *testing.T) {
		cfg := testCredentials(t, testCA(t, "c"), 3, pki.RoleVoter).PeerClientConfig()
		if _, reply, err := dialPeer(t, tr, cfg, 3); err == nil {
			t.Fatalf("a peer of another CA got reply %d", reply)
		}
	})
	t.Run("an operator certificate", func(t *testing.T) {
		kp, err := ca.IssueClient("alice", 1)
		if err != nil {
			t.Fatal(err)
		}
		creds, err := pki.NewCredentials(ca.CertPEM(), kp.CertPEM, kp.KeyPEM)
		if err != nil {
			t.Fatal(err)
		}
		if _, reply, err := dialPeer(t, tr, creds.PeerClientConfig(), 3); err == nil && reply == handshakeAccepted {
			t.Fatal("an operator's client certificate was accepted as a peer")
		}
	})
	t.Run("claims another id than its certificate", func(t *testing.T) {
		_, reply, err := dialPeer(t, tr, peer3, 2)
		if err != nil || reply != handshakeBad {
			t.Fatalf("reply %d, err %v; want handshakeBad", reply, err)
		}
	})
	t.Run("forged sender inside an authenticated connection", func(t *testing.T) {
		conn, reply, err := dialPeer(t, tr, peer3, 3)
		if err != nil || reply != handshakeAccepted {
			t.Fatalf("reply %d, err %v; want accepted", reply, err)
		}
		sendRaftFrame(t, conn, &raftpb.Message{Type: raftpb.MsgApp.Enum(), From: new(uint64(2)), To: new(uint64(1)), Term: new(uint64(99))})
		waitClosed(t, conn)
	})
	if msgs, joins, removed, _, _, _ := inbox.counts(); msgs+joins+removed != 0 {
		t.Fatalf("refused peers delivered %d messages, %d joins, %d removal notices", msgs, joins, removed)
	}
	// Every refusal is counted by its reason (pgquorum_raft_peer_refusals_total).
	waitFor(t, testWait, func() bool {
		c := tr.cfg.Refusals.Snapshot()
		return c[RefusedTLSHandshake] >= 3 && c[RefusedHandshake] >= 1 && c[RefusedForgedSender] == 1
	}, "the refusals to be counted: %v", tr.cfg.Refusals.Snapshot())

	// The authenticated peer's own messages arrive, with its role.
	learner := testCredentials(t, ca, 7, pki.RoleLearner).PeerClientConfig()
	conn, reply, err := dialPeer(t, tr, learner, 7)
	if err != nil || reply != handshakeAccepted {
		t.Fatalf("learner 7: reply %d, err %v", reply, err)
	}
	sendRaftFrame(t, conn, &raftpb.Message{Type: raftpb.MsgHeartbeatResp.Enum(), From: new(uint64(7)), To: new(uint64(1))})
	waitFor(t, testWait, func() bool { msgs, _, _, _, _, _ := inbox.counts(); return msgs == 1 }, "the learner's message")
	inbox.mu.Lock()
	from := inbox.senders[0]
	inbox.mu.Unlock()
	if from != (Sender{ID: 7, Role: PeerLearner}) {
		t.Fatalf("delivered as from %+v, want learner 7", from)
	}
}

// TestSenderStreamsOnlyToTheCertifiedNode: given the address of another node,
// a sender refuses to stream to it (the join attack: "stream your log to the
// address I chose").
func TestSenderStreamsOnlyToTheCertifiedNode(t *testing.T) {
	t.Parallel()
	ca := testCA(t, "c")
	impostorInbox := &recordingInbox{}
	impostor := startTCPTransport(t, testCredentials(t, ca, 3, pki.RoleVoter), "c", 3, impostorInbox)
	senderInbox := &recordingInbox{}
	sender := startTCPTransport(t, testCredentials(t, ca, 1, pki.RoleVoter), "c", 1, senderInbox)
	sender.SetPeer(2, impostor.Addr()) // node 2's address points at node 3
	sender.Send([]*raftpb.Message{{Type: raftpb.MsgApp.Enum(), From: new(uint64(1)), To: new(uint64(2))}})
	waitFor(t, testWait, func() bool { _, _, _, unreachable, _, _ := senderInbox.counts(); return unreachable >= 1 }, "node 2 reported unreachable")
	if msgs, _, _, _, _, _ := impostorInbox.counts(); msgs != 0 {
		t.Fatal("the sender streamed to a node whose certificate is not the peer's")
	}
}

// TestLargeFrameAnnouncementAllocatesLittle: a peer that announces the
// largest frame and sends a few bytes makes the reader allocate about
// largeFrameChunk, not the announced size; a larger announcement is refused
// before any allocation.
func TestLargeFrameAnnouncementAllocatesLittle(t *testing.T) {
	announce := func(size uint32) *bufio.Reader {
		var b bytes.Buffer
		_ = binary.Write(&b, binary.BigEndian, size)
		b.WriteByte(frameRaft)
		b.Write(make([]byte, 100))
		return bufio.NewReader(&b)
	}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range 8 {
		if _, _, _, err := readFrame(announce(maxFrameSize), nil); err == nil {
			t.Fatal("a truncated frame was read")
		}
	}
	runtime.ReadMemStats(&after)
	if grown := after.TotalAlloc - before.TotalAlloc; grown > 8*2*largeFrameChunk {
		t.Fatalf("8 announcements of %d MiB allocated %d MiB", maxFrameSize>>20, grown>>20)
	}
	if _, _, _, err := readFrame(announce(maxFrameSize+1), nil); err == nil {
		t.Fatal("a frame over the limit was accepted")
	}
	// A large frame that does arrive is read whole.
	var b bytes.Buffer
	payload := bytes.Repeat([]byte("x"), 3*largeFrameChunk+5)
	w := bufio.NewWriter(&b)
	if err := writeFrame(w, frameRaft, payload); err != nil {
		t.Fatal(err)
	}
	_ = w.Flush()
	_, got, _, err := readFrame(bufio.NewReader(&b), nil)
	if err != nil || !bytes.Equal(got, payload) {
		t.Fatalf("large frame: %d bytes, err %v", len(got), err)
	}
}

// TestTransportCapsHandshakesPerSource: connections that do not finish their
// handshake are capped per source address; past the cap a new one is closed
// at once while the earlier ones wait for their handshake deadline.
func TestTransportCapsHandshakesPerSource(t *testing.T) {
	t.Parallel()
	tr := startTCPTransport(t, testCredentials(t, testCA(t, "c"), 1, pki.RoleVoter), "c", 1, &recordingInbox{})
	dial := func() net.Conn {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}}
		conn, err := d.DialContext(context.Background(), "tcp", tr.Addr())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = conn.Close() })
		return conn
	}
	var held []net.Conn
	for range maxHandshakesPerSource {
		held = append(held, dial())
	}
	// The accept loop counts connections in order: once the extra one is
	// closed, every held one was counted before it.
	waitClosed(t, dial())
	for i, conn := range held {
		_ = conn.SetReadDeadline(time.Now().Add(time.Millisecond))
		var b [1]byte
		_, err := conn.Read(b[:])
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() {
			t.Fatalf("held connection %d: %v, want still open", i, err)
		}
	}
}
