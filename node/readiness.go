package node

import "time"

// Ready says whether this proxy can serve clients, besides routing to an
// agreed primary (which GET /readyz checks first): it is not draining, and it
// can open and authenticate a new session to the primary (loginCheck; not on
// a sidecar without a query user, auth.lookup: voters).
// admin.Readiness.
func (n *Node) Ready() (bool, string) {
	if n.drain.started.Load() {
		return false, "draining since " + n.drain.since.Format(time.RFC3339) + ": this proxy takes no new clients"
	}
	v := n.router.Current()
	if !v.Routing {
		return false, v.Reason
	}
	if n.login == nil {
		return true, ""
	}
	return n.login.Ready(v.Target)
}
