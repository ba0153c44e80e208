// Package consensus runs one pgquorum proxy's Raft member: the etcd raft
// RawNode, its durable log in bbolt, the mutual-TLS transport between
// proxies, membership (voters and learners) and routing leases.
//
// # What it owns
//
// A Node owns one goroutine, the Raft loop, which is the only code that
// touches the RawNode, the storage, the state machine and the member address
// book. Everything else talks to the loop through channels (proposals, conf
// changes, leadership transfers, messages from peers) and reads immutable
// snapshots the loop publishes (Status, Members, the lease). The loop handles
// one raft.Ready at a time, in this order:
//
//  1. persist the snapshot, the new entries and the HardState to bbolt in one
//     transaction (bbolt fsyncs on commit), then mirror them into the
//     raft.MemoryStorage that raft reads from;
//  2. install a received snapshot into the state machine and address book;
//  3. send the messages (only now, because they may promise what was persisted);
//  4. apply the committed entries: normal entries go to StateMachine.Apply and
//     their result back to the local proposer; conf changes go to
//     RawNode.ApplyConfChange and the address book;
//  5. confirm leases from ReadIndex answers, then Advance;
//  6. every SnapshotEvery applied entries, snapshot the state machine and the
//     address book, and compact the log.
//
// # Storage
//
// The log lives in DataDir/raft.db (bbolt): a "meta" bucket (cluster name,
// node id, HardState, latest snapshot) and an "entries" bucket keyed by the
// big-endian index. At start the file is read back into a raft.MemoryStorage
// (snapshot first, then HardState and entries); from then on every write goes
// to bbolt first and to memory second. Restart replays the committed entries
// after the snapshot into the (in-memory) state machine, so it ends exactly
// where it was.
//
// # Membership
//
// A fresh voter bootstraps the initial membership from Config.Peers (the same
// conf-change entries on every voter, each carrying the member's address in
// its context). A node whose DataDir already holds state ignores Peers for
// membership. A fresh learner (Voter=false) starts with an empty log and sends
// Join requests to the peers (a follower forwards one to its leader) until the
// leader adds it with ConfChangeAddLearnerNode, the learner's address in the
// change's context. To add a voter to a running cluster, start it as a
// learner, then promote it with AddMember(id, addr, false). Membership changes
// are queued and proposed one at a time, retried until applied. Removed ids are
// remembered (in the replicated address book) and never re-added; a removed
// node stops with ErrRemoved when it applies its own removal, or when the
// leader or a majority of its voters tell it (it keeps sending to members that
// no longer answer it); one other peer's word is not enough.
//
// # Peers and what they may do
//
// The TCP transport (tcp_*.go) speaks mutual TLS 1.3 with Config.PeerTLS: a
// peer's node id and role (voter or learner) come from its certificate, the
// handshake's claimed id must be covered by it, and a frame whose sender is not
// the authenticated node closes the connection. Every item reaches the loop
// with its Sender; peerauth.go decides what a sender may do: a learner
// certificate may acknowledge, renew its lease, propose what
// Config.LearnerProposals admits and join as itself, never vote, append, lead,
// propose a membership change or speak for a voter's id. Frames are bounded
// before authentication (the handshake) and after (maxFrameSize, read as the
// bytes arrive), connections are capped per source address, idle ones closed.
// Config.Plaintext (security.insecure) takes peers at their word instead.
//
// # Leases
//
// Every two ticks each member issues a ReadIndex (learners too; raft forwards
// it to the leader). When the answer arrives and the local state machine has
// applied that index, this node's view was confirmed by a quorum at some point
// after the request was sent, so the lease runs until send time +
// LeaseDuration. LeaseValid says whether the proxy may forward traffic. A node
// cut off from the quorum receives no answers and loses its lease at most
// LeaseDuration after the cut.
//
// # Routing fences
//
// Every ReadIndex context also carries the highest applied index whose routing
// this member confirmed (ConfirmRouting, called by the router once the proxy
// acted on it), and a new confirmation sends one at once. The leader batches
// and answers them (reads.go), so it knows per member what it confirmed and
// when it last granted it a lease. FenceRouting(i), on the leader, returns once
// every member confirmed i or provably lost its lease (LeaseDuration·1.01 +
// FenceMargin after the last renewal this leader granted it, or after this
// leader's election for leases granted before), withholding renewals meanwhile
// from members that have not confirmed i. The failover coordinator calls it
// before it touches PostgreSQL, so no proxy can still route to an old primary
// once a new one is promoted. The assumptions (clock rates within
// ClockRateBound, a proxy acting on its expired lease within FenceMargin) are in
// fence.go.
//
// # Disaster recovery
//
// A node whose log was lost (an emptied or replaced DataDir) and that restarts
// under its old id stops with ErrLogLost as soon as the leader shows it had
// acknowledged more than it now has, with the replacement procedure in the
// error. After the loss of a majority of the voters, InspectLog and
// ForceNewCluster (offline, on the stopped survivor whose log goes furthest)
// make a one-voter cluster that keeps every entry of that log (recover.go).
//
// # Peer calls
//
// Besides Raft, the transport carries peer calls (calls.go): a small
// request/reply service between members, authenticated like every frame.
// Other packages register a handler by name (HandleCalls) and call it on
// another member (Call): a cancel request that reached the wrong proxy, a
// learner asking a voter for a role's verifier. The handler gets the caller's
// authenticated id and role and decides what it may ask. Calls are bounded
// (payload size, handlers running at once, time) and best effort: a lost
// request or reply ends with the caller's context.
//
// # Failure
//
// A storage error, an undecodable snapshot, a panic inside raft (a broken
// invariant, e.g. a log lost behind raft's back) or a committed entry the state
// machine cannot apply although the others do (ErrCannotApply: it needs a newer
// version) stops the node: Done is closed, Err says why, the lease is gone, so
// the proxy fails closed. Close
// stops it deliberately, after handing leadership to another voter.
//
// # What it must not do
//
// This package does not know what the replicated state means: it only sees
// the StateMachine interface (package consensus/clusterstate implements it).
// It never blocks the Raft loop on the network: each peer has its own sender
// goroutine with a bounded queue that drops (and reports the peer unreachable)
// when full.
package consensus
