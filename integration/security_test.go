package integration

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/pgquorum/pgquorum/admin"
	"github.com/pgquorum/pgquorum/consensus/clusterstate"
	"github.com/pgquorum/pgquorum/localcluster"
	"github.com/pgquorum/pgquorum/testenv"
)

// TestAttacksOnTheControlPlane runs the attacks of issue 9 against three real
// proxy processes, as someone would who can reach their ports (a sidecar in an
// application pod), and checks what each now gets. The attacker's certificates
// are what a compromised sidecar would hold (a learner certificate of the
// cluster CA), a certificate of its own CA, or a stolen voter certificate.
//
// The cluster serves its admin APIs over HTTPS; proxy 3 has no admin token
// (operators' client certificates only).
func TestAttacksOnTheControlPlane(t *testing.T) {
	pg := StartCluster(t, localcluster.Options{})
	proxies := StartProxies(t, pg, ProxyOptions{AdminHTTPS: true, WithoutToken: []uint64{3}})
	proxies.Cert(t, "node", "--id", "50-59", "--learner") // the compromised sidecars' certificate
	proxies.Cert(t, "node", "--id", "60")                 // a voter certificate of an id that is no member
	a := &attacker{t: t, pc: proxies}

	t.Run("PlaintextClientOnThePeerPort", a.plaintextPeer)
	t.Run("ForgedFrameClaimingAnotherID", a.forgedSender)
	t.Run("LearnerCertificateTriesToVote", a.learnerVotes)
	t.Run("RemovedNoticeFromANonLeader", a.removedNotice)
	t.Run("JoinWithoutAValidCertificate", a.joins)
	t.Run("OversizedFrameAnnouncement", a.oversizedFrames)
	t.Run("AdminCallsWithoutTokenOrJSON", a.adminCalls)

	// After all of it, the cluster still routes to its first primary, at its
	// first epoch, and every proxy still runs.
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	for _, p := range proxies.Proxies {
		v, err := p.Cluster(ctx)
		if err != nil {
			t.Fatalf("proxy %d after the attacks: %v", p.ID, err)
		}
		if v.Epoch != 1 || v.Primary != pg.Nodes[0].Name || len(v.Members) != 3 {
			t.Fatalf("proxy %d after the attacks: epoch %d, primary %q, %d members; want epoch 1, %s, 3 members",
				p.ID, v.Epoch, v.Primary, len(v.Members), pg.Nodes[0].Name)
		}
	}
}

// attacker speaks the peer protocol by hand (consensus/tcp_frame.go).
type attacker struct {
	t  *testing.T
	pc *ProxyCluster
}

// Wire constants of the peer protocol.
const (
	peerMagic       = "PGQR"
	peerAccepted    = 0
	peerBad         = 2
	frameRaft       = 1
	frameJoin       = 2
	frameRemoved    = 3
	peerFrameMax    = 96 << 20
	peerDialTimeout = 10 * time.Second
)

func (a *attacker) ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(a.t.Context(), 30*time.Second)
}

// certificate loads a certificate the harness made (node-50-59, node-2, ...).
func (a *attacker) certificate(t *testing.T, name string) *tls.Config {
	t.Helper()
	cert, err := tls.LoadX509KeyPair(filepath.Join(a.pc.Certs, name+".pem"), filepath.Join(a.pc.Certs, name+"-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	// The attacker does not care who the server is.
	return &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{cert}, InsecureSkipVerify: true}
}

// peerConn is one connection to a proxy's Raft port.
type peerConn struct {
	t    *testing.T
	conn net.Conn
}

// dial connects to p's Raft port with TLS (nil: plaintext) and sends the
// protocol handshake claiming id; it returns the acceptor's one-byte answer,
// or the error that ended the attempt.
func (a *attacker) dial(t *testing.T, p *ProxyProcess, cfg *tls.Config, id uint64) (*peerConn, byte, error) {
	t.Helper()
	raw, err := net.DialTimeout("tcp", p.Raft, peerDialTimeout)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = raw.Close() })
	_ = raw.SetDeadline(time.Now().Add(peerDialTimeout))
	conn := raw
	if cfg != nil {
		tc := tls.Client(raw, cfg)
		if err := tc.Handshake(); err != nil {
			return nil, 0, err
		}
		conn = tc
	}
	hs := []byte(peerMagic)
	hs = append(hs, 2) // protocol version
	hs = binary.BigEndian.AppendUint64(hs, id)
	for _, field := range []string{"itest", "127.0.0.1:1"} {
		hs = binary.BigEndian.AppendUint16(hs, uint16(len(field)))
		hs = append(hs, field...)
	}
	if _, err := conn.Write(hs); err != nil {
		return nil, 0, err
	}
	var reply [1]byte
	if _, err := io.ReadFull(conn, reply[:]); err != nil {
		return nil, 0, err
	}
	return &peerConn{t: t, conn: conn}, reply[0], nil
}

// mustDial is dial that must be accepted.
func (a *attacker) mustDial(t *testing.T, p *ProxyProcess, cfg *tls.Config, id uint64) *peerConn {
	t.Helper()
	c, reply, err := a.dial(t, p, cfg, id)
	if err != nil || reply != peerAccepted {
		t.Fatalf("handshake with proxy %d as %d: reply %d, err %v", p.ID, id, reply, err)
	}
	return c
}

func (c *peerConn) frame(kind byte, payload []byte) {
	c.t.Helper()
	head := binary.BigEndian.AppendUint32(nil, uint32(len(payload)+1))
	head = append(head, kind)
	if _, err := c.conn.Write(append(head, payload...)); err != nil {
		c.t.Fatalf("write frame: %v", err)
	}
}

func (c *peerConn) raft(m *raftpb.Message) {
	c.t.Helper()
	data, err := proto.Marshal(m)
	if err != nil {
		c.t.Fatal(err)
	}
	c.frame(frameRaft, data)
}

func (c *peerConn) join(id uint64, addr string) {
	payload := binary.BigEndian.AppendUint64(nil, id)
	c.frame(frameJoin, append(append(payload, 0), addr...))
}

// closed waits until the proxy closes the connection.
func (c *peerConn) closed() {
	c.t.Helper()
	_ = c.conn.SetReadDeadline(time.Now().Add(peerDialTimeout))
	_, err := io.Copy(io.Discard, c.conn)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		c.t.Fatal("the proxy kept the connection open")
	}
}

// waitLog waits until p's log has a line containing every part.
func waitLog(ctx context.Context, t *testing.T, p *ProxyProcess, parts ...string) {
	t.Helper()
	testenv.Eventually(t, ctx, 0, fmt.Sprintf("proxy %d to log %q", p.ID, parts), testenv.Cond(func() bool {
		data, err := os.ReadFile(p.LogPath)
		if err != nil {
			return false
		}
		for _, line := range strings.Split(string(data), "\n") {
			all := true
			for _, part := range parts {
				all = all && strings.Contains(line, part)
			}
			if all {
				return true
			}
		}
		return false
	}))
}

// roles finds the Raft leader and a follower.
func (a *attacker) roles(ctx context.Context, t *testing.T) (leader, follower *ProxyProcess, term uint64) {
	t.Helper()
	id, err := leaderOf(ctx, a.pc.Proxies)
	if err != nil {
		t.Fatal(err)
	}
	leader = proxyByID(a.pc, id)
	for _, p := range a.pc.Proxies {
		if p != leader {
			follower = p
			break
		}
	}
	v, err := follower.Cluster(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return leader, follower, v.Raft.Term
}

func (a *attacker) plaintextPeer(t *testing.T) {
	ctx, cancel := a.ctx()
	defer cancel()
	for _, p := range a.pc.Proxies {
		_, reply, err := a.dial(t, p, nil, 2)
		if err == nil && reply == peerAccepted {
			t.Fatalf("proxy %d accepted a plaintext peer", p.ID)
		}
		waitLog(ctx, t, p, "rejecting raft connection", "TLS handshake")
	}
}

// forgedSender: a sidecar's learner certificate sends an append in the
// leader's name that would begin a failover.
func (a *attacker) forgedSender(t *testing.T) {
	ctx, cancel := a.ctx()
	defer cancel()
	leader, follower, term := a.roles(ctx, t)
	sidecar := a.certificate(t, "node-50-59")

	// Claiming another id in the handshake than the certificate's.
	if _, reply, err := a.dial(t, follower, sidecar, leader.ID); err != nil || reply != peerBad {
		t.Fatalf("handshake claiming the leader's id %d: reply %d, err %v; want refused", leader.ID, reply, err)
	}
	waitLog(ctx, t, follower, "rejecting raft connection", fmt.Sprintf("claims node id %d but its certificate is", leader.ID))

	// Its own id in the handshake, the leader's in the frame.
	v, err := follower.Cluster(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cmd, err := clusterstate.Encode(clusterstate.Command{BeginFailover: &clusterstate.BeginFailover{
		ExpectEpoch: v.Epoch, OldPrimary: v.Primary, Kind: clusterstate.KindManual, Forced: true, At: time.Now()}})
	if err != nil {
		t.Fatal(err)
	}
	envelope := append([]byte{1}, binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint64(nil, leader.ID), 1)...)
	c := a.mustDial(t, follower, sidecar, 50)
	c.raft(&raftpb.Message{
		Type: raftpb.MsgApp.Enum(), From: new(leader.ID), To: new(follower.ID), Term: new(term),
		LogTerm: new(term), Index: new(v.Raft.Commit), Commit: new(v.Raft.Commit + 1),
		Entries: []*raftpb.Entry{{Type: raftpb.EntryNormal.Enum(), Term: new(term), Index: new(v.Raft.Commit + 1), Data: append(envelope, cmd...)}},
	})
	c.closed()
	waitLog(ctx, t, follower, "closing raft connection: message with a forged sender", "remote_node=50", fmt.Sprintf("claimed=%d", leader.ID))
}

// learnerVotes: a learner certificate asks for votes, grants one, and poses as
// a leader; and a learner certificate for a voter's id speaks for it.
func (a *attacker) learnerVotes(t *testing.T) {
	ctx, cancel := a.ctx()
	defer cancel()
	leader, follower, term := a.roles(ctx, t)
	sidecar := a.certificate(t, "node-50-59")
	for i, typ := range []raftpb.MessageType{raftpb.MsgPreVote, raftpb.MsgVote, raftpb.MsgVoteResp, raftpb.MsgApp} {
		id := uint64(51 + i) // one id each: refusals are logged once per sender and kind
		c := a.mustDial(t, follower, sidecar, id)
		c.raft(&raftpb.Message{Type: typ.Enum(), From: new(id), To: new(follower.ID), Term: new(term + 100), LogTerm: new(term + 100), Index: new(uint64(1 << 40))})
		waitLog(ctx, t, follower, "refusing raft message from peer", fmt.Sprintf("peer=%d", id), "a learner certificate may not send "+typ.String())
	}
	// A learner certificate for a voter's id: made with the cluster CA, as a
	// sidecar owner might, by mistake or not.
	dir := t.TempDir()
	for _, f := range []string{"ca.pem", "ca-key.pem"} {
		data, err := os.ReadFile(filepath.Join(a.pc.Certs, f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, f), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if out, err := exec.Command(a.pc.BinaryPath(), "cert", "node", "--dir", dir, "--id", strconv.FormatUint(leader.ID, 10), "--learner").CombinedOutput(); err != nil {
		t.Fatalf("cert: %v %s", err, out)
	}
	posing, err := tls.LoadX509KeyPair(filepath.Join(dir, fmt.Sprintf("node-%d.pem", leader.ID)), filepath.Join(dir, fmt.Sprintf("node-%d-key.pem", leader.ID)))
	if err != nil {
		t.Fatal(err)
	}
	c := a.mustDial(t, follower, &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{posing}, InsecureSkipVerify: true}, leader.ID)
	c.raft(&raftpb.Message{Type: raftpb.MsgHeartbeat.Enum(), From: new(leader.ID), To: new(follower.ID), Term: new(term + 100)})
	waitLog(ctx, t, follower, "refusing raft message from peer", fmt.Sprintf("peer=%d", leader.ID), fmt.Sprintf("a learner certificate speaks for voter %d", leader.ID))

	if v, err := follower.Cluster(ctx); err != nil || v.Raft.Term > term+1 {
		t.Fatalf("the follower's term moved from %d to %d (%v)", term, v.Raft.Term, err)
	}
}

// removedNotice: "you were removed" from a sidecar, and from a voter that is
// not the leader (its certificate stolen).
func (a *attacker) removedNotice(t *testing.T) {
	ctx, cancel := a.ctx()
	defer cancel()
	leader, follower, _ := a.roles(ctx, t)
	var other *ProxyProcess
	for _, p := range a.pc.Proxies {
		if p != leader && p != follower {
			other = p
		}
	}
	c := a.mustDial(t, follower, a.certificate(t, "node-50-59"), 55)
	c.frame(frameRemoved, nil)
	waitLog(ctx, t, follower, "refusing removal notice from peer", "peer=55", "a learner certificate cannot remove anyone")

	c = a.mustDial(t, follower, a.certificate(t, fmt.Sprintf("node-%d", other.ID)), other.ID)
	c.frame(frameRemoved, nil)
	waitLog(ctx, t, follower, "refusing removal notice from peer", fmt.Sprintf("peer=%d", other.ID), "only the leader or a majority of the voters")

	// The follower still runs and routes.
	if err := follower.WaitRouting(ctx); err != nil {
		t.Fatal(err)
	}
	exited, _ := follower.Exited()
	select {
	case <-exited:
		t.Fatalf("proxy %d stopped after a removal notice from %d", follower.ID, other.ID)
	default:
	}
}

// joins: ask the leader to add a node without a certificate, with a
// certificate of another CA, with a voter certificate, and for another id
// than the certificate's.
func (a *attacker) joins(t *testing.T) {
	ctx, cancel := a.ctx()
	defer cancel()
	leader, _, _ := a.roles(ctx, t)

	noCert := &tls.Config{MinVersion: tls.VersionTLS13, InsecureSkipVerify: true}
	if _, reply, err := a.dial(t, leader, noCert, 61); err == nil && reply == peerAccepted {
		t.Fatal("a peer without a certificate was accepted")
	}
	// The attacker's own CA, same cluster name.
	dir := t.TempDir()
	for _, args := range [][]string{{"ca", "--cluster", "itest"}, {"node", "--id", "61", "--learner"}} {
		if out, err := exec.Command(a.pc.BinaryPath(), append(append([]string{"cert"}, args[0], "--dir", dir), args[1:]...)...).CombinedOutput(); err != nil {
			t.Fatalf("cert: %v %s", err, out)
		}
	}
	foreign, err := tls.LoadX509KeyPair(filepath.Join(dir, "node-61.pem"), filepath.Join(dir, "node-61-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	if _, reply, err := a.dial(t, leader, &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{foreign}, InsecureSkipVerify: true}, 61); err == nil && reply == peerAccepted {
		t.Fatal("a peer with a certificate of another CA was accepted")
	}
	waitLog(ctx, t, leader, "rejecting raft connection", "TLS handshake")

	// A voter certificate asks to join as a learner.
	c := a.mustDial(t, leader, a.certificate(t, "node-60"), 60)
	c.join(60, "127.0.0.1:1")
	waitLog(ctx, t, leader, "refusing join request from peer", "peer=60", "joins need a learner certificate")
	// A learner certificate asks to add another id.
	c = a.mustDial(t, leader, a.certificate(t, "node-50-59"), 56)
	c.join(62, "127.0.0.1:1")
	waitLog(ctx, t, leader, "refusing join request from peer", "peer=56", "asks to add node 62")

	members, err := leader.Client().Members(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range members {
		if m.ID >= 50 {
			t.Fatalf("the attacker's node %d became a member", m.ID)
		}
	}
}

// oversizedFrames: an authenticated peer announces frames over the limit and
// frames at the limit it never sends; the proxy must not allocate them.
func (a *attacker) oversizedFrames(t *testing.T) {
	ctx, cancel := a.ctx()
	defer cancel()
	_, follower, _ := a.roles(ctx, t)
	sidecar := a.certificate(t, "node-50-59")

	c := a.mustDial(t, follower, sidecar, 57)
	head := binary.BigEndian.AppendUint32(nil, peerFrameMax+2)
	if _, err := c.conn.Write(append(head, frameRaft)); err != nil {
		t.Fatal(err)
	}
	c.closed()

	before, err := metricValue(ctx, follower, "go_memstats_alloc_bytes_total")
	if err != nil {
		t.Fatal(err)
	}
	const announced = 90 << 20
	for _, id := range []uint64{57, 58, 59} {
		c := a.mustDial(t, follower, sidecar, id)
		head := binary.BigEndian.AppendUint32(nil, announced)
		if _, err := c.conn.Write(append(append(head, frameRaft), make([]byte, 1024)...)); err != nil {
			t.Fatal(err)
		}
		// End the stream: the proxy reads what was sent, then gives up.
		if err := c.conn.(*tls.Conn).CloseWrite(); err != nil {
			t.Fatal(err)
		}
		c.closed()
	}
	after, err := metricValue(ctx, follower, "go_memstats_alloc_bytes_total")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("3 announcements of %d MiB frames made proxy %d allocate %.1f MiB", announced>>20, follower.ID, (after-before)/(1<<20))
	if grown := after - before; grown > 64<<20 {
		t.Fatalf("3 announced frames of %d MiB made the proxy allocate %.0f MiB", announced>>20, grown/(1<<20))
	}
}

// adminCalls: on every node, a call that changes the cluster without the
// token (or certificate) gets 401, one that is not JSON gets 415; proxy 3 has
// no token at all and refuses every bearer token.
func (a *attacker) adminCalls(t *testing.T) {
	ctx, cancel := a.ctx()
	defer cancel()
	noCert, err := admin.ClientCredentials{CAFile: filepath.Join(a.pc.Certs, "ca.pem")}.Options()
	if err != nil {
		t.Fatal(err)
	}
	anonymous := admin.NewClientWithOptions("", noCert).HTTP
	for _, p := range a.pc.Proxies {
		base := "https://" + p.Admin
		for _, token := range []string{"", "guessed-" + strconv.FormatUint(p.ID, 10)} {
			if code := post(ctx, t, anonymous, base+"/pause", token, "application/json"); code != http.StatusUnauthorized {
				t.Errorf("proxy %d: POST /pause with token %q: %d, want 401", p.ID, token, code)
			}
		}
		operator := p.Client()
		if code := post(ctx, t, operator.HTTP, base+"/pause", operator.Token, "text/plain"); code != http.StatusUnsupportedMediaType {
			t.Errorf("proxy %d: text/plain POST /pause as the operator: %d, want 415", p.ID, code)
		}
		if code := post(ctx, t, operator.HTTP, base+"/pause", operator.Token, "application/x-www-form-urlencoded"); code != http.StatusUnsupportedMediaType {
			t.Errorf("proxy %d: form POST /pause as the operator: %d, want 415", p.ID, code)
		}
		waitLog(ctx, t, p, "refused an admin call that changes the cluster", "reason=unauthorized")
		refused, err := metricValue(ctx, p, `pgquorum_admin_refused_requests_total{reason="unauthorized"}`)
		if err != nil || refused < 2 {
			t.Errorf("proxy %d counted %v unauthorized calls (%v), want at least 2", p.ID, refused, err)
		}
	}
	v, err := a.pc.Proxies[0].Cluster(ctx)
	if err != nil || v.Paused {
		t.Fatalf("the cluster was paused by a refused call (%v)", err)
	}
	// The operator's certificate works on the node without a token.
	tokenless := a.pc.Proxies[2]
	if err := tokenless.Client().SetPaused(ctx, true); err != nil {
		t.Fatalf("operator certificate on proxy %d: %v", tokenless.ID, err)
	}
	if err := tokenless.Client().SetPaused(ctx, false); err != nil {
		t.Fatal(err)
	}
}

func post(ctx context.Context, t *testing.T, client *http.Client, url, token, contentType string) int {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", contentType)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", url, err)
	}
	defer resp.Body.Close()
	return resp.StatusCode
}

// metricValue reads one sample (name with its labels, as exposed) from p's
// /metrics.
func metricValue(ctx context.Context, p *ProxyProcess, sample string) (float64, error) {
	c := p.Client()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.BaseURL+"/metrics", nil)
	if err != nil {
		return 0, err
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if value, ok := strings.CutPrefix(sc.Text(), sample+" "); ok {
			return strconv.ParseFloat(value, 64)
		}
	}
	return 0, fmt.Errorf("proxy %d: no sample %s in /metrics", p.ID, sample)
}
