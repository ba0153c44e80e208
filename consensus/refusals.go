package consensus

import "sync/atomic"

// RefusalReason is why something a peer sent, or a connection to this node, was refused: the
// "reason" label of pgquorum_raft_peer_refusals_total. The set is fixed, so that no label value
// comes from outside.
type RefusalReason int

const (
	RefusedConnectionLimit RefusalReason = iota // too many connections or handshakes from one source
	RefusedTLSHandshake                         // no valid certificate of this cluster (a stranger)
	RefusedHandshake                            // the protocol handshake failed (a claimed id that is not the certificate's, ...)
	RefusedMalformedFrame                       // an undecodable message, join request or peer call, or an unknown frame kind
	RefusedForgedSender                         // a Raft message naming another sender than the authenticated one
	RefusedNotAllowed                           // what the sender's role may not do (a learner voting or proposing, a removal notice from a non-leader, a bad join)
	numRefusalReasons
)

var refusalReasonNames = [numRefusalReasons]string{
	RefusedConnectionLimit: "connection_limit",
	RefusedTLSHandshake:    "tls_handshake",
	RefusedHandshake:       "handshake",
	RefusedMalformedFrame:  "malformed_frame",
	RefusedForgedSender:    "forged_sender",
	RefusedNotAllowed:      "not_allowed",
}

// String is the reason's label value.
func (r RefusalReason) String() string { return refusalReasonNames[r] }

// RefusalReasons lists every reason, in order.
func RefusalReasons() []RefusalReason {
	out := make([]RefusalReason, numRefusalReasons)
	for i := range out {
		out[i] = RefusalReason(i)
	}
	return out
}

// PeerRefusals counts refusals by reason. Written by the transport and the Raft loop, read by
// anyone; a nil *PeerRefusals counts nothing.
type PeerRefusals struct {
	counts [numRefusalReasons]atomic.Uint64
}

// add counts one refusal.
func (p *PeerRefusals) add(r RefusalReason) {
	if p != nil {
		p.counts[r].Add(1)
	}
}

// Snapshot returns the counts so far, indexed by RefusalReason.
func (p *PeerRefusals) Snapshot() [numRefusalReasons]uint64 {
	var out [numRefusalReasons]uint64
	if p == nil {
		return out
	}
	for i := range out {
		out[i] = p.counts[i].Load()
	}
	return out
}
