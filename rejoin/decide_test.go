package rejoin

import (
	"errors"
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

const (
	pg2Address = "127.0.0.1:5433"
	pg3Address = "127.0.0.1:5434"
)

// after a failover from pg1 to pg2: pg1 is fenced, pg2 the primary.
func fencedCluster() clusterFacts {
	return clusterFacts{Known: true, Epoch: 3, Primary: "pg2", PrimaryAddress: pg2Address, Fenced: true}
}

func agentPolicy() policy {
	return policy{PrimaryStartDelay: 10 * time.Second, StreamTimeout: time.Minute}
}

func oneShot() policy {
	p := agentPolicy()
	p.OneShot = true
	return p
}

// killed old primary: stopped, its control file says it was in production.
func killedPrimary() localFacts {
	return localFacts{Node: "pg1", Data: dataOK, Server: serverStopped, Control: controlProduction}
}

func streamingStandby(from string) localFacts {
	return localFacts{Node: "pg1", Data: dataOK, Server: serverRunning, InRecovery: true, StreamingFrom: from, ConninfoTarget: from}
}

func TestDecide(t *testing.T) {
	failover := func(old string, blocked bool, candidate string) clusterFacts {
		return clusterFacts{Known: true, Epoch: 4, Failover: &failoverFacts{Kind: "automatic", OldPrimary: old, Next: "freeze",
			Blocked: blocked, Reason: "1 of 2 standbys reachable, need 2", Candidate: candidate}}
	}
	asPrimary := clusterFacts{Known: true, Epoch: 3, Primary: "pg1", PrimaryAddress: "127.0.0.1:5432"}
	standbyOf := func(from string) clusterFacts {
		return clusterFacts{Known: true, Epoch: 3, Primary: "pg2", PrimaryAddress: from}
	}

	memAt := func(change func(*memory)) memory {
		m := memory{Now: t0}
		change(&m)
		return m
	}

	tests := []struct {
		name    string
		cluster clusterFacts
		local   localFacts
		mem     memory
		policy  policy
		want    actionKind
		// wantReason is a substring of the reason; frozen, rewindNext, transient as expected.
		wantReason string
		frozen     bool
		rewindNext bool
		transient  bool
	}{
		// The agreed state is unknown or says "hands off".
		{name: "no agreed state: leave PostgreSQL alone", cluster: clusterFacts{}, local: killedPrimary(),
			policy: agentPolicy(), want: actWait, wantReason: "no admin API"},
		{name: "an earlier pg_rewind still runs: wait for it", cluster: fencedCluster(),
			local: with(killedPrimary(), func(l *localFacts) { l.Busy = []int{4242} }), policy: agentPolicy(),
			want: actWait, wantReason: "4242", transient: true},
		{name: "paused: the agent changes nothing", cluster: func() clusterFacts { c := fencedCluster(); c.Paused = true; return c }(),
			local: killedPrimary(), policy: agentPolicy(), want: actNone, wantReason: "paused"},
		{name: "paused: the operator's rejoin still acts", cluster: func() clusterFacts { c := fencedCluster(); c.Paused = true; return c }(),
			local: killedPrimary(), policy: oneShot(), want: actRewind},

		// Not bootstrapped: start what is there, so that the proxies can bootstrap.
		{name: "not bootstrapped, stopped: start as it is", cluster: clusterFacts{Known: true},
			local: killedPrimary(), policy: agentPolicy(), want: actStartPrimary, wantReason: "not bootstrapped"},
		{name: "not bootstrapped: rejoin refuses", cluster: clusterFacts{Known: true},
			local: killedPrimary(), policy: oneShot(), want: actWait, wantReason: "not bootstrapped"},

		// During a failover: never fight the coordinator.
		{name: "failover away from this node in progress: wait", cluster: failover("pg1", false, ""),
			local: killedPrimary(), policy: agentPolicy(), want: actWait, wantReason: "in progress", transient: true},
		{name: "blocked failover away from this stopped old primary: start it, the coordinator aborts",
			cluster: failover("pg1", true, ""), local: killedPrimary(), policy: agentPolicy(), want: actStartPrimary, wantReason: "blocked"},
		{name: "blocked failover, but a candidate was chosen: wait", cluster: failover("pg1", true, "pg2"),
			local: killedPrimary(), policy: agentPolicy(), want: actWait, transient: true},
		{name: "blocked failover, old primary has standby.signal: never start it as a primary", cluster: failover("pg1", true, ""),
			local: with(killedPrimary(), func(l *localFacts) { l.StandbySignal = true }), policy: agentPolicy(), want: actWait, transient: true},
		{name: "failover in progress, this standby is down: start it frozen", cluster: failover("pg2", true, ""),
			local:  localFacts{Node: "pg1", Data: dataOK, Server: serverStopped, Control: controlArchiveRecovery, StandbySignal: true},
			policy: agentPolicy(), want: actStartStandby, frozen: true},
		{name: "failover in progress, a stopped former primary that is not the old one: wait", cluster: failover("pg2", false, ""),
			local: killedPrimary(), policy: agentPolicy(), want: actWait, transient: true},
		{name: "failover in progress: rejoin refuses", cluster: failover("pg1", false, ""),
			local: killedPrimary(), policy: oneShot(), want: actWait, wantReason: "try again"},

		// This node is the agreed primary.
		{name: "agreed primary running", cluster: asPrimary,
			local: localFacts{Node: "pg1", Data: dataOK, Server: serverRunning}, policy: agentPolicy(), want: actNone},
		{name: "agreed primary just went down: give the proxies time to fail over", cluster: asPrimary, local: killedPrimary(),
			mem: memAt(func(m *memory) { m.PrimaryDownSince = t0.Add(-3 * time.Second) }), policy: agentPolicy(),
			want: actWait, wantReason: "fail over", transient: true},
		{name: "agreed primary down past the delay, no failover: restart it", cluster: asPrimary, local: killedPrimary(),
			mem: memAt(func(m *memory) { m.PrimaryDownSince = t0.Add(-11 * time.Second) }), policy: agentPolicy(), want: actStartPrimary},
		{name: "agreed primary stopped with standby.signal: do not make a primary", cluster: asPrimary,
			local: with(killedPrimary(), func(l *localFacts) { l.StandbySignal = true }),
			mem:   memAt(func(m *memory) { m.PrimaryDownSince = t0.Add(-time.Hour) }), policy: agentPolicy(), want: actWait, wantReason: "only through a failover"},
		{name: "agreed primary: rejoin refuses", cluster: asPrimary, local: killedPrimary(), policy: oneShot(),
			want: actWait, wantReason: "agreed primary"},

		// The fenced old primary, after the failover.
		{name: "killed old primary: rewind", cluster: fencedCluster(), local: killedPrimary(), policy: agentPolicy(),
			want: actRewind, wantReason: "was a primary"},
		{name: "old primary still running (switchover): stop it, then rewind", cluster: fencedCluster(),
			local: localFacts{Node: "pg1", Data: dataOK, Server: serverRunning}, policy: agentPolicy(), want: actStop, wantReason: "runs as a primary"},
		{name: "rewound, crashed before standby.signal: start as a standby, never rewind twice", cluster: fencedCluster(),
			local: with(killedPrimary(), func(l *localFacts) { l.Control = controlArchiveRecovery }), policy: agentPolicy(), want: actStartStandby},
		{name: "rewound and configured: start as a standby", cluster: fencedCluster(),
			local:  with(killedPrimary(), func(l *localFacts) { l.Control = controlArchiveRecovery; l.StandbySignal = true }),
			policy: agentPolicy(), want: actStartStandby},
		{name: "pg_rewind said no rewind was needed, then crash: the clean old primary with standby.signal starts as a standby",
			cluster: fencedCluster(), local: with(killedPrimary(), func(l *localFacts) { l.Control = controlShutDown; l.StandbySignal = true }),
			policy: agentPolicy(), want: actStartStandby},
		{name: "streams from the primary, still fenced: unfence", cluster: fencedCluster(), local: streamingStandby(pg2Address),
			policy: agentPolicy(), want: actUnfence},
		{name: "streams from the primary, unfenced: done", cluster: standbyOf(pg2Address), local: streamingStandby(pg2Address),
			policy: agentPolicy(), want: actNone},
		{name: "started as a standby, not streaming yet: wait", cluster: fencedCluster(),
			local:  with(streamingStandby(pg2Address), func(l *localFacts) { l.StreamingFrom = "" }),
			mem:    memAt(func(m *memory) { m.StartedStandby = true; m.NotStreamingSince = t0.Add(-5 * time.Second) }),
			policy: agentPolicy(), want: actWait, transient: true},
		{name: "started as a standby, never streamed: stop to rewind", cluster: fencedCluster(),
			local:  with(streamingStandby(pg2Address), func(l *localFacts) { l.StreamingFrom = "" }),
			mem:    memAt(func(m *memory) { m.StartedStandby = true; m.NotStreamingSince = t0.Add(-2 * time.Minute) }),
			policy: agentPolicy(), want: actStop, rewindNext: true},
		{name: "stopped to be rewound: rewind (not start again)", cluster: fencedCluster(),
			local: localFacts{Node: "pg1", Data: dataOK, Server: serverStopped, Control: controlShutDownInRecovery, StandbySignal: true},
			mem:   memAt(func(m *memory) { m.RewindNeeded = true }), policy: agentPolicy(), want: actRewind, wantReason: "did not stream"},
		{name: "fenced standby pointed at another node: stop to rewind at once", cluster: fencedCluster(),
			local: with(streamingStandby(pg3Address), func(l *localFacts) {}), policy: agentPolicy(), want: actStop, rewindNext: true},

		// pg_rewind cannot rewind.
		{name: "rewind failed, no fallback: wait for the operator", cluster: fencedCluster(), local: killedPrimary(),
			mem: memAt(func(m *memory) { m.RewindFailed = "could not find previous WAL record" }), policy: agentPolicy(),
			want: actWait, wantReason: "--reclone-fallback"},
		{name: "rewind failed, fallback: re-clone", cluster: fencedCluster(), local: killedPrimary(),
			mem:    memAt(func(m *memory) { m.RewindFailed = "could not find previous WAL record" }),
			policy: func() policy { p := agentPolicy(); p.RecloneFallback = true; return p }(), want: actReclone},
		{name: "rewound and still not streaming: the operator's rejoin fails instead of looping", cluster: fencedCluster(),
			local: with(streamingStandby(pg2Address), func(l *localFacts) { l.StreamingFrom = "" }),
			mem: memAt(func(m *memory) {
				m.Rewound, m.StartedStandby = true, true
				m.NotStreamingSince = t0.Add(-2 * time.Minute)
			}), policy: oneShot(), want: actWait, wantReason: "server log"},
		{name: "rewound and still not streaming, fallback: stop to re-clone", cluster: fencedCluster(),
			local: with(streamingStandby(pg2Address), func(l *localFacts) { l.StreamingFrom = "" }),
			mem: memAt(func(m *memory) {
				m.Rewound, m.StartedStandby = true, true
				m.NotStreamingSince = t0.Add(-2 * time.Minute)
			}), policy: func() policy { p := agentPolicy(); p.RecloneFallback = true; return p }(), want: actStop, rewindNext: true},

		// Standbys that are not fenced.
		{name: "a crashed standby: start it as a standby of the primary", cluster: standbyOf(pg2Address),
			local:  localFacts{Node: "pg1", Data: dataOK, Server: serverStopped, Control: controlArchiveRecovery, StandbySignal: true},
			policy: agentPolicy(), want: actStartStandby},
		{name: "an unfenced standby pointed elsewhere: the coordinator re-points it, wait", cluster: standbyOf(pg2Address),
			local: streamingStandby(pg3Address), mem: memAt(func(m *memory) { m.NotStreamingSince = t0.Add(-time.Second) }),
			policy: agentPolicy(), want: actWait, transient: true},
		{name: "the operator's rejoin acts at once on a standby pointed elsewhere", cluster: standbyOf(pg2Address),
			local: streamingStandby(pg3Address), policy: oneShot(), want: actStop, rewindNext: true},
		{name: "a server that does not answer yet: wait", cluster: standbyOf(pg2Address),
			local: localFacts{Node: "pg1", Data: dataOK, Server: serverNoAnswer}, policy: agentPolicy(), want: actWait, transient: true},

		// Re-clones.
		{name: "rejoin --reclone of a running node: stop first", cluster: fencedCluster(), local: streamingStandby(pg2Address),
			policy: func() policy { p := oneShot(); p.ForceReclone = true; return p }(), want: actStop},
		{name: "rejoin --reclone once stopped: re-clone", cluster: fencedCluster(), local: killedPrimary(),
			policy: func() policy { p := oneShot(); p.ForceReclone = true; return p }(), want: actReclone},
		{name: "rejoin --reclone after the copy: carry on as a standby", cluster: fencedCluster(),
			local:  with(killedPrimary(), func(l *localFacts) { l.StandbySignal = true; l.Control = controlArchiveRecovery }),
			mem:    memAt(func(m *memory) { m.Recloned = true }),
			policy: func() policy { p := oneShot(); p.ForceReclone = true; return p }(), want: actStartStandby},
		{name: "a complete copy of an interrupted re-clone: finish it", cluster: fencedCluster(),
			local:  localFacts{Node: "pg1", Data: dataMissing, Server: serverStopped, Clone: cloneComplete},
			policy: agentPolicy(), want: actReclone, wantReason: "interrupted"},
		{name: "missing data directory: wait (a volume not mounted?)", cluster: fencedCluster(),
			local: localFacts{Node: "pg1", Data: dataMissing}, policy: agentPolicy(), want: actWait, wantReason: "does not exist"},
		{name: "empty data directory, fallback: clone the primary", cluster: standbyOf(pg2Address),
			local:  localFacts{Node: "pg1", Data: dataNotCluster},
			policy: func() policy { p := agentPolicy(); p.RecloneFallback = true; return p }(), want: actReclone},
		{name: "empty data directory, no fallback: wait", cluster: standbyOf(pg2Address),
			local: localFacts{Node: "pg1", Data: dataNotCluster}, policy: agentPolicy(), want: actWait, wantReason: "--reclone"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.mem.Now.IsZero() {
				tt.mem.Now = t0
			}
			got := decide(tt.cluster, tt.local, tt.mem, tt.policy)
			if got.Kind != tt.want || !strings.Contains(got.Reason, tt.wantReason) || got.Frozen != tt.frozen ||
				got.RewindNext != tt.rewindNext || (got.Kind == actWait && got.Transient != tt.transient) {
				t.Fatalf("decide = %s (frozen %v, rewind next %v, transient %v): %s\nwant %s (frozen %v, rewind next %v, transient %v) with %q",
					got.Kind, got.Frozen, got.RewindNext, got.Transient, got.Reason, tt.want, tt.frozen, tt.rewindNext, tt.transient, tt.wantReason)
			}
			if got.Reason == "" {
				t.Fatal("a decision without a reason")
			}
		})
	}
}

// Never starts a node as a primary unless the cluster names it primary, or the
// failover away from it is blocked before any candidate was chosen, or nothing
// was ever agreed: checked over every combination of local states.
func TestDecideNeverStartsAFencedNodeAsPrimary(t *testing.T) {
	controls := []string{"", controlShutDown, controlShutDownInRecovery, controlShuttingDown, controlCrashRecovery, controlArchiveRecovery, controlProduction}
	clusters := map[string]clusterFacts{
		"fenced":             fencedCluster(),
		"standby":            {Known: true, Epoch: 3, Primary: "pg2", PrimaryAddress: pg2Address},
		"failover elsewhere": {Known: true, Epoch: 4, Failover: &failoverFacts{OldPrimary: "pg2", Blocked: true}},
		"failover, chosen":   {Known: true, Epoch: 4, Failover: &failoverFacts{OldPrimary: "pg1", Blocked: true, Candidate: "pg2"}},
	}
	for cname, c := range clusters {
		for _, control := range controls {
			for _, signal := range []bool{false, true} {
				for _, p := range []policy{agentPolicy(), oneShot(), {RecloneFallback: true, StreamTimeout: time.Minute}} {
					l := localFacts{Node: "pg1", Data: dataOK, Server: serverStopped, Control: control, StandbySignal: signal}
					m := memory{Now: t0, PrimaryDownSince: t0.Add(-time.Hour)}
					if a := decide(c, l, m, p); a.Kind == actStartPrimary {
						t.Errorf("%s, control %q, standby.signal %v: starts the node as a primary: %s", cname, control, signal, a.Reason)
					}
				}
			}
		}
	}
}

// The one-shot rejoin's refusals carry the errors callers match.
func TestDecideOneShotErrors(t *testing.T) {
	a := decide(clusterFacts{Known: true, Epoch: 3, Primary: "pg1"}, killedPrimary(), memory{Now: t0}, oneShot())
	if !errors.Is(a.failure(), ErrIsPrimary) {
		t.Errorf("on the primary: %v", a.failure())
	}
	a = decide(clusterFacts{Known: true, Epoch: 4, Failover: &failoverFacts{OldPrimary: "pg1"}}, killedPrimary(), memory{Now: t0}, oneShot())
	if !errors.Is(a.failure(), ErrNoPrimary) {
		t.Errorf("during a failover: %v", a.failure())
	}
	a = decide(clusterFacts{}, killedPrimary(), memory{Now: t0}, oneShot())
	if !errors.Is(a.failure(), ErrAdmin) {
		t.Errorf("without the agreed state: %v", a.failure())
	}
}

func TestMemoryTrack(t *testing.T) {
	m := memory{Now: t0}
	c := fencedCluster()
	l := with(streamingStandby(pg2Address), func(l *localFacts) { l.StreamingFrom = "" })
	m.track(c, l)
	if m.NotStreamingSince != t0 {
		t.Fatalf("NotStreamingSince = %v, want %v", m.NotStreamingSince, t0)
	}
	m.Now = t0.Add(time.Second)
	m.track(c, l)
	if m.NotStreamingSince != t0 {
		t.Fatalf("NotStreamingSince moved to %v", m.NotStreamingSince)
	}
	m.track(c, streamingStandby(pg2Address))
	if !m.NotStreamingSince.IsZero() {
		t.Fatal("NotStreamingSince not reset once streaming")
	}
	primary := clusterFacts{Known: true, Epoch: 3, Primary: "pg1"}
	m.track(primary, killedPrimary())
	if m.PrimaryDownSince != m.Now {
		t.Fatalf("PrimaryDownSince = %v", m.PrimaryDownSince)
	}
	m.track(fencedCluster(), killedPrimary())
	if !m.PrimaryDownSince.IsZero() {
		t.Fatal("PrimaryDownSince kept once the node is no longer the primary")
	}
}

func with(l localFacts, change func(*localFacts)) localFacts { change(&l); return l }
