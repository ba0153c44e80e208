package consensus

import (
	"encoding/binary"
	"time"
)

// leaseTracker turns ReadIndex answers into a routing lease. Pure logic, no
// clock of its own: callers pass the time. Owner: the Raft loop.
//
// A ReadIndex request sent at time t that comes back with index i proves that
// some time after t a quorum confirmed the leader that answered, and that the
// log up to i was committed then. Once this node has applied i, its view is
// at least that fresh, so it may act on it until t + duration.
type leaseTracker struct {
	duration time.Duration

	nextID uint64
	// sent maps request ids to their send times, until answered or too old
	// to extend the lease.
	sent map[uint64]time.Time
	// answered are answers whose index this node has not applied yet.
	answered []answeredRead
	// validUntil is the end of the lease; zero when none.
	validUntil time.Time
}

type answeredRead struct {
	index  uint64
	sentAt time.Time
}

func newLeaseTracker(duration time.Duration) *leaseTracker {
	return &leaseTracker{duration: duration, sent: make(map[uint64]time.Time)}
}

// A ReadIndex context is 16 bytes: the request id, then the highest index
// whose routing this member confirmed (see fence.go), both big-endian.
const readContextSize = 16

// request records a ReadIndex request sent at now and returns its context
// bytes for RawNode.ReadIndex, carrying the confirmed routing index.
func (l *leaseTracker) request(now time.Time, confirmed uint64) []byte {
	ctx := l.token(confirmed)
	l.sent[l.nextID] = now
	return ctx
}

// token returns the context of a ReadIndex that does not renew this node's
// lease (the leader's batch while its own renewal is withheld).
func (l *leaseTracker) token(confirmed uint64) []byte {
	l.nextID++
	ctx := make([]byte, readContextSize)
	binary.BigEndian.PutUint64(ctx, l.nextID)
	binary.BigEndian.PutUint64(ctx[8:], confirmed)
	return ctx
}

// confirmedIn returns the confirmed routing index a ReadIndex context
// carries (0 for a context without one).
func confirmedIn(ctx []byte) uint64 {
	if len(ctx) != readContextSize {
		return 0
	}
	return binary.BigEndian.Uint64(ctx[8:])
}

// answer handles a ReadState: the request with context ctx was answered with
// index. applied is this node's applied index.
func (l *leaseTracker) answer(ctx []byte, index, applied uint64) {
	if len(ctx) != readContextSize {
		return
	}
	id := binary.BigEndian.Uint64(ctx)
	sentAt, ok := l.sent[id]
	if !ok {
		return // pruned or not ours
	}
	delete(l.sent, id)
	if index <= applied {
		l.extend(sentAt)
		return
	}
	l.answered = append(l.answered, answeredRead{index: index, sentAt: sentAt})
}

// applied extends the lease with every answer whose index is now applied.
func (l *leaseTracker) applied(applied uint64) {
	kept := l.answered[:0]
	for _, a := range l.answered {
		if a.index <= applied {
			l.extend(a.sentAt)
		} else {
			kept = append(kept, a)
		}
	}
	l.answered = kept
}

func (l *leaseTracker) extend(sentAt time.Time) {
	if until := sentAt.Add(l.duration); until.After(l.validUntil) {
		l.validUntil = until
	}
}

// prune forgets requests and answers that could no longer extend the lease.
func (l *leaseTracker) prune(now time.Time) {
	for id, sentAt := range l.sent {
		if !sentAt.Add(l.duration).After(now) {
			delete(l.sent, id)
		}
	}
	kept := l.answered[:0]
	for _, a := range l.answered {
		if a.sentAt.Add(l.duration).After(now) {
			kept = append(kept, a)
		}
	}
	l.answered = kept
}

// revoke ends the lease now (the node stopped or was removed).
func (l *leaseTracker) revoke() {
	l.validUntil = time.Time{}
	l.answered = nil
	clear(l.sent)
}

// valid reports whether the lease covers now.
func (l *leaseTracker) valid(now time.Time) bool {
	return now.Before(l.validUntil)
}
