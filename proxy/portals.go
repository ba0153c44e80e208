package proxy

// Named portals
//
// The client→backend relay remembers what each named portal runs (its statement's class, for
// Execute), keyed the way PostgreSQL keys them, and forgets them when PostgreSQL does, so that a
// client cannot grow the proxy's memory with portal names:
//
//   - A portal lives until its transaction ends: at a ReadyForQuery that says idle ('I'), every
//     portal bound by the requests it answers is gone (an error in an implicit transaction ends
//     it at the Sync as well; Bind never makes a holdable portal). The backend→client relay
//     publishes which requests that covers (session.idleThrough); the client→backend relay drops
//     those portals at its next named Bind. Requests pipelined after it keep theirs.
//   - PostgreSQL's portal table keys a name by its first NAMEDATALEN-1 (63) bytes, so a longer
//     name costs the proxy no more than those bytes.
//   - Inside one transaction at most maxTrackedPortals are remembered. PostgreSQL also drops the
//     portals of a subtransaction rolled back after an error, which the proxy does not follow;
//     past the bound a new portal is not remembered, and an Execute of a portal the proxy does
//     not know is then taken as the worst case (it may change session state: the session
//     becomes unmovable) instead of as a name PostgreSQL will reject.
//
// Server.Stats().NamedPortals counts the portals remembered by every session.

// maxPortalKey is NAMEDATALEN-1: PostgreSQL's portal table compares this many bytes of a name.
const maxPortalKey = 63

// maxTrackedPortals bounds the named portals a session remembers within one transaction.
const maxTrackedPortals = 128

// portalEntry is a named portal: what it runs, and the request that bound it.
type portalEntry struct {
	class stmtClass
	seg   uint64 // index of the request that bound it (requests sent before it)
}

// portalKey is the key PostgreSQL's portal table uses for name.
func portalKey(name []byte) []byte {
	if len(name) > maxPortalKey {
		return name[:maxPortalKey]
	}
	return name
}

// bindPortal records a Bind of the named portal name in request seg, which runs class. s.mu is
// held.
func (c *clientSide) bindPortal(s *session, name []byte, seg uint64, class stmtClass) {
	c.forgetEndedPortals(s)
	key := portalKey(name)
	if _, ok := c.portals[string(key)]; ok {
		// The name is reused by a request pipelined after the end of its transaction (whose
		// ReadyForQuery has not arrived), or PostgreSQL will refuse it (42P03: the request
		// fails, and nothing after the Bind runs): either way the new portal is the one an
		// Execute can run.
		c.portals[string(key)] = portalEntry{class: class, seg: seg}
		return
	}
	if len(c.portals) >= maxTrackedPortals {
		c.portalsOverflow = true
		return
	}
	if c.portals == nil {
		c.portals = make(map[string]portalEntry)
	}
	c.portals[string(key)] = portalEntry{class: class, seg: seg}
	s.srv.counters.namedPortals.Add(1)
}

// portal returns what the named portal runs for an Execute.
func (c *clientSide) portal(name []byte) stmtClass {
	if e, ok := c.portals[string(portalKey(name))]; ok {
		return e.class
	}
	if c.portalsOverflow {
		return stmtClass{sum: worstCase}
	}
	return stmtClass{sum: unknownStatement} // PostgreSQL will answer 34000
}

// closePortal forgets the named portal (Close).
func (c *clientSide) closePortal(s *session, name []byte) {
	key := portalKey(name)
	if _, ok := c.portals[string(key)]; ok {
		delete(c.portals, string(key))
		s.srv.counters.namedPortals.Add(-1)
	}
}

// forgetEndedPortals drops the portals of the requests a ReadyForQuery 'I' has answered since
// the last call. s.mu is held.
func (c *clientSide) forgetEndedPortals(s *session) {
	if s.idleThrough == c.portalsEndedThrough {
		return
	}
	c.portalsEndedThrough = s.idleThrough
	for key, e := range c.portals {
		if e.seg < s.idleThrough {
			delete(c.portals, key)
			s.srv.counters.namedPortals.Add(-1)
		}
	}
	if len(c.portals) == 0 {
		c.portals = nil // a map does not shrink: let a flood's one go
		c.portalsOverflow = false
	}
}

// forgetPortals drops every portal: the backend they lived on is gone (a move), or the session
// ends.
func (c *clientSide) forgetPortals(s *session) {
	s.srv.counters.namedPortals.Add(-int64(len(c.portals)))
	c.portals = nil
	c.portalsOverflow = false
}
