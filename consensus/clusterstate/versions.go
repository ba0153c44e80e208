package clusterstate

import (
	"fmt"
	"slices"
)

// Versions make the replicated state safe across pgquorum versions.
//
// Every command type belongs to the command version that introduced it
// (commandVersions), and an encoded command carries that version. A node
// understands versions 1..MaxVersion. A committed entry of a higher version,
// or a RaiseClusterVersion beyond MaxVersion, is not skipped: Decode returns
// an *UnsupportedVersionError, which stops the node from applying anything
// further (consensus stops the node, the proxy fails closed), because
// applying the entries after it would leave this node's state different from
// everyone else's.
//
// So that this never happens in a rolling upgrade, a command of version v is
// proposed only once the cluster agreed on v: every proxy reports the highest
// version it understands (ReportVersion, on start), and the Raft leader
// raises the cluster version to the lowest version its voters reported
// (RaiseClusterVersion, which Apply checks against the reports). Proposers
// ask State.Allows before proposing; Apply rejects a command of a version
// the cluster has not agreed on. The cluster version never goes down.

// MaxVersion is the highest command version this build understands.
const MaxVersion uint32 = 2

// VersionBatchedLearners (2) adds no command. It says that every voter reads
// a membership change that adds several learners at once (one Raft
// ConfChangeV2 entry listing each learner's address): from this cluster
// version on, the Raft leader adds the learners that ask to join together
// (consensus.Config.BatchLearners) instead of one per change. A build of
// version 1 would not learn those learners' addresses.
const VersionBatchedLearners uint32 = 2

// MaxVersionReports bounds State.Versions (one report per proxy, learners
// included).
const MaxVersionReports = 4096

// commandVersions maps each command type to the version that introduced it.
// A new command type gets MaxVersion+1 here, and MaxVersion moves with it.
var commandVersions = map[CommandType]uint32{
	TypeBootstrap:           1,
	TypeReportHealth:        1,
	TypeForgetProxy:         1,
	TypeSetPaused:           1,
	TypeUnfence:             1,
	TypeBeginFailover:       1,
	TypeRecordStep:          1,
	TypeBlockFailover:       1,
	TypeForceFailover:       1,
	TypeAbortFailover:       1,
	TypeCompleteFailover:    1,
	TypeReportVersion:       1,
	TypeRaiseClusterVersion: 1,
}

// CommandVersion is the version of command type t (0 for an unknown type).
func CommandVersion(t CommandType) uint32 { return commandVersions[t] }

// UnsupportedVersionError means an entry needs a newer pgquorum than this
// one. It is not a malformed entry: the other nodes apply it, so this node
// must stop applying (HaltApply) rather than skip it.
type UnsupportedVersionError struct {
	Version uint32 // what the entry needs
	What    string // "command", "cluster version" or "snapshot"
}

func (e *UnsupportedVersionError) Error() string {
	return fmt.Sprintf("%s version %d needs a newer pgquorum (this one understands up to version %d): upgrade this node",
		e.What, e.Version, MaxVersion)
}

// HaltApply tells package consensus to stop applying instead of skipping the
// entry.
func (e *UnsupportedVersionError) HaltApply() bool { return true }

// ProxyVersion is the highest command version one proxy understands.
type ProxyVersion struct {
	Proxy      uint64 `json:"proxy"`
	MaxVersion uint32 `json:"max_version"`
}

// ReportVersion records the highest command version a proxy understands. A
// proxy proposes it when it starts (and after an upgrade or a downgrade).
type ReportVersion struct {
	Proxy      uint64 `json:"proxy"`
	MaxVersion uint32 `json:"max_version"`
}

// RaiseClusterVersion raises the cluster version to Version. Voters are the
// Raft voters when the leader proposed it; every one of them must have
// reported a MaxVersion of at least Version.
type RaiseClusterVersion struct {
	Version uint32   `json:"version"`
	Voters  []uint64 `json:"voters"`
}

// AgreedVersion is the cluster version: the highest command version every
// voter understands (1 until the first RaiseClusterVersion).
func (s State) AgreedVersion() uint32 { return max(1, s.ClusterVersion) }

// Allows says whether c may be proposed now: its version is agreed.
func (s State) Allows(c Command) error {
	t, err := c.Type()
	if err != nil {
		return err
	}
	if v := CommandVersion(t); v > s.AgreedVersion() {
		return fmt.Errorf("%s is a version %d command and the cluster version is %d: upgrade every voter first", t, v, s.AgreedVersion())
	}
	return nil
}

// ReportedVersion is the MaxVersion proxy reported (0 = none).
func (s State) ReportedVersion(proxy uint64) uint32 {
	if i, ok := versionIndex(s.Versions, proxy); ok {
		return s.Versions[i].MaxVersion
	}
	return 0
}

// NextClusterVersion is the version the leader should raise the cluster to,
// given the current voters: the lowest MaxVersion they reported, if that is
// above the agreed version. A voter that has not reported holds the version
// where it is.
func NextClusterVersion(s State, voters []uint64) (uint32, bool) {
	if len(voters) == 0 {
		return 0, false
	}
	lowest := uint32(0)
	for i, v := range voters {
		reported := s.ReportedVersion(v)
		if reported == 0 {
			return 0, false
		}
		if i == 0 || reported < lowest {
			lowest = reported
		}
	}
	return lowest, lowest > s.AgreedVersion()
}

func versionIndex(vs []ProxyVersion, proxy uint64) (int, bool) {
	return slices.BinarySearchFunc(vs, proxy, func(v ProxyVersion, p uint64) int {
		switch {
		case v.Proxy < p:
			return -1
		case v.Proxy > p:
			return 1
		}
		return 0
	})
}

func applyReportVersion(s State, c ReportVersion) (State, Result) {
	if c.Proxy == 0 || c.MaxVersion == 0 {
		return notApplied(s, Rejected, "report version: proxy and max_version must be non-zero")
	}
	i, exists := versionIndex(s.Versions, c.Proxy)
	if exists && s.Versions[i].MaxVersion == c.MaxVersion {
		return notApplied(s, Duplicate, "proxy %d already reported version %d", c.Proxy, c.MaxVersion)
	}
	next := s
	if exists {
		next.Versions = slices.Clone(s.Versions)
		next.Versions[i].MaxVersion = c.MaxVersion
	} else {
		if len(s.Versions) >= MaxVersionReports {
			return notApplied(s, Rejected, "report version: %d proxies reported already (limit %d); forget removed ones", len(s.Versions), MaxVersionReports)
		}
		next.Versions = slices.Insert(slices.Clone(s.Versions), i, ProxyVersion(c))
	}
	return applied(next, "proxy %d understands versions up to %d", c.Proxy, c.MaxVersion)
}

func applyRaiseClusterVersion(s State, c RaiseClusterVersion) (State, Result) {
	switch {
	case c.Version == s.AgreedVersion():
		return notApplied(s, Duplicate, "cluster version is %d already", c.Version)
	case c.Version < s.AgreedVersion():
		return notApplied(s, Stale, "cluster version is %d; it never goes down to %d", s.AgreedVersion(), c.Version)
	case len(c.Voters) == 0:
		return notApplied(s, Rejected, "raise cluster version: no voters named")
	}
	for _, v := range c.Voters {
		if reported := s.ReportedVersion(v); reported < c.Version {
			return notApplied(s, Rejected, "raise cluster version to %d: voter %d understands up to %d", c.Version, v, reported)
		}
	}
	next := s
	next.ClusterVersion = c.Version
	return applied(next, "cluster version raised to %d", c.Version)
}

// forgetVersion drops proxy's version report (ForgetProxy).
func forgetVersion(vs []ProxyVersion, proxy uint64) ([]ProxyVersion, bool) {
	i, ok := versionIndex(vs, proxy)
	if !ok {
		return vs, false
	}
	out := slices.Delete(slices.Clone(vs), i, i+1)
	if len(out) == 0 {
		out = nil
	}
	return out, true
}

func validateVersions(s State) error {
	for i, v := range s.Versions {
		if v.Proxy == 0 || v.MaxVersion == 0 {
			return fmt.Errorf("version report %+v has a zero field", v)
		}
		if i > 0 && s.Versions[i-1].Proxy >= v.Proxy {
			return fmt.Errorf("version reports not sorted and distinct at proxy %d", v.Proxy)
		}
	}
	if len(s.Versions) > MaxVersionReports {
		return fmt.Errorf("%d version reports, limit %d", len(s.Versions), MaxVersionReports)
	}
	if s.ClusterVersion == 1 {
		return fmt.Errorf("cluster version 1 is written as 0 (absent)")
	}
	return nil
}

// LearnerMayPropose decides which proposals a proxy with a learner (sidecar)
// certificate may make: its own health observations and its own version
// report, nothing that steers the cluster (consensus.Config.LearnerProposals).
func LearnerMayPropose(learner uint64, payload []byte) error {
	c, err := Decode(payload)
	if err != nil {
		return err
	}
	switch {
	case c.ReportHealth != nil && c.ReportHealth.Observation.Proxy == learner:
		return nil
	case c.ReportVersion != nil && c.ReportVersion.Proxy == learner:
		return nil
	}
	t, _ := c.Type()
	return fmt.Errorf("a learner may report its own health observations and version only, not %s", t)
}
