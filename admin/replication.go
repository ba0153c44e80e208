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

// RedundancyView is the agreed primary's synchronous replication in effect
// (health.Redundancy), as PrimaryProbe saw it.
type RedundancyView struct {
	// State is ok, degraded, "writes wait" or asynchronous; Status the same
	// in one line with the figures ("degraded: 1 of 2 standbys (pg3 not
	// streaming)").
	State     string   `json:"state"`
	Status    string   `json:"status"`
	Required  int      `json:"required"`            // k
	Standbys  []string `json:"standbys,omitempty"`  // N, as synchronous_standby_names names them
	Streaming []string `json:"streaming,omitempty"` // the members of N that can confirm commits now
	Missing   []string `json:"missing,omitempty"`
	// Error says why the redundancy is not known (the probe failed, the
	// setting could not be read); the other fields are empty then.
	Error string `json:"error,omitempty"`
}

// redundancyView reads the redundancy from a probe of the primary.
func (s *Server) redundancyView(probe health.Probe) *RedundancyView {
	names := make([]string, len(s.Backends))
	for i, b := range s.Backends {
		names[i] = b.Name
	}
	r, err := health.RedundancyOf(probe, names)
	if err != nil {
		return &RedundancyView{Error: err.Error()}
	}
	return &RedundancyView{State: r.State(), Status: r.Status(), Required: r.Required,
		Standbys: r.Standbys, Streaming: r.Streaming, Missing: r.Missing}
}
