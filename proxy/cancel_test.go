package proxy

import (
	"bytes"
	"encoding/binary"
	"testing"
)

func TestCancelKeyLayout(t *testing.T) {
	tests := []struct {
		name          string
		nodeID        uint64
		protocolMinor uint16
		wantSecretLen int
		wantOwner     uint64
		wantExact     bool
	}{
		{"3.0 small node", 3, 0, 4, 3, false},
		{"3.0 largest exact node", 2047, 0, 4, 2047, false},
		{"3.0 node folded modulo 2048", 2048 + 5, 0, 4, 5, false},
		{"3.1 uses the short key", 9, 1, 4, 9, false},
		{"3.2 carries the full node id", 2048 + 5, 2, 32, 2048 + 5, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			secret, err := newSecretKey(tt.nodeID, tt.protocolMinor)
			if err != nil {
				t.Fatal(err)
			}
			if len(secret) != tt.wantSecretLen {
				t.Fatalf("secret of %d bytes, want %d", len(secret), tt.wantSecretLen)
			}
			owner, exact, ok := ownerNodeID(secret)
			if !ok || owner != tt.wantOwner || exact != tt.wantExact {
				t.Fatalf("owner %d exact %v ok %v, want %d %v", owner, exact, ok, tt.wantOwner, tt.wantExact)
			}
			again, _ := newSecretKey(tt.nodeID, tt.protocolMinor)
			if bytes.Equal(secret, again) {
				t.Fatal("two secrets are equal: not random")
			}
		})
	}
	for _, bad := range [][]byte{{1, 2, 3}, bytes.Repeat([]byte{2}, 32), bytes.Repeat([]byte{1}, 16)} {
		if _, _, ok := ownerNodeID(bad); ok {
			t.Errorf("key %x of a layout the proxy never hands out was accepted", bad)
		}
	}
}

func TestAppendCancelRequest(t *testing.T) {
	for _, secret := range [][]byte{{1, 2, 3, 4}, bytes.Repeat([]byte{7}, 256)} {
		b := appendCancelRequest(nil, 99, secret)
		if int(binary.BigEndian.Uint32(b)) != len(b) {
			t.Fatalf("length word %d, packet %d bytes", binary.BigEndian.Uint32(b), len(b))
		}
		pkt, err := parseStartupPacket(b[4:])
		if err != nil || pkt.Kind != kindCancelRequest || pkt.CancelProcessID != 99 || !bytes.Equal(pkt.CancelSecret, secret) {
			t.Fatalf("round trip: %+v, %v", pkt, err)
		}
	}
}

func TestRegistryFindsSessionsByTheirClientKey(t *testing.T) {
	r := newSessionRegistry()
	var sessions []*session
	for range 5 {
		s := &session{}
		r.add(s)
		sessions = append(sessions, s)
	}
	if sessions[0].id == sessions[1].id {
		t.Fatal("two sessions with one id")
	}
	// Two sessions given the same pid (backends on two servers): the secret tells them apart.
	key := backendCancelKey{address: "127.0.0.1:1", processID: 5, secret: []byte{9, 9, 9, 9}}
	r.setCancelKey(sessions[0], 5, []byte{1, 2, 3, 4}, key)
	r.setCancelKey(sessions[2], 5, []byte{1, 2, 3, 7}, backendCancelKey{address: "127.0.0.1:2", processID: 5})
	if _, _, ok := r.cancelTarget(5, []byte{1, 2, 3, 5}); ok {
		t.Fatal("wrong secret accepted")
	}
	if _, _, ok := r.cancelTarget(6, []byte{1, 2, 3, 4}); ok {
		t.Fatal("wrong pid accepted")
	}
	sess, got, ok := r.cancelTarget(5, []byte{1, 2, 3, 4})
	if !ok || sess != sessions[0] || got.processID != 5 || got.address != key.address {
		t.Fatalf("cancel target %+v %v", got, ok)
	}
	// After a move the client's key finds the new backend's key.
	r.updateCancelKey(sessions[0], backendCancelKey{address: "127.0.0.1:3", processID: 77})
	if _, got, _ := r.cancelTarget(5, []byte{1, 2, 3, 4}); got.processID != 77 {
		t.Fatalf("after a move the cancel goes to %+v", got)
	}
	r.remove(sessions[0])
	if _, _, ok := r.cancelTarget(5, []byte{1, 2, 3, 4}); ok || r.count() != 4 {
		t.Fatal("removed session still found")
	}
	if s, _, ok := r.cancelTarget(5, []byte{1, 2, 3, 7}); !ok || s != sessions[2] {
		t.Fatal("the other session with the same pid was lost")
	}
}
