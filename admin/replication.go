package admin

import (
	"time"

	"github.com/pgquorum/pgquorum/health"
)

// WalSenderView is one standby's walsender on the agreed primary
// (pg_stat_replication), as the answering proxy's latest probe of the primary
// saw it.
type WalSenderView struct {
	State     string `json:"state"`      // startup, catchup, streaming, backup, stopping
	SyncState string `json:"sync_state"` // quorum or sync: it acknowledges commits; potential, async: it does not
	FlushLSN  uint64 `json:"flush_lsn,omitempty"`
}

// PrimaryProbeView says which probe of the agreed primary the replication
// figures of GET /cluster come from: the answering proxy's own latest one.
type PrimaryProbeView struct {
	At        time.Time `json:"at"`
	Reachable bool      `json:"reachable"`
	Err       string    `json:"error,omitempty"`
}

// primaryProbe is this proxy's latest probe of primary, if it has one.
func (s *Server) primaryProbe(primary string) (health.Probe, bool) {
	if s.Health == nil || primary == "" {
		return health.Probe{}, false
	}
	p, ok := s.Health.Latest()[primary]
	return p, ok
}

// walSenders indexes the walsenders of a reachable probe by application_name.
func walSenders(p health.Probe) map[string]WalSenderView {
	out := map[string]WalSenderView{}
	if !p.Reachable {
		return out
	}
	for _, r := range p.Replication {
		out[r.ApplicationName] = WalSenderView{State: r.State, SyncState: r.SyncState, FlushLSN: uint64(r.FlushLSN)}
	}
	return out
}
