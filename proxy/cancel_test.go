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
		counter       uint32
		protocolMinor uint16
		wantPID       uint32
		wantSecretLen int
		wantOwner     uint64
		wantExact     bool
	}{
		{"3.0 small node", 3, 42, 0, 3<<20 | 42, 4, 3, false},
		{"3.0 largest exact node", 2047, 1, 0, 2047<<20 | 1, 4, 2047, false},
		{"3.0 node folded modulo 2048", 2048 + 5, 7, 0, 5<<20 | 7, 4, 5, false},
		{"3.1 uses the short key", 9, 7, 1, 9<<20 | 7, 4, 9, false},
		{"3.2 carries the full node id", 2048 + 5, 7, 2, 5<<20 | 7, 32, 2048 + 5, true},
		{"counter wraps into 20 bits", 1, 1<<20 | 9, 2, 1<<20 | 9, 32, 1, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pid := makeProcessID(tt.nodeID, tt.counter)
			if pid != tt.wantPID || pid>>31 != 0 {
				t.Fatalf("process id %#x, want %#x (bit 31 clear)", pid, tt.wantPID)
			}
			secret, err := newSecretKey(tt.nodeID, tt.protocolMinor)
			if err != nil {
				t.Fatal(err)
			}
			if len(secret) != tt.wantSecretLen {
				t.Fatalf("secret of %d bytes, want %d", len(secret), tt.wantSecretLen)
			}
			owner, exact := ownerNodeID(pid, secret)
			if owner != tt.wantOwner || exact != tt.wantExact {
				t.Fatalf("owner %d exact %v, want %d %v", owner, exact, tt.wantOwner, tt.wantExact)
			}
			again, _ := newSecretKey(tt.nodeID, tt.protocolMinor)
			if bytes.Equal(secret, again) {
				t.Fatal("two secrets are equal: not random")
			}
		})
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

func TestRegistryAssignsUniqueProcessIDs(t *testing.T) {
	r := newSessionRegistry(4)
	r.counter = sessionIDMask - 1 // about to wrap
	seen := map[uint32]bool{}
	var sessions []*session
	for range 5 {
		s := &session{}
		if err := r.add(s); err != nil {
			t.Fatal(err)
		}
		if seen[s.pid] || s.pid&sessionIDMask == 0 || nodeBitsOfProcessID(s.pid) != 4 {
			t.Fatalf("bad or duplicate process id %#x", s.pid)
		}
		seen[s.pid] = true
		sessions = append(sessions, s)
	}
	// A cancel needs the right secret, and a session that is ready.
	key := backendCancelKey{address: "127.0.0.1:1", processID: 5, secret: []byte{9, 9, 9, 9}}
	r.setCancelKey(sessions[0], []byte{1, 2, 3, 4}, key)
	if _, _, ok := r.cancelTarget(sessions[0].pid, []byte{1, 2, 3, 5}); ok {
		t.Fatal("wrong secret accepted")
	}
	if _, _, ok := r.cancelTarget(sessions[1].pid, nil); ok {
		t.Fatal("session without a backend accepted a cancel")
	}
	sess, got, ok := r.cancelTarget(sessions[0].pid, []byte{1, 2, 3, 4})
	if !ok || sess != sessions[0] || got.processID != 5 || got.address != key.address {
		t.Fatalf("cancel target %+v %v", got, ok)
	}
	r.remove(sessions[0])
	if _, _, ok := r.cancelTarget(sessions[0].pid, []byte{1, 2, 3, 4}); ok || r.count() != 4 {
		t.Fatal("removed session still found")
	}
}
