package coordinator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/pgquorum/pgquorum/conninfo"
	"github.com/pgquorum/pgquorum/consensus"
	"github.com/pgquorum/pgquorum/consensus/clusterstate"
	"github.com/pgquorum/pgquorum/health"
	"github.com/pgquorum/pgquorum/metrics"
)

// Raft is what the coordinator needs from the local Raft member (*consensus.Node).
type Raft interface {
	Status() consensus.Status
	Propose(ctx context.Context, data []byte) ([]byte, error)
	Applied() <-chan struct{}
	// StatusChanged is signalled when Status changes (a new leader, say).
	StatusChanged() <-chan struct{}
	Done() <-chan struct{}
	// Members lists the members of the applied configuration; the voters among
	// them decide whether the primary is down.
	Members() []consensus.Member
	// FenceRouting waits until no proxy can still route by a state older
	// than index: each confirmed it, or its lease provably ran out. Leader only.
	FenceRouting(ctx context.Context, index uint64) (consensus.FenceReport, error)
}

// StateSource gives the applied replicated state (*clusterstate.Machine).
type StateSource interface {
	State() clusterstate.State
	// AppliedIndex is the Raft index of the last applied entry (at least the
	// one State reflects, when read after it).
	AppliedIndex() uint64
}

// HealthView is this proxy's own view of the PostgreSQL nodes (*health.Monitor).
type HealthView interface {
	Snapshot() map[string]health.NodeStatus
}

// Defaults of the Coordinator's optional fields.
const (
	DefaultInterval          = 200 * time.Millisecond
	DefaultMinInterval       = 60 * time.Second
	DefaultObservationMaxAge = 3 * DefaultRefresh
	DefaultActionTimeout     = 2 * time.Second
	DefaultPromoteTimeout    = 30 * time.Second
	DefaultCatchUpTimeout    = 10 * time.Second
	DefaultSwitchoverGrace   = 3 * time.Second
	DefaultBlockedRecheck    = time.Second
	DefaultReconcileEvery    = 5 * time.Second
	DefaultProposeTimeout    = 3 * time.Second
	DefaultFenceTimeout      = 30 * time.Second
)

// Coordinator bootstraps the cluster and drives failovers and switchovers (see
// the package doc). Its fields are set before Run and not changed after; zero
// optional fields take the defaults above.
//
// Ownership: Run's goroutine owns everything the leader remembers between steps
// (it lives in a driver that Run creates, never in this struct). Failover,
// Switchover, SetPaused and Safety may be called from any goroutine: they only read
// the replicated state and the health view and propose commands.
type Coordinator struct {
	Raft  Raft
	State StateSource
	// Nodes are the configured PostgreSQL nodes (name and priority).
	Nodes []clusterstate.NodeSpec
	// FindPrimary returns the name of the one node that is not in recovery; it
	// errors when there is none or more than one (a split brain is never
	// bootstrapped).
	FindPrimary func(ctx context.Context) (string, error)

	// Addresses maps every configured backend name to its host:port: where the
	// coordinator connects, and what re-pointed standbys stream from.
	Addresses map[string]string
	// ConnString returns the libpq connection string of a superuser (the
	// configured query user) at an address. It is used when Postgres is nil.
	ConnString func(address string) string
	// Postgres performs the actions on PostgreSQL nodes; nil means SQLActions
	// over Addresses and ConnString.
	Postgres Postgres
	// Health is this proxy's health monitor. Without it N and k fall back to the
	// configured backends with k = 1, a blocked failover is never aborted when the
	// old primary returns, and standbys are not healed.
	Health HealthView

	// ReplicationUser and ReplicationPassword, when set, override the user and
	// password in the primary_conninfo of re-pointed standbys. A ReplicationUser
	// other than the template's drops the template's password (it belonged to
	// the other user); see conninfo.Standby.
	ReplicationUser     string
	ReplicationPassword string
	// StandbyTLS is the TLS policy (sslmode, sslrootcert) of re-pointed
	// standbys' primary_conninfo (config backend.*): applied over the template,
	// never making it weaker (conninfo.WithTLSPolicy). sslrootcert is a path on
	// the standby's host. Empty = the template's settings as they are.
	StandbyTLS conninfo.Params

	// AllowAsync (config failover.allow_async) lets a failover that leaves the
	// new primary without any standby turn synchronous replication off. By
	// default it never does: the new primary's synchronous_standby_names keeps
	// naming the lost and fenced nodes, so commits wait until one of them
	// streams again (SPEC §4). Either way the promote step's record says which.
	AllowAsync bool

	// MinInterval is the flap guard (config failover.min_interval): the least
	// time from the completion of one automatic failover to the next. Default 60s.
	MinInterval time.Duration
	// ObservationMaxAge: health observations older than this do not count
	// towards "a majority observes the primary down". Default 15s (three
	// HealthReporter refreshes).
	ObservationMaxAge time.Duration
	// Interval is how often the leader re-checks its duties when nothing is
	// applied; zero means 200ms.
	Interval time.Duration
	// ActionTimeout bounds one PostgreSQL action (freeze, re-point); default 2s.
	ActionTimeout time.Duration
	// PromoteTimeout bounds setting synchronous_standby_names and promoting the
	// candidate (a standby replays all WAL it received first); default 30s.
	PromoteTimeout time.Duration
	// CatchUpTimeout bounds how long a switchover waits for the candidate to
	// receive the old primary's final LSN before it is aborted; default 10s.
	CatchUpTimeout time.Duration
	// SwitchoverGrace is how long a switchover lets transactions that already
	// wrote finish on the old primary before their sessions are ended; default 3s.
	SwitchoverGrace time.Duration
	// BlockedRecheck is how often a blocked failover re-freezes and re-checks
	// the standbys; default 1s.
	BlockedRecheck time.Duration
	// ReconcileEvery is how often the leader looks for standbys that do not
	// follow the agreed primary; default 5s.
	ReconcileEvery time.Duration
	// ProposeTimeout bounds one Raft proposal; default 3s.
	ProposeTimeout time.Duration
	// FenceTimeout bounds the wait for every proxy to confirm a failover's
	// epoch or lose its lease before the standbys are frozen; default 30s. The
	// wait itself is bounded by about one routing lease (3 s); this only
	// guards against a broken Raft member.
	FenceTimeout time.Duration

	// Metrics receives failover outcomes and phase durations; nil records nothing.
	Metrics *metrics.Metrics

	// Now is the clock; nil means time.Now. Tests inject a fake one.
	Now    func() time.Time
	Logger *slog.Logger
}

// Run performs the leader's duties until ctx ends or the Raft member stops. It
// acts only while the local Raft member is the leader, and runs the next step of a
// failover as soon as the previous one is applied.
func (c *Coordinator) Run(ctx context.Context) {
	d := newDriver(c)
	for {
		applied, status := c.Raft.Applied(), c.Raft.StatusChanged()
		if !c.Raft.Status().IsLeader {
			// Nothing to do until this member leads: no timer, no wake-ups.
			select {
			case <-ctx.Done():
				return
			case <-c.Raft.Done():
				return
			case <-status:
			}
			continue
		}
		wait := d.leaderStep(ctx)
		if ctx.Err() != nil {
			return
		}
		if wait <= 0 {
			select {
			case <-c.Raft.Done():
				return
			default:
				continue
			}
		}
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
			return
		case <-c.Raft.Done():
			timer.Stop()
			return
		case <-applied:
		case <-status:
		case <-timer.C:
		}
		timer.Stop()
	}
}

// bootstrap proposes the node that is not in recovery as the primary at epoch 1.
func (c *Coordinator) bootstrap(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	primary, err := c.FindPrimary(ctx)
	if err != nil {
		return err
	}
	res, err := c.propose(ctx, clusterstate.Command{Bootstrap: &clusterstate.Bootstrap{Primary: primary, Nodes: c.Nodes}})
	if err != nil {
		return fmt.Errorf("bootstrap with primary %s: %w", primary, err)
	}
	if res.Code == clusterstate.Applied {
		c.logger().Info("cluster bootstrapped", "primary", primary, "epoch", res.Epoch)
	}
	return nil
}

// errRejected marks a command the state machine refused (Rejected): proposing it
// again will not help.
var errRejected = errors.New("rejected by the cluster state")

// propose replicates cmd and returns its Result once applied locally. A Rejected
// result is an error wrapping errRejected; Duplicate and Stale are not errors (the
// caller re-reads the state).
func (c *Coordinator) propose(ctx context.Context, cmd clusterstate.Command) (clusterstate.Result, error) {
	kind, err := cmd.Type()
	if err != nil {
		return clusterstate.Result{}, err
	}
	data, err := clusterstate.Encode(cmd)
	if err != nil {
		return clusterstate.Result{}, fmt.Errorf("encode %s: %w", kind, err)
	}
	ctx, cancel := context.WithTimeout(ctx, orDefault(c.ProposeTimeout, DefaultProposeTimeout))
	defer cancel()
	out, err := c.Raft.Propose(ctx, data)
	if err != nil {
		return clusterstate.Result{}, fmt.Errorf("propose %s: %w", kind, err)
	}
	res, err := clusterstate.DecodeResult(out)
	if err != nil {
		return clusterstate.Result{}, fmt.Errorf("result of %s: %w", kind, err)
	}
	if res.Code == clusterstate.Rejected {
		return res, fmt.Errorf("%s: %w: %s", kind, errRejected, res.Reason)
	}
	return res, nil
}

// voters returns the Raft ids of the voting members.
func (c *Coordinator) voters() []uint64 {
	var ids []uint64
	for _, m := range c.Raft.Members() {
		if m.Voter {
			ids = append(ids, m.ID)
		}
	}
	return ids
}

// backendNames returns the configured backend names, sorted.
func (c *Coordinator) backendNames() []string {
	names := make([]string, 0, len(c.Nodes))
	for _, n := range c.Nodes {
		names = append(names, n.Name)
	}
	slices.Sort(names)
	return names
}

// lastGoodProbe returns this proxy's latest successful probe of node.
func (c *Coordinator) lastGoodProbe(node string) (health.Probe, bool) {
	if c.Health == nil {
		return health.Probe{}, false
	}
	status, ok := c.Health.Snapshot()[node]
	if !ok || !status.LastGood.Reachable {
		return health.Probe{}, false
	}
	return status.LastGood, true
}

// quorumView returns N and k for a failover away from oldPrimary (see quorumFor).
func (c *Coordinator) quorumView(oldPrimary string) quorumView {
	probe, ok := c.lastGoodProbe(oldPrimary)
	return quorumFor(oldPrimary, probe, ok, c.backendNames())
}

func (c *Coordinator) now() time.Time {
	if c.Now != nil {
		return c.Now()
	}
	return time.Now()
}

func (c *Coordinator) interval() time.Duration { return orDefault(c.Interval, DefaultInterval) }

func orDefault(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}

func (c *Coordinator) logger() *slog.Logger {
	if c.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return c.Logger
}
