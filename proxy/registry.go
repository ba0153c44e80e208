package proxy

import (
	"errors"
	"sync"
)

// sessionRegistry tracks the live sessions of a Server, for cancel routing and Shutdown. It is
// safe for concurrent use; mu also guards each session's cancelKey and cancelReady fields.
type sessionRegistry struct {
	nodeID uint64

	mu      sync.Mutex
	byPID   map[uint32]*session
	counter uint32 // last session counter handed out (20 bits used)
}

func newSessionRegistry(nodeID uint64) *sessionRegistry {
	return &sessionRegistry{nodeID: nodeID, byPID: make(map[uint32]*session)}
}

// errTooManySessions means every process id of this node is in use (about a million sessions).
var errTooManySessions = errors.New("no free session id")

// add registers s and assigns its process id, skipping ids still in use.
func (r *sessionRegistry) add(s *session) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	for range sessionIDMask {
		r.counter = (r.counter + 1) & sessionIDMask
		if r.counter == 0 {
			continue
		}
		pid := makeProcessID(r.nodeID, r.counter)
		if _, used := r.byPID[pid]; used {
			continue
		}
		s.pid = pid
		r.byPID[pid] = s
		return nil
	}
	return errTooManySessions
}

// remove unregisters s.
func (r *sessionRegistry) remove(s *session) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.byPID[s.pid] == s {
		delete(r.byPID, s.pid)
	}
}

// setCancelKey publishes the keys a cancel request needs: the proxy's secret handed to the
// client and the backend's real key.
func (r *sessionRegistry) setCancelKey(s *session, clientSecret []byte, key backendCancelKey) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s.clientSecret = clientSecret
	s.cancelKey = key
	s.cancelReady = true
}

// updateCancelKey publishes the key of the session's new backend after a move; the key the
// client holds does not change.
func (r *sessionRegistry) updateCancelKey(s *session, key backendCancelKey) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s.cancelKey = key
}

// cancelTarget finds the session with the given proxy key and returns it with its backend's key.
func (r *sessionRegistry) cancelTarget(pid uint32, secret []byte) (*session, backendCancelKey, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.byPID[pid]
	if s == nil || !s.cancelReady || !secretsEqual(s.clientSecret, secret) {
		return nil, backendCancelKey{}, false
	}
	return s, s.cancelKey, true
}

// all returns the live sessions.
func (r *sessionRegistry) all() []*session {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]*session, 0, len(r.byPID))
	for _, s := range r.byPID {
		out = append(out, s)
	}
	return out
}

// count returns the number of live sessions.
func (r *sessionRegistry) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.byPID)
}
