package consensus

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/pgquorum/pgquorum/pki"
)

// echoService answers with "<caller id>/<role>:<payload>", so a test sees
// which authenticated sender the handler was given.
func echoService(_ context.Context, from Sender, payload []byte) ([]byte, error) {
	if string(payload) == "fail" {
		return nil, errors.New("asked to fail")
	}
	if string(payload) == "panic" {
		panic("asked to panic")
	}
	return fmt.Appendf(nil, "%d/%s:%s", from.ID, from.Role, payload), nil
}

func TestPeerCalls(t *testing.T) {
	c := newTestCluster(t, 3, nil)
	c.waitLeader()
	c.net.setRole(1, PeerVoter)
	c.net.setRole(3, PeerLearner)
	c.get(2).node.HandleCalls("echo", echoService)
	ctx := t.Context()

	t.Run("ReplyCarriesTheAuthenticatedCaller", func(t *testing.T) {
		got, err := c.get(1).node.Call(ctx, 2, "echo", []byte("hello"))
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != "1/voter:hello" {
			t.Fatalf("reply %q, want %q", got, "1/voter:hello")
		}
		got, err = c.get(3).node.Call(ctx, 2, "echo", []byte("hi"))
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != "3/learner:hi" {
			t.Fatalf("reply %q, want %q", got, "3/learner:hi")
		}
	})

	t.Run("HandlerErrorsAndPanicsReachTheCaller", func(t *testing.T) {
		for payload, want := range map[string]string{"fail": "asked to fail", "panic": "internal error"} {
			_, err := c.get(1).node.Call(ctx, 2, "echo", []byte(payload))
			var remote *RemoteCallError
			if !errors.As(err, &remote) || remote.Node != 2 || remote.Message != want {
				t.Fatalf("payload %q: err %v, want a RemoteCallError from node 2 saying %q", payload, err, want)
			}
		}
	})

	t.Run("UnknownService", func(t *testing.T) {
		_, err := c.get(1).node.Call(ctx, 3, "echo", nil) // only node 2 serves it
		var remote *RemoteCallError
		if !errors.As(err, &remote) || !strings.Contains(remote.Message, "no service") {
			t.Fatalf("err %v, want a RemoteCallError naming the missing service", err)
		}
	})

	t.Run("LimitsAndSelf", func(t *testing.T) {
		if _, err := c.get(1).node.Call(ctx, 1, "echo", nil); !errors.Is(err, ErrCallToSelf) {
			t.Fatalf("call to self: %v", err)
		}
		if _, err := c.get(1).node.Call(ctx, 2, "echo", make([]byte, MaxCallPayload+1)); err == nil {
			t.Fatal("an oversized payload was sent")
		}
		if _, err := c.get(1).node.Call(ctx, 2, strings.Repeat("s", maxServiceName+1), nil); err == nil {
			t.Fatal("an oversized service name was sent")
		}
	})

	t.Run("LostRequestEndsWithTheContext", func(t *testing.T) {
		c.net.isolate(2)
		defer c.net.heal()
		cctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
		defer cancel()
		_, err := c.get(1).node.Call(cctx, 2, "echo", []byte("lost"))
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("err %v, want the deadline", err)
		}
	})

	t.Run("ReplyFromAnotherMemberIsDropped", func(t *testing.T) {
		n := c.get(1).node
		slow := make(chan struct{})
		c.get(2).node.HandleCalls("slow", func(ctx context.Context, _ Sender, _ []byte) ([]byte, error) {
			select {
			case <-slow:
			case <-ctx.Done():
			}
			return []byte("genuine"), nil
		})
		done := make(chan []byte, 1)
		go func() {
			got, _ := n.Call(ctx, 2, "slow", nil)
			done <- got
		}()
		// Forge replies from node 3 for every call id node 1 is waiting on.
		waitFor(t, testWait, func() bool {
			n.calls.mu.Lock()
			defer n.calls.mu.Unlock()
			return len(n.calls.pending) == 1
		}, "the call is pending")
		n.calls.mu.Lock()
		var ids []uint64
		for id := range n.calls.pending {
			ids = append(ids, id)
		}
		n.calls.mu.Unlock()
		for _, id := range ids {
			n.deliverCall(Sender{ID: 3, Role: PeerVoter}, PeerCall{ID: id, Reply: true, Payload: []byte("forged")})
		}
		close(slow)
		if got := <-done; string(got) != "genuine" {
			t.Fatalf("reply %q, want the genuine one", got)
		}
	})
}

func TestPeerCallCodec(t *testing.T) {
	for _, c := range []PeerCall{
		{ID: 1, Service: "cancel", Payload: []byte{1, 2, 3}},
		{ID: 1<<63 + 5, Reply: true, Err: "no such key"},
		{ID: 7, Reply: true, Payload: bytes.Repeat([]byte("x"), MaxCallPayload)},
	} {
		b, err := encodeCall(c)
		if err != nil {
			t.Fatalf("encode %+v: %v", c.ID, err)
		}
		got, err := decodeCall(b)
		if err != nil {
			t.Fatalf("decode %d: %v", c.ID, err)
		}
		if got.ID != c.ID || got.Reply != c.Reply || got.Service != c.Service || got.Err != c.Err || !bytes.Equal(got.Payload, c.Payload) {
			t.Fatalf("round trip of %d changed it", c.ID)
		}
		b[len(b)-1] ^= 0xff // the decoded payload must not alias the frame buffer
		if len(got.Payload) > 0 && got.Payload[len(got.Payload)-1] != c.Payload[len(c.Payload)-1] {
			t.Fatal("decoded payload aliases the frame")
		}
	}
	if _, err := encodeCall(PeerCall{ID: 1, Payload: make([]byte, MaxCallPayload+1), Service: "x"}); err == nil {
		t.Fatal("oversized call encoded")
	}
	for name, b := range map[string][]byte{
		"short":          {0, 0, 0},
		"bad flags":      {0, 0, 0, 0, 0, 0, 0, 1, 4, 0, 0, 0},
		"service cut":    {0, 0, 0, 0, 0, 0, 0, 1, 0, 9, 'a'},
		"error cut":      {0, 0, 0, 0, 0, 0, 0, 1, 1, 0, 0, 9, 'e'},
		"request no svc": {0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0},
		"oversized":      append([]byte{0, 0, 0, 0, 0, 0, 0, 1, 0, 1, 's', 0, 0}, make([]byte, MaxCallPayload+1)...),
	} {
		if _, err := decodeCall(b); err == nil {
			t.Errorf("%s: decoded", name)
		}
	}
}

// TestPeerCallsOverTLS runs a call between two TCP transports with mutual
// TLS: the handler sees the identity of the caller's certificate.
func TestPeerCallsOverTLS(t *testing.T) {
	ca := testCA(t, "calls")
	serverInbox := &recordingInbox{}
	server := startTCPTransport(t, testCredentials(t, ca, 2, pki.RoleVoter), "calls", 2, serverInbox)
	client := startTCPTransport(t, testCredentials(t, ca, 1007, pki.RoleLearner), "calls", 1007, &recordingInbox{})
	client.SetPeer(2, server.Addr())
	if err := client.SendCall(2, PeerCall{ID: 9, Service: "lookup", Payload: []byte("alice")}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, testWait, func() bool {
		serverInbox.mu.Lock()
		defer serverInbox.mu.Unlock()
		return len(serverInbox.calls) == 1
	}, "the call arrives")
	serverInbox.mu.Lock()
	defer serverInbox.mu.Unlock()
	got, from := serverInbox.calls[0], serverInbox.callSenders[0]
	if got.ID != 9 || got.Service != "lookup" || string(got.Payload) != "alice" {
		t.Fatalf("call %+v", got)
	}
	if from != (Sender{ID: 1007, Role: PeerLearner}) {
		t.Fatalf("sender %+v, want the learner certificate's identity", from)
	}
	if err := client.SendCall(3, PeerCall{ID: 1, Service: "x"}); err == nil {
		t.Fatal("a call to a node without an address was queued")
	}
}
