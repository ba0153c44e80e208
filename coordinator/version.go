package coordinator

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/pgquorum/pgquorum/consensus/clusterstate"
)

// Defaults of VersionAgreement.
const (
	DefaultVersionCheck = time.Second
	// versionRecheck is how often a proxy whose report is in looks again
	// without being woken (in case its report was dropped meanwhile).
	versionRecheck = 30 * time.Second
)

// VersionAgreement runs on every proxy and agrees the cluster version through
// Raft (clusterstate/versions.go): it reports the highest command version
// this build understands (clusterstate.MaxVersion) until the report is in
// the state, and, on the Raft leader, raises the cluster version to the
// lowest version the voters reported once every voter reported. So a command
// of a new version is proposed only after every voter runs a build that
// understands it: rolling upgrades are safe.
//
// Run's goroutine owns everything. It checks when entries are applied while
// its report is not in yet (retrying failed proposals every Interval), on the
// leader whenever entries are applied, and otherwise only when the leader
// changes (and every 30 s): a follower or learner whose report is in does not
// wake up for nothing.
type VersionAgreement struct {
	Raft  Raft
	State StateSource
	Proxy uint64 // this proxy's Raft node id
	// Interval between checks; zero means DefaultVersionCheck.
	Interval time.Duration
	// ProposeTimeout bounds one proposal; zero means DefaultProposeTimeout.
	ProposeTimeout time.Duration
	Logger         *slog.Logger
}

// Run reports and agrees until ctx ends or the Raft member stops.
func (a *VersionAgreement) Run(ctx context.Context) error {
	if a.Raft == nil || a.State == nil || a.Proxy == 0 {
		return errors.New("coordinator: version agreement needs Raft, State and a non-zero Proxy id")
	}
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		applied, status := a.Raft.Applied(), a.Raft.StatusChanged()
		settled := a.check(ctx)
		wait := orDefault(a.Interval, DefaultVersionCheck)
		if settled {
			applied, wait = nil, versionRecheck
		}
		if a.Raft.Status().IsLeader {
			applied = a.Raft.Applied() // a voter's report may allow a raise
		}
		timer.Reset(wait)
		select {
		case <-ctx.Done():
			return nil
		case <-a.Raft.Done():
			return nil
		case <-applied:
		case <-status:
		case <-timer.C:
		}
		timer.Stop()
	}
}

// check proposes what is missing: this proxy's report, or (leader only) the
// raise of the cluster version. It reports whether this proxy's report is in
// the state.
func (a *VersionAgreement) check(ctx context.Context) (settled bool) {
	st := a.Raft.Status()
	if st.Leader == 0 {
		return false // no leader known (a learner that has not joined yet, an election)
	}
	state := a.State.State()
	if state.ReportedVersion(a.Proxy) != clusterstate.MaxVersion {
		a.propose(ctx, clusterstate.Command{ReportVersion: &clusterstate.ReportVersion{Proxy: a.Proxy, MaxVersion: clusterstate.MaxVersion}})
		return false
	}
	if !st.IsLeader {
		return true
	}
	var voters []uint64
	for _, m := range a.Raft.Members() {
		if m.Voter {
			voters = append(voters, m.ID)
		}
	}
	if v, ok := clusterstate.NextClusterVersion(state, voters); ok {
		a.logger().Info("every voter understands a newer command version: raising the cluster version", "from", state.AgreedVersion(), "to", v)
		a.propose(ctx, clusterstate.Command{RaiseClusterVersion: &clusterstate.RaiseClusterVersion{Version: v, Voters: voters}})
	}
	return true
}

func (a *VersionAgreement) propose(ctx context.Context, cmd clusterstate.Command) {
	data, err := clusterstate.Encode(cmd)
	if err != nil {
		a.logger().Error("encode version command", "err", err)
		return
	}
	ctx, cancel := context.WithTimeout(ctx, orDefault(a.ProposeTimeout, DefaultProposeTimeout))
	defer cancel()
	out, err := a.Raft.Propose(ctx, data)
	if err != nil {
		a.logger().Debug("version command not committed yet; retrying", "err", err)
		return
	}
	if res, err := clusterstate.DecodeResult(out); err == nil && !res.OK() {
		a.logger().Warn("version command not applied", "result", res.String())
	}
}

func (a *VersionAgreement) logger() *slog.Logger {
	if a.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return a.Logger
}
