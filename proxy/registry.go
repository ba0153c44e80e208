package proxy

import "sync"

// sessionRegistry tracks the live sessions of a Server, for cancel routing and Shutdown. It is
// safe for concurrent use; mu also guards each session's clientPID, clientSecret, cancelKey and
// cancelReady fields.
type sessionRegistry struct {
	mu      sync.Mutex
	byID    map[uint64]*session
	byPID   map[uint32][]*session // by the process id the client was given (usually one each)
	counter uint64                // last session id handed out
}

func newSessionRegistry() *sessionRegistry {
	return &sessionRegistry{byID: make(map[uint64]*session), byPID: make(map[uint32][]*session)}
}

// add registers s and assigns its session id (for logs).
func (r *sessionRegistry) add(s *session) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.counter++
	s.id = r.counter
	r.byID[s.id] = s
}

// remove unregisters s.
func (r *sessionRegistry) remove(s *session) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.byID[s.id] == s {
		delete(r.byID, s.id)
	}
	if s.cancelReady {
		r.unindexLocked(s)
	}
}

func (r *sessionRegistry) unindexLocked(s *session) {
	list := r.byPID[s.clientPID]
	for i, x := range list {
		if x == s {
			list = append(list[:i], list[i+1:]...)
			break
		}
	}
	if len(list) == 0 {
		delete(r.byPID, s.clientPID)
	} else {
		r.byPID[s.clientPID] = list
	}
}

// setCancelKey publishes the keys a cancel request needs: the BackendKeyData handed to the
// client (the first backend's process id and the proxy's secret) and the backend's real key.
func (r *sessionRegistry) setCancelKey(s *session, clientPID uint32, clientSecret []byte, key backendCancelKey) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if s.cancelReady {
		r.unindexLocked(s)
	}
	s.clientPID, s.clientSecret = clientPID, clientSecret
	s.cancelKey = key
	s.cancelReady = true
	r.byPID[clientPID] = append(r.byPID[clientPID], s)
}

// updateCancelKey publishes the key of the session's new backend after a move; the key the
// client holds does not change.
func (r *sessionRegistry) updateCancelKey(s *session, key backendCancelKey) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s.cancelKey = key
}

// cancelTarget finds the session the client key (pid, secret) was handed to and returns it
// with its backend's key. The secrets are compared in constant time.
func (r *sessionRegistry) cancelTarget(pid uint32, secret []byte) (*session, backendCancelKey, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, s := range r.byPID[pid] {
		if secretsEqual(s.clientSecret, secret) {
			return s, s.cancelKey, true
		}
	}
	return nil, backendCancelKey{}, false
}

// all returns the live sessions.
func (r *sessionRegistry) all() []*session {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]*session, 0, len(r.byID))
	for _, s := range r.byID {
		out = append(out, s)
	}
	return out
}

// count returns the number of live sessions.
func (r *sessionRegistry) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.byID)
}
