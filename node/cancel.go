package node

import (
	"context"
	"errors"

	"github.com/pgquorum/pgquorum/consensus"
)

// cancelService is the peer-call service that carries a cancel request from the proxy node a
// client sent it to, to the node that owns the session (SPEC §6, proxy.CancelForwarder).
const cancelService = "cancel"

// cancelOwnerBits masks the node id bits a protocol 3.0 cancel key carries (proxy/cancel.go).
const cancelOwnerBits = 1<<11 - 1

// cancelForwarder implements proxy.CancelForwarder over consensus peer calls.
type cancelForwarder struct{ raft *consensus.Node }

// ForwardCancel calls the owner (or, for a 3.0 key that names only the owner's 11 low bits,
// every other member with those bits) with the cancel key.
func (f cancelForwarder) ForwardCancel(ctx context.Context, owner uint64, exact bool, key []byte) error {
	self := f.raft.Status().ID
	var errs []error
	called := 0
	for _, m := range f.raft.Members() {
		if m.ID == self || (exact && m.ID != owner) || (!exact && m.ID&cancelOwnerBits != owner) {
			continue
		}
		called++
		if _, err := f.raft.Call(ctx, m.ID, cancelService, key); err != nil {
			errs = append(errs, err)
		}
	}
	if called == 0 {
		return errors.New("no member of the cluster owns this cancel key")
	}
	if len(errs) == called {
		return errors.Join(errs...)
	}
	return nil
}

// serveForwardedCancel is the cancel service's handler: any authenticated member may forward a
// client's cancel request; a key of no local session is counted by the proxy and dropped.
func (n *Node) serveForwardedCancel(ctx context.Context, from consensus.Sender, payload []byte) ([]byte, error) {
	n.proxy.CancelFromPeer(ctx, payload)
	return nil, nil
}
