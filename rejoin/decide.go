package rejoin

import (
	"fmt"
	"strings"
	"time"
)

// This file decides what to do next with the local node, as a pure function of
// what the cluster agreed (clusterFacts), what the data directory and its
// server look like now (localFacts), what this run remembers (memory) and the
// caller's policy. No clock, no I/O: decide_test.go walks it through failovers,
// crashes and half-finished runs without PostgreSQL.
//
// The local state is derived, not recorded: every step of a rejoin leaves a
// trace that pg_controldata, the signal files, /proc and a SQL query can see
// (see controldata.go), so a run that died at any point is picked up by the
// next one from what is on disk. The only file of our own is the marker of a
// finished re-clone copy (reclone.go).

// clusterFacts is what the agreed cluster state says about this node.
type clusterFacts struct {
	// Known is false when no admin API answered with a Raft leader known: the
	// agreed state is unknown, and nothing is changed.
	Known          bool
	Epoch          uint64 // 0 = not bootstrapped
	Primary        string // "" = none agreed
	PrimaryAddress string
	Paused         bool
	Failover       *failoverFacts // nil = none in progress
	Fenced         bool           // this node is fenced
}

// failoverFacts is the failover or switchover in progress.
type failoverFacts struct {
	Kind       string
	OldPrimary string
	Next       string
	Blocked    bool
	Reason     string // BlockedReason
	Candidate  string // "" until one was chosen
}

// dataState says whether the data directory holds a PostgreSQL cluster.
type dataState int

const (
	dataOK         dataState = iota // PG_VERSION present
	dataMissing                     // the directory does not exist
	dataNotCluster                  // exists, but no PG_VERSION (empty, or not PostgreSQL's)
)

// serverState says whether a server runs in the data directory.
type serverState int

const (
	serverStopped  serverState = iota // no postmaster (a stale postmaster.pid counts as none)
	serverRunning                     // a postmaster runs and answered SQL
	serverNoAnswer                    // a postmaster runs but does not answer SQL (starting, recovering, overloaded)
)

// cloneState is the state of a re-clone's copy next to the data directory.
type cloneState int

const (
	cloneNone     cloneState = iota
	clonePartial             // a copy without the completion marker
	cloneComplete            // the marker: the copy is whole and configured
)

// localFacts is the local node as observed now.
type localFacts struct {
	Node   string
	Data   dataState
	Clone  cloneState
	Server serverState
	// Busy lists processes that work in the data directory (or the re-clone's
	// copy) while no postmaster runs: a pg_rewind or pg_basebackup of an earlier
	// run, or backends of a killed server that have not exited yet.
	Busy []int

	// When the server is stopped (from pg_controldata and the data directory):
	Control       string // "Database cluster state"; "" = unknown
	StandbySignal bool

	// When it runs and answers:
	InRecovery bool
	// StreamingFrom is host:port of the WAL receiver's sender while it streams; "" = not streaming.
	StreamingFrom string
	// ConninfoTarget is host:port of primary_conninfo; "" = none.
	ConninfoTarget string
}

// standbyLike reports whether the stopped data directory may be started as a
// standby without a rewind: it has standby.signal, or its control file says it
// was one (or pg_rewind finished on it).
func (l localFacts) standbyLike() bool {
	return l.StandbySignal || wasStandby(l.Control)
}

// memory is what the caller remembers about the current primary (the agent
// forgets it when the primary or epoch changes, and when it restarts: the
// decision must then still be safe, at worst slower).
type memory struct {
	Now time.Time
	// PrimaryDownSince is when this node, the agreed primary, was first seen stopped.
	PrimaryDownSince time.Time
	// NotStreamingSince is when the node was first seen running in recovery
	// without streaming from the primary.
	NotStreamingSince time.Time
	// StartedStandby: this run started the node as a standby of the primary.
	StartedStandby bool
	// RewindNeeded: started as a standby, it did not stream within the stream
	// timeout, so it was stopped to be rewound.
	RewindNeeded bool
	// Rewound: this run rewound it onto the primary.
	Rewound bool
	// Recloned: this run re-cloned it from the primary.
	Recloned bool
	// RewindFailed is pg_rewind's reason when it could not rewind onto the primary.
	RewindFailed string
}

// policy is what differs between the one-shot rejoin and the agent.
type policy struct {
	// OneShot: `pgquorum rejoin`, the operator's command: it also acts while the
	// cluster is paused, acts at once on a standby that does not stream, and
	// fails instead of waiting for the cluster.
	OneShot bool
	// ForceReclone: re-clone even if a rewind would do (rejoin --reclone).
	ForceReclone bool
	// RecloneFallback: re-clone when pg_rewind cannot rewind, after a rewind that
	// did not make the node stream, and into an empty data directory.
	RecloneFallback bool
	// PrimaryStartDelay is how long the agreed primary stays down before the
	// agent restarts it, leaving the proxies time to fail over first.
	PrimaryStartDelay time.Duration
	// StreamTimeout is how long a standby may run without streaming from the
	// primary before it is stopped and rewound.
	StreamTimeout time.Duration
}

// actionKind is what to do.
type actionKind int

const (
	actNone         actionKind = iota // nothing to do: the node is where the cluster wants it
	actWait                           // do nothing now: Reason says why
	actStartPrimary                   // start the data directory as it is: a primary the cluster agreed on (or no agreement exists yet)
	actStartStandby                   // write standby.signal and primary_conninfo (the primary's, or '' when Frozen), then start
	actStop                           // stop the server (pg_ctl stop -m fast)
	actRewind                         // pg_rewind from the primary, then standby.signal and primary_conninfo
	actReclone                        // copy the primary with pg_basebackup (or finish an interrupted copy), keeping the old directory
	actUnfence                        // POST /rejoin: the cluster verifies the streaming and lifts the fence
)

var actionNames = map[actionKind]string{
	actNone: "none", actWait: "wait", actStartPrimary: "start-primary", actStartStandby: "start-standby",
	actStop: "stop", actRewind: "rewind", actReclone: "reclone", actUnfence: "unfence",
}

func (k actionKind) String() string { return actionNames[k] }

// action is the decision.
type action struct {
	Kind   actionKind
	Reason string
	// Frozen: actStartStandby with primary_conninfo = '' (a failover is in progress).
	Frozen bool
	// RewindNext: actStop because the node must be rewound after it.
	RewindNext bool
	// Transient: an actWait expected to end by itself soon (a failover
	// completing, a standby connecting, an earlier pg_rewind finishing): look
	// again soon, and the one-shot rejoin waits for it instead of failing.
	Transient bool
	// Err is the error the one-shot rejoin fails with on this wait (it wraps
	// ErrNoPrimary, ErrIsPrimary...); nil = a plain error with Reason.
	Err error
}

func wait(transient bool, format string, args ...any) action {
	return action{Kind: actWait, Transient: transient, Reason: fmt.Sprintf(format, args...)}
}

func waitErr(err error, format string, args ...any) action {
	a := wait(false, format, args...)
	a.Err = fmt.Errorf("%w: %s", err, a.Reason)
	return a
}

// decide returns the next action for the local node.
func decide(c clusterFacts, l localFacts, m memory, p policy) action {
	if !c.Known {
		return waitErr(ErrAdmin, "no admin API answers with a Raft leader known: PostgreSQL is left as it is until the agreed state is known")
	}
	if len(l.Busy) > 0 {
		return wait(true, "processes %v still work in the data directory (an earlier pg_rewind or pg_basebackup, or the backends of a killed server): waiting for them to finish", l.Busy)
	}
	if c.Paused && !p.OneShot {
		return action{Kind: actNone, Reason: "the cluster is paused (maintenance): the agent changes nothing until `pgquorum resume`"}
	}
	if c.Epoch == 0 {
		return decideUnbootstrapped(l, p)
	}
	if c.Failover != nil {
		return decideDuringFailover(c, l, p)
	}
	if c.Primary == "" {
		return waitErr(ErrNoPrimary, "the cluster has no agreed primary at epoch %d", c.Epoch)
	}
	if c.Primary == l.Node {
		return decideAsPrimary(c, l, m, p)
	}
	return decideAsStandby(c, l, m, p)
}

// decideUnbootstrapped: no primary was ever agreed, so no node is fenced and the
// proxies bootstrap from what runs. The server is started as it is.
func decideUnbootstrapped(l localFacts, p policy) action {
	if p.OneShot {
		return waitErr(ErrNoPrimary, "the cluster is not bootstrapped yet (no primary was ever agreed)")
	}
	switch {
	case l.Data != dataOK:
		return wait(false, "the data directory holds no PostgreSQL cluster, and the cluster is not bootstrapped: nothing to follow yet")
	case l.Server == serverStopped:
		return action{Kind: actStartPrimary, Reason: "the cluster is not bootstrapped yet: starting the server as it is (primary or standby), so that the proxies can bootstrap from it"}
	}
	return action{Kind: actNone, Reason: "the cluster is not bootstrapped yet; the server runs"}
}

// decideDuringFailover never fights the coordinator: it only brings back a
// stopped node that the failover is waiting for.
func decideDuringFailover(c clusterFacts, l localFacts, p policy) action {
	f := c.Failover
	what := fmt.Sprintf("a failover (%s) away from %s is in progress (next step %s)", f.Kind, f.OldPrimary, f.Next)
	if f.Blocked {
		what = fmt.Sprintf("a failover (%s) away from %s is blocked (%s)", f.Kind, f.OldPrimary, f.Reason)
	}
	if p.OneShot {
		return waitErr(ErrNoPrimary, "%s; try again once `pgquorum list` shows a primary", what)
	}
	stopped := l.Data == dataOK && l.Server == serverStopped
	if f.OldPrimary == l.Node {
		// A blocked failover has promoted no one (a block rewinds it to before
		// the choice of a candidate), and ends when its old primary is back.
		if stopped && f.Blocked && f.Candidate == "" && !l.StandbySignal && !wasStandby(l.Control) {
			return action{Kind: actStartPrimary, Reason: what + ": restarting this old primary lets the coordinator abort the failover and route to it again"}
		}
		return wait(true, "%s: waiting for it to end", what)
	}
	if stopped && l.standbyLike() {
		return action{Kind: actStartStandby, Frozen: true,
			Reason: what + ": starting this stopped standby frozen (primary_conninfo = ''), as the failover's freeze step leaves standbys, so that the coordinator can count it and re-point it"}
	}
	return wait(true, "%s: waiting for it to end", what)
}

// decideAsPrimary keeps the agreed primary running, but gives the proxies the
// first move when it is down: they fail over to a standby that has every
// acknowledged commit, usually within seconds.
func decideAsPrimary(c clusterFacts, l localFacts, m memory, p policy) action {
	if p.OneShot {
		return waitErr(ErrIsPrimary, "%s is the agreed primary at epoch %d", l.Node, c.Epoch)
	}
	switch {
	case l.Data != dataOK:
		return wait(false, "this node is the agreed primary but its data directory holds no PostgreSQL cluster: not touching it (the proxies fail over)")
	case l.Server == serverNoAnswer:
		return wait(true, "the agreed primary runs but does not answer yet (starting up, or crash recovery)")
	case l.Server == serverRunning && l.InRecovery:
		return action{Kind: actNone, Reason: "this node is the agreed primary but runs in recovery; the coordinator handles it (pgquorum only promotes through a failover)"}
	case l.Server == serverRunning:
		return action{Kind: actNone, Reason: "the agreed primary, running"}
	case l.standbyLike():
		return wait(false, "this node is the agreed primary, stopped, but its data directory is a standby's (standby.signal or the control file): "+
			"not starting it; pgquorum turns a standby into a primary only through a failover")
	}
	down := time.Duration(0)
	if !m.PrimaryDownSince.IsZero() {
		down = m.Now.Sub(m.PrimaryDownSince)
	}
	if down < p.PrimaryStartDelay {
		return wait(true, "the agreed primary is down: leaving the proxies %v to fail over before restarting it (down for %v)",
			p.PrimaryStartDelay, down.Round(time.Second))
	}
	return action{Kind: actStartPrimary, Reason: fmt.Sprintf("the agreed primary has been down for %v and no failover began (paused, flap guard, or not enough standbys): restarting it",
		down.Round(time.Second))}
}

// decideAsStandby brings a node that must follow c.Primary there: start it as a
// standby, or stop, rewind (or re-clone) and start it, then have it unfenced.
func decideAsStandby(c clusterFacts, l localFacts, m memory, p policy) action {
	follow := fmt.Sprintf("%s (%s, epoch %d)", c.Primary, c.PrimaryAddress, c.Epoch)
	if p.ForceReclone && !m.Recloned {
		if l.Server != serverStopped {
			return action{Kind: actStop, Reason: "a re-clone was asked for: stopping the server first"}
		}
		return action{Kind: actReclone, Reason: "a re-clone from " + follow + " was asked for"}
	}
	if l.Clone == cloneComplete && l.Server == serverStopped {
		return action{Kind: actReclone, Reason: "an interrupted re-clone left a complete copy: putting it in place (the old directory is kept aside)"}
	}
	switch l.Data {
	case dataMissing:
		return wait(false, "the data directory does not exist (a volume not mounted?): initialize it, or run `pgquorum rejoin --reclone`")
	case dataNotCluster:
		if p.RecloneFallback {
			return action{Kind: actReclone, Reason: "the data directory holds no PostgreSQL cluster: copying " + follow}
		}
		return wait(false, "the data directory holds no PostgreSQL cluster: copy the primary with `pgquorum rejoin --reclone` (or run the agent with --reclone-fallback)")
	}

	switch l.Server {
	case serverNoAnswer:
		return wait(true, "the server runs but does not answer yet (starting up, or recovering)")
	case serverRunning:
		return decideRunningStandby(c, l, m, p, follow)
	}

	// Stopped.
	if m.RewindFailed != "" || ((m.RewindNeeded || !l.standbyLike()) && m.Rewound) {
		why := "pg_rewind cannot rewind it: " + m.RewindFailed
		if m.RewindFailed == "" {
			why = "it was rewound and still does not stream from the primary"
		}
		if p.RecloneFallback && !m.Recloned {
			return action{Kind: actReclone, Reason: why + ": re-cloning it from " + follow}
		}
		return action{Kind: actWait, Reason: why + "; see the server log. Re-clone it with `pgquorum rejoin --pgdata DIR --reclone`, or run the agent with --reclone-fallback",
			Err: fmt.Errorf("%s; see the server log (replication credentials, pg_hba.conf, missing WAL?). Re-clone it with `pgquorum rejoin --reclone`", why)}
	}
	if m.RewindNeeded || !l.standbyLike() {
		why := "it was a primary (" + orUnknown(l.Control) + ", no standby.signal)"
		if m.RewindNeeded {
			why = "it did not stream from the primary as a standby"
		}
		return action{Kind: actRewind, Reason: why + ": rewinding it onto " + follow}
	}
	return action{Kind: actStartStandby, Reason: "stopped (" + orUnknown(l.Control) + "): starting it as a standby of " + follow}
}

func decideRunningStandby(c clusterFacts, l localFacts, m memory, p policy, follow string) action {
	if !l.InRecovery {
		return action{Kind: actStop, Reason: fmt.Sprintf("it runs as a primary but the agreed primary is %s (fenced: %v): stopping it to rewind it", follow, c.Fenced)}
	}
	if l.StreamingFrom != "" && l.StreamingFrom == c.PrimaryAddress {
		if c.Fenced {
			return action{Kind: actUnfence, Reason: "it streams from " + follow + ": asking the cluster to lift its fence"}
		}
		return action{Kind: actNone, Reason: "a standby streaming from " + follow}
	}
	pointed := l.ConninfoTarget != "" && l.ConninfoTarget == c.PrimaryAddress
	// Nobody else re-points a fenced node, and the operator's command acts at
	// once; otherwise give the coordinator (which re-points stragglers) and the
	// WAL receiver time.
	if !pointed && !m.StartedStandby && (p.OneShot || c.Fenced) {
		return action{Kind: actStop, RewindNext: true, Reason: fmt.Sprintf("a standby of %q, not of %s: stopping it to rewind it", orUnknown(l.ConninfoTarget), follow)}
	}
	since := time.Duration(0)
	if !m.NotStreamingSince.IsZero() {
		since = m.Now.Sub(m.NotStreamingSince)
	}
	if since < p.StreamTimeout {
		return wait(true, "a standby that does not stream from %s yet (primary_conninfo points at %q; %v of %v)",
			follow, orUnknown(l.ConninfoTarget), since.Round(time.Second), p.StreamTimeout)
	}
	if (m.Rewound || m.Recloned) && !(p.RecloneFallback && !m.Recloned) {
		why := fmt.Sprintf("it was rewound or re-cloned, and runs as a standby, but has not streamed from %s for %v", follow, since.Round(time.Second))
		return action{Kind: actWait, Reason: why + "; see the server log (replication credentials, pg_hba.conf, missing WAL?)",
			Err: fmt.Errorf("%s: see the server log (replication credentials, pg_hba.conf on the primary, WAL the primary no longer has?)", why)}
	}
	return action{Kind: actStop, RewindNext: true, Reason: fmt.Sprintf("it has not streamed from %s for %v: stopping it to rewind it", follow, since.Round(time.Second))}
}

func orUnknown(s string) string {
	if strings.TrimSpace(s) == "" {
		return "unknown"
	}
	return s
}
