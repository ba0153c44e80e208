package coordinator

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pgquorum/pgquorum/consensus/clusterstate"
	"github.com/pgquorum/pgquorum/health"
)

var backends3 = []string{"pg1", "pg2", "pg3"}

func row(node string, tl uint32, recv, replay uint64) clusterstate.LSNRow {
	return clusterstate.LSNRow{Node: node, Reachable: true, Frozen: true, Timeline: tl, ReceiveLSN: recv, ReplayLSN: replay}
}

func unreachable(node string) clusterstate.LSNRow { return clusterstate.LSNRow{Node: node} }

// failoverState is a state with a failover away from pg1 whose freeze recorded table.
func failoverState(t *testing.T, kind clusterstate.FailoverKind, target string, forced bool, fenced bool, table ...clusterstate.LSNRow) clusterstate.State {
	t.Helper()
	st := stateWith(t)
	st.Failover = &clusterstate.FailoverProgress{Epoch: 2, Kind: kind, Forced: forced, OldPrimary: "pg1", Target: target,
		Next: clusterstate.StepChooseCandidate, LSNTable: table}
	st.Epoch, st.Primary = 2, ""
	if fenced {
		st.Fenced = []string{"pg3"}
	}
	return st
}

func TestChooseCandidate(t *testing.T) {
	any1 := quorumFor("pg1", primaryProbe("pg1", "ANY 1 (pg2, pg3)"), true, backends3)
	any2of4 := quorumFor("pg1", primaryProbe("pg1", "ANY 2 (pg2, pg3, pg4)"), true, []string{"pg1", "pg2", "pg3", "pg4"})
	wildcard := quorumFor("pg1", primaryProbe("pg1", "ANY 1 (*)", "pg2", "pg3", "pg_receivewal"), true, backends3)
	tests := []struct {
		name      string
		kind      clusterstate.FailoverKind
		target    string
		forced    bool
		fenced    bool // pg3 fenced
		q         quorumView
		table     []clusterstate.LSNRow
		want      string // candidate
		wantBlock string // prefix of the block reason
	}{
		{name: "highest received LSN wins", q: any1,
			table: []clusterstate.LSNRow{row("pg2", 1, 0x300, 0x300), row("pg3", 1, 0x400, 0x100)}, want: "pg3"},
		{name: "higher timeline beats higher LSN", q: any1,
			table: []clusterstate.LSNRow{row("pg2", 2, 0x100, 0x100), row("pg3", 1, 0x900, 0x900)}, want: "pg2"},
		{name: "replay counts when nothing was received since restart", q: any1,
			table: []clusterstate.LSNRow{row("pg2", 1, 0, 0x500), row("pg3", 1, 0x400, 0x400)}, want: "pg2"},
		{name: "tie broken by priority (pg2 has 10, pg3 5)", q: any1,
			table: []clusterstate.LSNRow{row("pg2", 1, 0x400, 0x400), row("pg3", 1, 0x400, 0x400)}, want: "pg2"},
		{name: "one of two standbys reachable with ANY 1 is blocked", q: any1,
			table:     []clusterstate.LSNRow{row("pg2", 1, 0x400, 0x400), unreachable("pg3")},
			wantBlock: "1 of 2 standbys reachable, need 2 (unreachable: pg3)"},
		{name: "a reachable standby that is not frozen does not count", q: any1,
			table:     []clusterstate.LSNRow{row("pg2", 1, 0x400, 0x400), {Node: "pg3", Reachable: true, Timeline: 1, ReceiveLSN: 0x400}},
			wantBlock: "1 of 2 standbys reachable, need 2"},
		{name: "ANY 2 of 3 needs two reachable", q: any2of4,
			table: []clusterstate.LSNRow{row("pg2", 1, 0x400, 0x400), row("pg3", 1, 0x300, 0x300), unreachable("pg4")}, want: "pg2"},
		{name: "wildcard with a foreign walsender is unsafe", q: wildcard,
			table:     []clusterstate.LSNRow{row("pg2", 1, 0x400, 0x400), row("pg3", 1, 0x400, 0x400)},
			wantBlock: "automatic failover is unsafe: walsender \"pg_receivewal\""},
		{name: "forced skips hazards and reachability", q: wildcard, forced: true, kind: clusterstate.KindManual,
			table: []clusterstate.LSNRow{row("pg2", 1, 0x400, 0x400), unreachable("pg3")}, want: "pg2"},
		{name: "forced still needs a frozen standby", forced: true, q: any1, kind: clusterstate.KindManual,
			table:     []clusterstate.LSNRow{unreachable("pg2"), unreachable("pg3")},
			wantBlock: "no standby is reachable and frozen"},
		{name: "target is promoted when it is the most advanced", q: any1, kind: clusterstate.KindManual, target: "pg3",
			table: []clusterstate.LSNRow{row("pg2", 1, 0x400, 0x400), row("pg3", 1, 0x400, 0x400)}, want: "pg3"},
		{name: "a target behind another standby is refused", q: any1, kind: clusterstate.KindManual, target: "pg3",
			table:     []clusterstate.LSNRow{row("pg2", 1, 0x500, 0x500), row("pg3", 1, 0x400, 0x400)},
			wantBlock: "pg3 (timeline 1, 0/400) is behind pg2 (timeline 1, 0/500)"},
		{name: "forced target behind is promoted", q: any1, kind: clusterstate.KindManual, target: "pg3", forced: true,
			table: []clusterstate.LSNRow{row("pg2", 1, 0x500, 0x500), row("pg3", 1, 0x400, 0x400)}, want: "pg3"},
		{name: "unreachable target", q: any2of4, kind: clusterstate.KindManual, target: "pg4",
			table:     []clusterstate.LSNRow{row("pg2", 1, 0x500, 0x500), row("pg3", 1, 0x400, 0x400), unreachable("pg4")},
			wantBlock: "target pg4 is not reachable and frozen"},
		{name: "fenced node is never the candidate", q: any1, fenced: true,
			table: []clusterstate.LSNRow{row("pg2", 1, 0x400, 0x400), row("pg3", 1, 0x400, 0x400)}, want: "pg2"},
		{name: "the most advanced standby is fenced", q: any1, fenced: true,
			table:     []clusterstate.LSNRow{row("pg2", 1, 0x400, 0x400), row("pg3", 1, 0x500, 0x500)},
			wantBlock: "pg2 (timeline 1, 0/400) is behind pg3"},
		{name: "switchover skips the reachability rule", q: any1, kind: clusterstate.KindSwitchover, target: "pg2",
			table: []clusterstate.LSNRow{row("pg2", 1, 0x400, 0x400), unreachable("pg3")}, want: "pg2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			kind := tt.kind
			if kind == "" {
				kind = clusterstate.KindAutomatic
			}
			st := failoverState(t, kind, tt.target, tt.forced, tt.fenced, tt.table...)
			if tt.q.Quorum.Standbys != nil && slices.Contains(tt.q.Quorum.Standbys, "pg4") {
				st.Nodes = append(st.Nodes, clusterstate.NodeState{Name: "pg4"})
			}
			got := chooseCandidate(st, tt.q)
			if tt.wantBlock != "" {
				if got.Candidate != "" || !strings.HasPrefix(got.Block, tt.wantBlock) {
					t.Fatalf("got candidate %q block %q, want block starting %q", got.Candidate, got.Block, tt.wantBlock)
				}
				return
			}
			if got.Candidate != tt.want || got.Block != "" {
				t.Fatalf("got candidate %q block %q, want candidate %s", got.Candidate, got.Block, tt.want)
			}
		})
	}
}

func TestQuorumFor(t *testing.T) {
	tests := []struct {
		name        string
		probe       health.Probe
		ok          bool
		wantK       int
		wantN       []string
		wantHazard  string
		wantSource  string
		wantRequire int
	}{
		{name: "from the primary's synchronous_standby_names", probe: primaryProbe("pg1", "ANY 1 (pg2, pg3)"), ok: true,
			wantK: 1, wantN: []string{"pg2", "pg3"}, wantRequire: 2, wantSource: "synchronous_standby_names of pg1"},
		{name: "ANY 2 needs one", probe: primaryProbe("pg1", "ANY 2 (pg2, pg3)"), ok: true,
			wantK: 2, wantN: []string{"pg2", "pg3"}, wantRequire: 1},
		{name: "no probe falls back to every other backend with k 1", ok: false,
			wantK: 1, wantN: []string{"pg2", "pg3"}, wantRequire: 2, wantSource: "no successful probe of pg1"},
		{name: "a probe of a standby is not used", probe: health.Probe{Node: "pg1", Reachable: true, InRecovery: true}, ok: true,
			wantK: 1, wantN: []string{"pg2", "pg3"}, wantRequire: 2, wantSource: "pg1 was a standby when last probed"},
		{name: "synchronous replication off is a hazard", probe: primaryProbe("pg1", ""), ok: true,
			wantK: 1, wantN: []string{"pg2", "pg3"}, wantRequire: 2, wantHazard: "synchronous replication is off"},
		{name: "wildcard with only configured walsenders is safe", probe: primaryProbe("pg1", "ANY 1 (*)", "pg2", "pg3"), ok: true,
			wantK: 1, wantN: []string{"pg2", "pg3"}, wantRequire: 2},
		{name: "wildcard with a foreign walsender is a hazard", probe: primaryProbe("pg1", "ANY 1 (*)", "pg2", "backup"), ok: true,
			wantK: 1, wantN: []string{"pg2", "pg3"}, wantRequire: 2, wantHazard: `walsender "backup"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q := quorumFor("pg1", tt.probe, tt.ok, backends3)
			if q.Quorum.K != tt.wantK || !slices.Equal(q.Quorum.Standbys, tt.wantN) || q.Quorum.RequiredReachable() != tt.wantRequire {
				t.Errorf("got k=%d N=%v required=%d, want k=%d N=%v required=%d",
					q.Quorum.K, q.Quorum.Standbys, q.Quorum.RequiredReachable(), tt.wantK, tt.wantN, tt.wantRequire)
			}
			hazards := strings.Join(q.Hazards, "; ")
			if (tt.wantHazard == "") != (hazards == "") || !strings.Contains(hazards, tt.wantHazard) {
				t.Errorf("hazards %q, want %q", hazards, tt.wantHazard)
			}
			if !strings.Contains(q.Source, tt.wantSource) {
				t.Errorf("source %q, want it to contain %q", q.Source, tt.wantSource)
			}
		})
	}
}

func TestNewSyncStandbyNames(t *testing.T) {
	tests := []struct {
		k         int
		remaining []string
		want      string
	}{
		{1, []string{"pg3"}, `ANY 1 ("pg3")`},
		{2, []string{"pg3"}, `ANY 1 ("pg3")`},
		{2, []string{"pg3", "pg4", "pg5"}, `ANY 2 ("pg3", "pg4", "pg5")`},
		{0, []string{"Pg-3", `we"ird`}, `ANY 1 ("Pg-3", "we""ird")`},
		{1, nil, ``},
	}
	for _, tt := range tests {
		got := newSyncStandbyNames(tt.k, tt.remaining)
		if got != tt.want {
			t.Errorf("newSyncStandbyNames(%d, %q) = %s, want %s", tt.k, tt.remaining, got, tt.want)
		}
		if got == "" {
			continue
		}
		spec, err := health.ParseSyncStandbyNames(got)
		if err != nil {
			t.Fatalf("PostgreSQL's grammar rejects %s: %v", got, err)
		}
		if spec.Method != health.SyncAny || !slices.Equal(spec.Names, tt.remaining) {
			t.Errorf("%s parses as %+v, want ANY over %q", got, spec, tt.remaining)
		}
	}
}

// TestSyncStandbysNeverOffByDefault: a new primary gets its remaining standbys;
// with none left it still waits for the lost and fenced nodes (SPEC §4), unless
// failover.allow_async says otherwise; both cases are explained.
func TestSyncStandbysNeverOffByDefault(t *testing.T) {
	// pg1 failed over to pg2 (pg1 fenced); now pg2 fails over to pg3.
	secondFailover := func(t *testing.T) clusterstate.State {
		at := t0.Add(time.Minute)
		return stateWith(t,
			clusterstate.Command{BeginFailover: &clusterstate.BeginFailover{ExpectEpoch: 1, OldPrimary: "pg1", Kind: clusterstate.KindManual, Target: "pg2", At: at}},
			clusterstate.Command{RecordStep: &clusterstate.RecordStep{ExpectEpoch: 2, ExpectSeq: 0, Step: clusterstate.StepFreeze, At: at}},
			clusterstate.Command{RecordStep: &clusterstate.RecordStep{ExpectEpoch: 2, ExpectSeq: 1, Step: clusterstate.StepChooseCandidate, Candidate: "pg2", At: at}},
			clusterstate.Command{RecordStep: &clusterstate.RecordStep{ExpectEpoch: 2, ExpectSeq: 2, Step: clusterstate.StepPromote, At: at}},
			clusterstate.Command{RecordStep: &clusterstate.RecordStep{ExpectEpoch: 2, ExpectSeq: 3, Step: clusterstate.StepRepoint, At: at}},
			clusterstate.Command{CompleteFailover: &clusterstate.CompleteFailover{ExpectEpoch: 2, NewPrimary: "pg2", At: at}},
			clusterstate.Command{BeginFailover: &clusterstate.BeginFailover{ExpectEpoch: 2, OldPrimary: "pg2", Kind: clusterstate.KindManual, Target: "pg3", At: at}},
		)
	}
	first := stateWith(t, clusterstate.Command{BeginFailover: &clusterstate.BeginFailover{
		ExpectEpoch: 1, OldPrimary: "pg1", Kind: clusterstate.KindAutomatic, At: t0}})
	tests := []struct {
		name        string
		st          clusterstate.State
		candidate   string
		allowAsync  bool
		wantNames   string
		wantWarning string
	}{
		{"the other standby remains", first, "pg2", false, `ANY 1 ("pg3")`, ""},
		{"allow_async changes nothing while a standby remains", first, "pg2", true, `ANY 1 ("pg3")`, ""},
		{"none remains: wait for the lost and fenced nodes", secondFailover(t), "pg3", false, `ANY 1 ("pg1", "pg2")`,
			"writes wait (no synchronous standby) until one of pg1, pg2 rejoins"},
		{"none remains and allow_async: off, loudly", secondFailover(t), "pg3", true, "", "synchronous replication is OFF"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := syncStandbysFor(tt.st, tt.candidate, 1, tt.allowAsync)
			if got.Names != tt.wantNames {
				t.Errorf("names %q, want %q", got.Names, tt.wantNames)
			}
			if tt.wantWarning == "" && got.Warning != "" || !strings.Contains(got.Warning, tt.wantWarning) {
				t.Errorf("warning %q, want one containing %q", got.Warning, tt.wantWarning)
			}
		})
	}
}
