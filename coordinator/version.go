package coordinator

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/pgquorum/pgquorum/consensus/clusterstate"
)

// Defaults of VersionAgreement.
const DefaultVersionCheck = time.Second

// VersionAgreement runs on every proxy and agrees the cluster version through
// Raft (clusterstate/versions.go): it reports the highest command version
// this build understands (clusterstate.MaxVersion) until the report is in
// the state, and, on the Raft leader, raises the cluster version to the
// lowest version the voters reported once every voter reported. So a command
// of a new version is proposed only after every voter runs a build that
// understands it: rolling upgrades are safe.
//
// Run's goroutine owns everything; it checks every Interval.
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
	ticker := time.NewTicker(orDefault(a.Interval, DefaultVersionCheck))
	defer ticker.Stop()
	for {
		a.check(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-a.Raft.Done():
			return nil
		case <-ticker.C:
		}
	}
}

// check proposes what is missing: this proxy's report, or (leader only) the
// raise of the cluster version.
func (a *VersionAgreement) check(ctx context.Context) {
	st := a.Raft.Status()
	if st.Leader == 0 {
		return // no leader known (a learner that has not joined yet, an election)
	}
	state := a.State.State()
	if state.ReportedVersion(a.Proxy) != clusterstate.MaxVersion {
		a.propose(ctx, clusterstate.Command{ReportVersion: &clusterstate.ReportVersion{Proxy: a.Proxy, MaxVersion: clusterstate.MaxVersion}})
		return
	}
	if !st.IsLeader {
		return
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
