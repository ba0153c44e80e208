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

// cancelTarget finds the session with the given proxy key and returns its backend's key.
func (r *sessionRegistry) cancelTarget(pid uint32, secret []byte) (backendCancelKey, bool) {
	r.mu.Lock()
	s := r.byPID[pid]
	if s == nil || !s.cancelReady || !secretsEqual(s.clientSecret, secret) {
		r.mu.Unlock()
		return backendCancelKey{}, false
	}
	key := s.cancelKey
	r.mu.Unlock()
	if !s.cancelPermitted() {
		return backendCancelKey{}, false
	}
	return key, true
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
