package node

import "time"

// Ready says whether this proxy can serve clients, besides routing (which
// GET /readyz checks first): admin.Readiness.
func (n *Node) Ready() (bool, string) {
	if n.drain.started.Load() {
		return false, "draining since " + n.drain.since.Format(time.RFC3339) + ": this proxy takes no new clients"
	}
	return true, ""
}
