// Package node runs one pgquorum proxy node: it wires the Raft member
// (consensus), the replicated state (clusterstate), routing, the leader's
// coordinator, the PostgreSQL listener (proxy) and the admin API together, and
// owns their lifecycle: start in dependency order, stop in reverse.
//
//	consensus.Node ──applies──▶ clusterstate.Machine
//	      │ lease                     │ agreed primary, epoch
//	      ▼                           ▼
//	routing.ConsensusRouter ──Target──▶ proxy.Server ◀── clients
//	      ▲                                             admin.Server ◀── operators
//	coordinator.Coordinator (acts only on the Raft leader)
//
// Lifecycle, as etcd's server: Start starts every component in its own
// goroutine and undoes what it started if a later step fails; a component
// that stops on its own fails the whole node (Done, Err), so no part runs
// without the others; Drain stops taking clients without dropping them;
// Close stops everything in reverse order.
//
// The package holds no protocol or consensus logic of its own.
package node

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pgquorum/pgquorum/admin"
	"github.com/pgquorum/pgquorum/authlookup"
	"github.com/pgquorum/pgquorum/config"
	"github.com/pgquorum/pgquorum/consensus"
	"github.com/pgquorum/pgquorum/consensus/clusterstate"
	"github.com/pgquorum/pgquorum/coordinator"
	"github.com/pgquorum/pgquorum/health"
	"github.com/pgquorum/pgquorum/learners"
	"github.com/pgquorum/pgquorum/metrics"
	"github.com/pgquorum/pgquorum/proxy"
	"github.com/pgquorum/pgquorum/proxy/pgauth"
	"github.com/pgquorum/pgquorum/routing"
)

// DefaultShutdownGrace is shutdown.grace when the configuration does not
// say: how long a stopping node lets client sessions reach their next
// transaction boundary before it closes them.
const DefaultShutdownGrace = 10 * time.Second

// ShutdownGrace is DefaultShutdownGrace (the name callers used before
// shutdown.grace existed).
const ShutdownGrace = DefaultShutdownGrace

// Node is a running pgquorum node.
//
// Lifecycle (etcd's server style): Start starts every component in its own
// goroutine; the components run until Close. If any of them stops on its own
// (its listener died, the Raft member failed or was removed, ...) the node has
// failed: Done is closed and Err says which component and why, and the owner
// must Close it (pgquorum run exits 1). A node never keeps serving with a
// part missing while /healthz says it is alive.
//
// Owner: the goroutine that called Start calls Drain and Close; the
// components run in the goroutines Start created.
type Node struct {
	cfg     *config.Config
	logger  *slog.Logger
	raft    *consensus.Node
	machine *clusterstate.Machine
	router  *routing.ConsensusRouter
	proxy   *proxy.Server
	admin   *admin.Server
	// coordinator acts only while this node is the Raft leader; its operator
	// calls (failover, switchover, pause) work from any node.
	coordinator *coordinator.Coordinator
	metrics     *metrics.Metrics
	security    security

	runCtx   context.Context // the components' context; cancelled by Close
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	stopping atomic.Bool // Close was called: components that return are not failures
	// bgMu orders goBackground's wg.Add before Close's wg.Wait.
	bgMu sync.Mutex

	login *loginCheck // /readyz: can this proxy log in to the agreed primary; nil without a query user

	done     chan struct{} // closed when the node failed, or Close finished
	doneOnce sync.Once
	// forgetRemovedID runs dropRemovedAutoID once.
	forgetRemovedID sync.Once
	errMu           sync.Mutex
	err             error // the first failure

	drain drainState
}

// Options are the parts of a node that do not come from its configuration file.
type Options struct {
	Version string // shown by pgquorum_build_info
	// NoRuntimeMetrics leaves the Go runtime and process collectors out of
	// /metrics (for tests that run many nodes in one process).
	NoRuntimeMetrics bool
	// AdminListen, if set, opens the admin API's listener instead of
	// net.Listen("tcp", listen.admin): a listener handed over by systemd
	// socket activation, or a test's.
	AdminListen func(addr string) (net.Listener, error)
}

// Start starts every component of the node and returns once the listeners are
// bound. cfg must be valid (config.Load; Start validates it again, so a
// configuration built in code is held to the same rules, secure by default).
// A learner with node.id: auto gets its id here (resolveAutoID). If anything
// fails, what was started is stopped again, in reverse order, before Start
// returns the error.
func Start(ctx context.Context, cfg *config.Config, logger *slog.Logger, opts Options) (_ *Node, err error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	n := &Node{cfg: cfg, logger: logger, machine: clusterstate.NewMachine(), done: make(chan struct{})}
	n.drain.finished = make(chan struct{})
	// One unwind path: every part that started pushes how to stop it.
	var undo []func()
	defer func() {
		if err != nil {
			for i := len(undo) - 1; i >= 0; i-- {
				undo[i]()
			}
		}
	}()

	if n.security, err = loadSecurity(cfg, logger); err != nil {
		return nil, err
	}
	if err := resolveAutoID(cfg, n.security.peer, logger); err != nil {
		return nil, err
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	tlsConfig, err := clientTLS(cfg)
	if err != nil {
		return nil, err
	}

	mockSecret, err := cfg.MockSecret()
	if err != nil {
		return nil, err
	}
	if names := cfg.UnencryptedBackends(); len(names) > 0 {
		logger.Warn("backend.sslmode is disable and PostgreSQL is not on loopback: sessions, passwords' proofs and "+
			"admin SQL cross the network in plaintext; set backend.sslmode to verify-full", "backends", strings.Join(names, ", "))
	}

	peers := make([]consensus.Peer, 0, len(cfg.Peers))
	for _, p := range cfg.Peers {
		peers = append(peers, consensus.Peer{ID: p.ID, Addr: p.Raft})
	}
	raft, err := consensus.Start(ctx, consensus.Config{
		ClusterName:  cfg.ClusterName,
		NodeID:       cfg.Node.ID,
		DataDir:      cfg.Node.DataDir,
		Voter:        cfg.Node.IsVoter(),
		ListenAddr:   cfg.Listen.Raft,
		Peers:        peers,
		StateMachine: n.machine,
		Logger:       logger,
		PeerTLS:      n.security.consensusTLS(),
		Plaintext:    n.security.peer == nil, // validated: only with security.insecure on loopback
		// A sidecar's certificate lets it report, not steer the cluster.
		LearnerProposals: clusterstate.LearnerMayPropose,
		// The router confirms each applied index once the proxy acted on it
		// (routing.ConsensusRouter.RouteApplied), so failovers wait for it.
		RoutingConfirmation: true,
		// Learners that ask to join together are added in one change once
		// every voter can read such a change.
		BatchLearners: func() bool { return n.machine.AgreedVersion() >= clusterstate.VersionBatchedLearners },
	})
	if err != nil {
		return nil, fmt.Errorf("raft: %w", err)
	}
	n.raft = raft
	undo = append(undo, func() { _ = raft.Close() })

	addresses := map[string]string{}
	var specs []clusterstate.NodeSpec
	var adminBackends []admin.Backend
	probe := &routing.ProbeRouter{
		ConnString: func(address string) string { return cfg.QueryConnString(address, "pgquorum-probe") },
		Logger:     logger.With("component", "bootstrap-probe"),
	}
	for _, b := range cfg.Backends {
		addresses[b.Name] = b.Address
		specs = append(specs, clusterstate.NodeSpec{Name: b.Name, Priority: b.Priority})
		adminBackends = append(adminBackends, admin.Backend{Name: b.Name, Address: b.Address})
		probe.Backends = append(probe.Backends, routing.Backend{Name: b.Name, Address: b.Address})
	}

	n.router = &routing.ConsensusRouter{
		Raft:      raft,
		State:     n.machine,
		Addresses: addresses,
		Logger:    logger.With("component", "routing"),
		OnChange:  n.routingChanged,
	}
	var monitorNodes []health.MonitorNode
	for _, b := range cfg.Backends {
		monitorNodes = append(monitorNodes, health.MonitorNode{Name: b.Name, ConnString: cfg.QueryConnString(b.Address, "pgquorum-health")})
	}
	monitor, err := health.NewMonitor(health.MonitorConfig{
		Nodes:    monitorNodes,
		Interval: cfg.Health.Interval.Duration,
		Timeout:  cfg.Health.Timeout.Duration,
		Logger:   logger.With("component", "health"),
	})
	if err != nil {
		return nil, err
	}
	reporter := &coordinator.HealthReporter{
		Raft:   raft,
		Proxy:  cfg.Node.ID,
		Health: monitor,
		Logger: logger.With("component", "health-reporter"),
	}
	n.coordinator = &coordinator.Coordinator{
		Raft:  raft,
		State: n.machine,
		Nodes: specs,
		FindPrimary: func(ctx context.Context) (string, error) {
			t, err := probe.FindPrimary(ctx)
			return t.Name, err
		},
		Addresses:   addresses,
		ConnString:  func(address string) string { return cfg.QueryConnString(address, "pgquorum-coordinator") },
		StandbyTLS:  cfg.StandbyTLSParams(),
		Health:      monitor,
		MinInterval: cfg.Failover.MinInterval.Duration,
		AllowAsync:  cfg.Failover.AllowAsync,
		Logger:      logger.With("component", "coordinator"),
	}

	// Created before the parts that record events into it.
	n.metrics = metrics.New(metrics.Options{ClusterName: cfg.ClusterName, NodeID: cfg.Node.ID, Version: opts.Version,
		NoRuntimeMetrics: opts.NoRuntimeMetrics, Logger: logger.With("component", "metrics"),
		Backends: n.backendNames(), MaxHeld: cfg.Hold.MaxHeld})
	n.coordinator.Metrics = n.metrics

	var verifiers proxy.VerifierSource
	if cfg.Auth.Lookup == config.LookupVoters {
		// A sidecar without database credentials: the voters read verifiers for it.
		verifiers = authlookup.NewClient(raft)
	}
	n.proxy, err = proxy.NewServer(proxy.Config{
		Verifiers:             verifiers,
		NodeID:                cfg.Node.ID,
		ListenAddr:            cfg.Listen.Postgres,
		Router:                n.router,
		AuthMethod:            cfg.Auth.Method,
		QueryUser:             cfg.Auth.QueryUser,
		QueryPassword:         cfg.Auth.QueryPassword,
		QueryDatabase:         cfg.Auth.QueryDatabase,
		LookupFunction:        cfg.Auth.LookupFunction,
		MockSecret:            mockSecret,
		BackendTLS:            cfg.BackendTLSParams(),
		TLS:                   tlsConfig,
		TLSRequired:           cfg.TLS != nil && cfg.TLS.Mode == config.TLSRequire,
		ForbidAsyncCommit:     cfg.Failover.ForbidAsyncCommit,
		HoldTimeout:           cfg.Hold.Timeout.Duration,
		MaxHeld:               cfg.Hold.MaxHeld,
		ReleaseConcurrency:    cfg.Hold.ReleaseConcurrency,
		MaxClientConnections:  cfg.Limits.MaxClientConnections,
		MaxStartupConnections: cfg.Limits.MaxStartupConnections,
		Metrics:               n.metrics,
		CancelForwarder:       cancelForwarder{raft: raft},
		Logger:                logger,
	})
	if err != nil {
		return nil, err
	}
	raft.HandleCalls(cancelService, n.serveForwardedCancel)
	if err := n.proxy.Listen(); err != nil {
		return nil, err
	}
	if cfg.Node.IsVoter() {
		// Learners (sidecars) read verifiers through the voters (package authlookup).
		authlookup.Serve(raft, n.proxy.LookupVerifier, pgauth.NewMockKey(mockSecret), logger.With("component", "verifier-lookup"))
	}
	undo = append(undo, func() { _ = n.proxy.Shutdown(context.Background()) })
	if err := n.metrics.AddSources(n.metricsSources(monitor)); err != nil {
		return nil, err
	}
	n.admin = &admin.Server{
		Metrics:     n.metrics.Handler(),
		ClusterName: cfg.ClusterName,
		NodeID:      cfg.Node.ID,
		Backends:    adminBackends,
		Raft:        raft,
		State:       n.machine,
		Routing:     n.router,
		Operator:    n.coordinator,
		Health:      monitor,
		Drainer:     n,
		Readiness:   n,
		Refused:     n.metrics.AdminRefused,
		Logger:      logger.With("component", "admin"),
	}
	n.security.adminServer(n.admin, cfg)
	raft.HandleCalls(admin.MembersService, admin.MembersCallHandler(raft))
	listen := opts.AdminListen
	if listen == nil {
		listen = func(addr string) (net.Listener, error) { return net.Listen("tcp", addr) }
	}
	adminListener, err := listen(cfg.Listen.Admin)
	if err != nil {
		return nil, fmt.Errorf("admin listen %s: %w", cfg.Listen.Admin, err)
	}
	n.admin.UseListener(adminListener)
	undo = append(undo, func() { _ = adminListener.Close() })

	pruner := &learners.Pruner{
		Raft:        raft,
		RemoveAfter: learners.DefaultRemoveAfter,
		Removed:     func(uint64) { n.metrics.LearnerRemoved() },
		Logger:      logger.With("component", "learners"),
	}
	if r := cfg.Learners.RemoveAfter; r != nil {
		pruner.RemoveAfter = r.Duration // 0: never
	}
	versions := &coordinator.VersionAgreement{Raft: raft, State: n.machine, Proxy: cfg.Node.ID, Logger: logger.With("component", "versions")}

	if cfg.Auth.QueryUser != "" {
		// A sidecar without database credentials (auth.lookup: voters) has no
		// role to log in with: its readiness is routing and draining only.
		n.login = newLoginCheck(func(address string) string { return cfg.QueryConnString(address, "pgquorum-readyz") }, n.goBackground)
	}

	// From here on nothing fails: the components run until Close, and the
	// failure of any one is the node's (goRun).
	n.runCtx, n.cancel = context.WithCancel(context.WithoutCancel(ctx))
	n.goRun("raft", n.watchRaft)
	n.goRun("routing", func(ctx context.Context) error { n.router.Run(ctx); return nil })
	if cfg.Auth.QueryUser != "" {
		// Only voters probe PostgreSQL and report what they see (health.go);
		// a learner starts when it is promoted. A sidecar without database
		// credentials (auth.lookup: voters, no query user) probes nothing.
		n.goRun("health", n.asVoter(monitor.Run))
		n.goRun("health-reporter", n.asVoter(reporter.Run))
	}
	n.goRun("coordinator", func(ctx context.Context) error { n.coordinator.Run(ctx); return nil })
	n.goRun("certificates", func(ctx context.Context) error {
		return n.security.watch(ctx, logger.With("component", "certificates"), certificateCheck)
	})
	n.goRun("versions", versions.Run)
	n.goRun("learners", pruner.Run)
	n.goRun("admin", n.admin.Serve)
	n.goRun("proxy", n.serveProxy)
	logger.Info("pgquorum node started", "cluster", cfg.ClusterName, "node", cfg.Node.ID, "voter", cfg.Node.IsVoter(),
		"postgres", n.proxy.Addr().String(), "admin", n.admin.URL(), "raft", raft.Addr(), "peer_tls", n.security.peer != nil)
	return n, nil
}

// clientTLS is the proxy's TLS towards clients (tls.cert, tls.key); nil without.
func clientTLS(cfg *config.Config) (*tls.Config, error) {
	if cfg.TLS == nil {
		return nil, nil
	}
	cert, err := tls.LoadX509KeyPair(cfg.TLS.Cert, cfg.TLS.Key)
	if err != nil {
		return nil, fmt.Errorf("tls: %w", err)
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}, nil
}

// goRun runs one component in a goroutine the node waits for. A component
// runs until ctx ends; one that returns before (with an error or not) has
// failed, and so has the node.
func (n *Node) goRun(name string, run func(ctx context.Context) error) {
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		err := run(n.runCtx)
		if n.stopping.Load() || n.runCtx.Err() != nil {
			if err != nil && !errors.Is(err, context.Canceled) {
				n.logger.Warn("component stopped with an error while the node stopped", "component", name, "err", err)
			}
			return
		}
		if err == nil {
			err = errors.New("stopped unexpectedly")
		}
		n.fail(fmt.Errorf("%s: %w", name, err))
	}()
}

// goBackground runs a short task (a readiness login check) in a goroutine
// the node waits for at Close; once Close has begun it runs nothing.
func (n *Node) goBackground(f func(ctx context.Context)) {
	n.bgMu.Lock()
	defer n.bgMu.Unlock()
	if n.stopping.Load() {
		return
	}
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		f(n.runCtx)
	}()
}

// fail records the node's first failure and closes Done. When the Raft member
// has stopped, its error is the failure: the components that depend on it
// stop after it and would only say that they stopped.
func (n *Node) fail(err error) {
	select {
	case <-n.raft.Done():
		if raftErr := n.raft.Err(); raftErr != nil && !errors.Is(err, raftErr) {
			err = fmt.Errorf("raft: %w", raftErr)
		}
		n.forgetRemovedID.Do(n.dropRemovedAutoID)
	default:
	}
	n.errMu.Lock()
	first := n.err == nil
	if first {
		n.err = err
	}
	n.errMu.Unlock()
	if first {
		n.logger.Error("a component of the node failed: the node stops", "err", err)
	}
	n.doneOnce.Do(func() { close(n.done) })
}

// watchRaft is the Raft member as a component: it fails when the member stops
// on its own (a storage error, a broken invariant, an entry it cannot apply,
// or its removal from the cluster).
func (n *Node) watchRaft(ctx context.Context) error {
	select {
	case <-ctx.Done():
		return nil
	case <-n.raft.Done():
	}
	if err := n.raft.Err(); err != nil {
		return err
	}
	return errors.New("the Raft member stopped")
}

// dropRemovedAutoID makes a learner with node.id: auto that was removed from
// the cluster forget its id (and log), so that its next start joins under a
// new one. fail runs it, once, before Done is closed.
func (n *Node) dropRemovedAutoID() {
	if !errors.Is(n.raft.Err(), consensus.ErrRemoved) || !n.cfg.Node.AutoID {
		return
	}
	if err := forgetAutoID(n.cfg.Node.DataDir); err != nil {
		n.logger.Error("removed from the cluster, and the old id could not be dropped", "err", err)
		return
	}
	n.logger.Warn("removed from the cluster: the id is dropped, the next start joins under a new one (node.id: auto)",
		"id", n.cfg.Node.ID)
}

// serveProxy is the PostgreSQL listener as a component. Once the node drains
// (POST /drain), the listener stops on purpose and the node goes on without
// it (Raft member, admin API) until it is stopped.
func (n *Node) serveProxy(ctx context.Context) error {
	err := n.proxy.Serve(ctx)
	if errors.Is(err, proxy.ErrServerClosed) && n.drain.started.Load() {
		<-ctx.Done()
		return nil
	}
	if err == nil || errors.Is(err, proxy.ErrServerClosed) {
		return errors.New("the PostgreSQL listener stopped")
	}
	return err
}

// routingChanged runs on the router's goroutine when the routing view changes.
// The proxy watches the router itself (routing.ConsensusRouter implements
// proxy.Router): it holds new requests while no primary is agreed, moves
// sessions to a new primary, and drops its backend connections when the lease
// expires. Nothing else to do here.
func (n *Node) routingChanged(old, new routing.View) {}

// PostgresAddr is the client listener's address.
func (n *Node) PostgresAddr() net.Addr { return n.proxy.Addr() }

// AdminAddr is the admin API's address.
func (n *Node) AdminAddr() net.Addr { return n.admin.Addr() }

// Raft is the node's Raft member.
func (n *Node) Raft() *consensus.Node { return n.raft }

// Done is closed when the node has failed (see Err) or Close has finished.
func (n *Node) Done() <-chan struct{} { return n.done }

// Err is the node's failure: which component stopped on its own, and why;
// nil while it runs, and after a Close without failure.
func (n *Node) Err() error {
	n.errMu.Lock()
	defer n.errMu.Unlock()
	return n.err
}

// Close stops the node: the proxy stops accepting and drains its sessions
// (bounded by ctx; a Drain in progress is waited for), then the admin API,
// routing and coordinator stop, and the Raft member hands over leadership and
// closes its log. It returns the node's failure, if it failed.
func (n *Node) Close(ctx context.Context) error {
	n.bgMu.Lock()
	n.stopping.Store(true)
	n.bgMu.Unlock()
	n.stopProxy(ctx)
	n.cancel()
	n.wg.Wait()
	closeErr := n.raft.Close()
	n.doneOnce.Do(func() { close(n.done) })
	if err := n.Err(); err != nil {
		return err
	}
	if closeErr != nil && !errors.Is(closeErr, consensus.ErrStopped) {
		return closeErr
	}
	return nil
}

// Routing is this node's current routing decision.
func (n *Node) Routing() routing.View { return n.router.Current() }

// RoutingChanged returns a channel closed at the next change of Routing (take
// it before reading Routing, so no change is missed).
func (n *Node) RoutingChanged() <-chan struct{} {
	_, changed := n.router.Route()
	return changed
}

// State is the replicated cluster state as this node has applied it.
func (n *Node) State() clusterstate.State { return n.machine.State() }

// Reload applies what can change while running from a newly loaded
// configuration: the admin token and the certificate files (re-read at their
// paths). It returns the keys that changed but need a restart to take effect,
// and an error when the certificates could not be reloaded (the previous
// ones stay in use).
func (n *Node) Reload(cfg *config.Config) (needRestart []string, err error) {
	err = n.security.reload(n.logger)
	n.admin.SetToken(cfg.Admin.Token)
	old := n.cfg
	check := func(key string, changed bool) {
		if changed {
			needRestart = append(needRestart, key)
		}
	}
	check("cluster_name", old.ClusterName != cfg.ClusterName)
	sameID := old.Node.ID == cfg.Node.ID || (old.Node.AutoID && cfg.Node.AutoID)
	check("node", !sameID || old.Node.DataDir != cfg.Node.DataDir || old.Node.IsVoter() != cfg.Node.IsVoter())
	check("listen", old.Listen != cfg.Listen)
	check("peers", fmt.Sprint(old.Peers) != fmt.Sprint(cfg.Peers))
	check("backends", fmt.Sprint(old.Backends) != fmt.Sprint(cfg.Backends))
	check("auth", old.Auth != cfg.Auth)
	check("tls", fmt.Sprint(old.TLS) != fmt.Sprint(cfg.TLS))
	check("backend", old.Backend != cfg.Backend)
	check("limits", old.Limits != cfg.Limits)
	check("hold", old.Hold != cfg.Hold)
	check("health", old.Health != cfg.Health)
	check("failover", old.Failover != cfg.Failover)
	check("peer_tls", fmt.Sprint(old.PeerTLS) != fmt.Sprint(cfg.PeerTLS))
	check("admin.tls", fmt.Sprint(old.Admin.TLS) != fmt.Sprint(cfg.Admin.TLS))
	check("security", old.Security != cfg.Security)
	check("learners", durationOrNil(old.Learners.RemoveAfter) != durationOrNil(cfg.Learners.RemoveAfter))
	check("shutdown", old.Shutdown != cfg.Shutdown)
	return needRestart, err
}

// durationOrNil prints an optional duration for comparison.
func durationOrNil(d *config.Duration) string {
	if d == nil {
		return "unset"
	}
	return d.String()
}
