package consensus

import (
	"fmt"
	"net"
	"sync"
	"time"
)

// Caps on inbound peer connections from one source IP address. A connection
// that has not finished its handshake is unauthenticated and costs a
// goroutine and a TLS state for up to handshakeTimeout; an authenticated one
// is at most one per node id (a newer one replaces it), so the total cap only
// has to leave room for many learners behind one address (NAT, or a test
// running them all on loopback).
const (
	maxHandshakesPerSource = 16
	maxConnsPerSource      = 256
)

// sourceCounts counts inbound connections per source IP. Owner: the
// transport's mutex.
type sourceCounts map[string]*sourceCount

type sourceCount struct {
	conns       int // every open inbound connection
	handshaking int // of which still in the handshake
}

// admit counts a new connection from source, or says why it is refused.
func (s sourceCounts) admit(source string) (refused string) {
	c := s[source]
	if c == nil {
		c = &sourceCount{}
		s[source] = c
	}
	switch {
	case c.handshaking >= maxHandshakesPerSource:
		return fmt.Sprintf("%d connections from %s are already in their handshake", c.handshaking, source)
	case c.conns >= maxConnsPerSource:
		return fmt.Sprintf("%d connections from %s are already open", c.conns, source)
	}
	c.conns++
	c.handshaking++
	return ""
}

// handshakeDone moves a connection of source out of the handshake.
func (s sourceCounts) handshakeDone(source string) {
	if c := s[source]; c != nil && c.handshaking > 0 {
		c.handshaking--
	}
}

// release forgets a closed connection of source (still handshaking or not).
func (s sourceCounts) release(source string, handshaking bool) {
	c := s[source]
	if c == nil {
		return
	}
	c.conns--
	if handshaking && c.handshaking > 0 {
		c.handshaking--
	}
	if c.conns <= 0 {
		delete(s, source)
	}
}

// sourceOf is the IP address a connection comes from.
func sourceOf(conn net.Conn) string {
	host, _, err := net.SplitHostPort(conn.RemoteAddr().String())
	if err != nil {
		return conn.RemoteAddr().String()
	}
	return host
}

// logLimiter lets a log line through once per interval per key, so a peer
// that keeps failing (or an attacker) cannot flood the log. Safe for
// concurrent use.
type logLimiter struct {
	interval time.Duration
	mu       sync.Mutex
	last     map[string]time.Time
}

// maxLimiterKeys bounds the limiter's memory; past it, it starts over.
const maxLimiterKeys = 4096

func newLogLimiter(interval time.Duration) *logLimiter {
	return &logLimiter{interval: interval, last: make(map[string]time.Time)}
}

func (l *logLimiter) allow(key string) bool {
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if at, ok := l.last[key]; ok && now.Sub(at) < l.interval {
		return false
	}
	if len(l.last) >= maxLimiterKeys {
		clear(l.last)
	}
	l.last[key] = now
	return true
}
