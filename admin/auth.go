package admin

import (
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"sync"
	"time"

	"github.com/pgquorum/pgquorum/pki"
)

// CertificateVerifier verifies a client certificate chain against the
// cluster CA and returns the holder's identity (*pki.Credentials).
type CertificateVerifier interface {
	Verify(chain []*x509.Certificate, usage x509.ExtKeyUsage) (pki.Identity, error)
}

// Reasons a mutating call is refused (the "reason" label of
// pgquorum_admin_refused_requests_total).
const (
	RefusedUnauthorized = "unauthorized"           // 401: no valid token or operator certificate
	RefusedContentType  = "unsupported_media_type" // 415: not a JSON request
)

// mutating wraps a handler that changes the cluster: the caller must be an
// operator (authorize), on a voter, sending JSON.
func (s *Server) mutating(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if err := s.authorize(r); err != nil {
			s.refuse(r, RefusedUnauthorized, err)
			w.Header().Set("WWW-Authenticate", `Bearer realm="pgquorum"`)
			writeError(w, http.StatusUnauthorized, "this call changes the cluster and needs the operators' bearer token "+
				"(admin.token_file; pgquorum --token-file) or an operator's client certificate: "+err.Error())
			return
		}
		if !isJSON(r.Header.Get("Content-Type")) {
			err := fmt.Errorf("Content-Type %q", r.Header.Get("Content-Type"))
			s.refuse(r, RefusedContentType, err)
			writeError(w, http.StatusUnsupportedMediaType, "calls that change the cluster take Content-Type: application/json only")
			return
		}
		if s.Raft != nil && !s.Raft.Status().Voter {
			writeError(w, http.StatusForbidden, "this node is a learner (sidecar): it takes no calls that change the cluster; use a voter's admin API")
			return
		}
		h(w, r)
	}
}

// authorize says why r is not an operator's call (nil: it is).
func (s *Server) authorize(r *http.Request) error {
	if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 && s.Operators != nil {
		id, err := s.Operators.Verify(r.TLS.PeerCertificates, x509.ExtKeyUsageClientAuth)
		switch {
		case err != nil:
			return err
		case id.Role != pki.RoleClient || id.Cluster != s.ClusterName:
			return fmt.Errorf("certificate %s is not an operator's of cluster %q", id, s.ClusterName)
		}
		return nil
	}
	token := s.currentToken()
	if token == "" {
		if s.Insecure {
			return nil
		}
		return errors.New("this node has no token configured, so only an operator certificate over HTTPS can authorize the call")
	}
	got := r.Header.Get("Authorization")
	if tokenMatches(got, "Bearer "+token) {
		return nil
	}
	if got == "" {
		return errors.New("no Authorization header")
	}
	return errors.New("wrong token")
}

// tokenMatches compares in constant time, without revealing the token's
// length: it compares digests, which are always as long as each other.
func tokenMatches(got, want string) bool {
	g, w := sha256.Sum256([]byte(got)), sha256.Sum256([]byte(want))
	return subtle.ConstantTimeCompare(g[:], w[:]) == 1
}

// isJSON reports whether a Content-Type is application/json (parameters such
// as charset allowed).
func isJSON(contentType string) bool {
	mt, _, err := mime.ParseMediaType(contentType)
	return err == nil && mt == "application/json"
}

// refuse counts a refused call and logs it, at most once a second (a burst
// of refusals is summed up in the next line).
func (s *Server) refuse(r *http.Request, reason string, err error) {
	if s.Refused != nil {
		s.Refused(reason)
	}
	if suppressed, ok := s.refusals.allow(time.Now()); ok {
		s.logger().Warn("refused an admin call that changes the cluster", "reason", reason, "method", r.Method,
			"path", r.URL.Path, "remote", r.RemoteAddr, "detail", err.Error(), "refused_since_last_log", suppressed)
	}
}

// refusalLog rate-limits the warning about refused calls. Safe for
// concurrent use.
type refusalLog struct {
	mu         sync.Mutex
	last       time.Time
	suppressed int
}

// allow says whether to log now, and how many refusals went unlogged since
// the last line.
func (l *refusalLog) allow(now time.Time) (suppressed int, ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.last) < time.Second {
		l.suppressed++
		return 0, false
	}
	suppressed, l.suppressed, l.last = l.suppressed, 0, now
	return suppressed, true
}
