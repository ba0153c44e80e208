package health

import (
	"errors"
	"fmt"
	"strings"
)

// Redundancy is how many synchronous standbys a primary has in effect, from
// one probe of it, against the standbys the cluster is configured with: every
// configured backend but the primary. A standby is in effect when its
// walsender streams and synchronous_standby_names names it (it can confirm
// commits). It is what `pgquorum list` and GET /cluster call "redundancy"
// (issue 13): a cluster that lost a standby, or whose old primary is fenced
// after a failover, keeps working with less protection than configured, and
// says so ("degraded: 1 of 2 standbys").
type Redundancy struct {
	Method   SyncMethod
	Required int      // k: the standbys that must confirm each commit
	Standbys []string // the configured standbys: every backend but the primary
	// Streaming are the standbys in effect: streaming from the primary now
	// and named in synchronous_standby_names. Missing are the other
	// configured standbys (down, fenced, not streaming, or not named).
	Streaming []string
	Missing   []string
	// SynchronousCommit is the primary's synchronous_commit (as the probe's
	// session sees it): with local or off, commits wait for no standby.
	SynchronousCommit string
}

// RedundancyOf reads the redundancy from a probe of the primary; backends
// are the configured PostgreSQL node names. It fails when the probe did not
// answer or synchronous_standby_names could not be parsed. Pure.
func RedundancyOf(primary Probe, backends []string) (Redundancy, error) {
	switch {
	case !primary.Reachable:
		return Redundancy{}, fmt.Errorf("the latest probe of %s did not answer: %s", primary.Node, primary.Err)
	case primary.SyncStandbyNamesErr != "":
		return Redundancy{}, errors.New(primary.SyncStandbyNamesErr)
	}
	spec := primary.SyncSpec
	r := Redundancy{Method: spec.Method, Required: spec.Num, SynchronousCommit: primary.SynchronousCommit}
	for _, name := range backends {
		if equalFoldASCII(name, primary.Node) {
			continue
		}
		r.Standbys = append(r.Standbys, name)
		if spec.Matches(name) && streamsFrom(primary, name) {
			r.Streaming = append(r.Streaming, name)
		} else {
			r.Missing = append(r.Missing, name)
		}
	}
	return r, nil
}

// streamsFrom reports whether the probed node has a streaming walsender for
// the standby name.
func streamsFrom(p Probe, name string) bool {
	for _, r := range p.Replication {
		if r.State == "streaming" && equalFoldASCII(r.ApplicationName, name) {
			return true
		}
	}
	return false
}

// Redundancy states, the first word of Status.
const (
	RedundancyOK           = "ok"
	RedundancyDegraded     = "degraded"
	RedundancyWritesWait   = "writes wait"
	RedundancyAsynchronous = "asynchronous"
)

// State is one of RedundancyOK (every standby of N streams),
// RedundancyDegraded (fewer than |N|, at least k: commits go on, with less
// protection), RedundancyWritesWait (fewer than k: commits wait until a
// standby streams again) and RedundancyAsynchronous (no synchronous
// replication).
func (r Redundancy) State() string {
	switch {
	case r.Method == SyncOff || r.SynchronousCommit == "local" || r.SynchronousCommit == "off":
		return RedundancyAsynchronous
	case len(r.Streaming) < r.Required:
		return RedundancyWritesWait
	case len(r.Missing) > 0:
		return RedundancyDegraded
	}
	return RedundancyOK
}

// Status says the state in one line for operators: "ok: 2 of 2 standbys",
// "degraded: 1 of 2 standbys (missing: pg3)", "writes wait: no
// synchronous standby (needs 1 of pg2, pg3)", ...
func (r Redundancy) Status() string {
	missing := ""
	if len(r.Missing) > 0 {
		missing = fmt.Sprintf(" (missing: %s)", strings.Join(r.Missing, ", "))
	}
	switch r.State() {
	case RedundancyAsynchronous:
		if r.Method != SyncOff {
			return fmt.Sprintf("asynchronous: synchronous_commit = %s, commits are acknowledged by the primary alone", r.SynchronousCommit)
		}
		return "asynchronous: synchronous_standby_names is empty, commits are acknowledged by the primary alone"
	case RedundancyWritesWait:
		if len(r.Streaming) == 0 {
			return fmt.Sprintf("writes wait: no synchronous standby (commits need %d; missing: %s)", r.Required, strings.Join(r.Missing, ", "))
		}
		return fmt.Sprintf("writes wait: %d of the %d synchronous standbys needed%s", len(r.Streaming), r.Required, missing)
	case RedundancyDegraded:
		return fmt.Sprintf("degraded: %d of %d standbys%s", len(r.Streaming), len(r.Standbys), missing)
	}
	return fmt.Sprintf("ok: %d of %d standbys", len(r.Streaming), len(r.Standbys))
}
