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
	"time"

	"github.com/pgquorum/pgquorum/admin"
	"github.com/pgquorum/pgquorum/authlookup"
	"github.com/pgquorum/pgquorum/config"
	"github.com/pgquorum/pgquorum/consensus"
	"github.com/pgquorum/pgquorum/consensus/clusterstate"
	"github.com/pgquorum/pgquorum/coordinator"
	"github.com/pgquorum/pgquorum/health"
	"github.com/pgquorum/pgquorum/metrics"
	"github.com/pgquorum/pgquorum/proxy"
	"github.com/pgquorum/pgquorum/proxy/pgauth"
	"github.com/pgquorum/pgquorum/routing"
)

// ShutdownGrace bounds how long a stopping node lets client sessions finish.
const ShutdownGrace = 10 * time.Second

// Node is a running pgquorum node. Owner: the goroutine that called Start
// calls Close; the components run in goroutines Start created.
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

	cancel context.CancelFunc
	wg     sync.WaitGroup
	errMu  sync.Mutex
	err    error
}

// Options are the parts of a node that do not come from its configuration file.
type Options struct {
	Version string // shown by pgquorum_build_info
	// NoRuntimeMetrics leaves the Go runtime and process collectors out of
	// /metrics (for tests that run many nodes in one process).
	NoRuntimeMetrics bool
}

// Start starts every component of the node and returns once the listeners are
// bound. cfg must be valid (config.Load; Start validates it again, so a
// configuration built in code is held to the same rules, secure by default).
func Start(ctx context.Context, cfg *config.Config, logger *slog.Logger, opts Options) (*Node, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	n := &Node{cfg: cfg, logger: logger, machine: clusterstate.NewMachine()}
	var err error
	if n.security, err = loadSecurity(cfg, logger); err != nil {
		return nil, err
	}

	var tlsConfig *tls.Config
	if cfg.TLS != nil {
		cert, err := tls.LoadX509KeyPair(cfg.TLS.Cert, cfg.TLS.Key)
		if err != nil {
			return nil, fmt.Errorf("tls: %w", err)
		}
		tlsConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
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
		raft.Close()
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
		NoRuntimeMetrics: opts.NoRuntimeMetrics, Logger: logger.With("component", "metrics")})
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
		raft.Close()
		return nil, err
	}
	raft.HandleCalls(cancelService, n.serveForwardedCancel)
	if err := n.proxy.Listen(); err != nil {
		raft.Close()
		return nil, err
	}
	if cfg.Node.IsVoter() {
		// Learners (sidecars) read verifiers through the voters (package authlookup).
		authlookup.Serve(raft, n.proxy.LookupVerifier, pgauth.NewMockKey(mockSecret), logger.With("component", "verifier-lookup"))
	}
	if err := n.metrics.AddSources(n.metricsSources(monitor)); err != nil {
		n.proxy.Shutdown(context.Background())
		raft.Close()
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
		Refused:     n.metrics.AdminRefused,
		Logger:      logger.With("component", "admin"),
	}
	n.security.adminServer(n.admin, cfg)
	if err := n.admin.Listen(cfg.Listen.Admin); err != nil {
		n.proxy.Shutdown(context.Background())
		raft.Close()
		return nil, err
	}

	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	n.cancel = cancel
	n.goRun("routing", func() error { n.router.Run(runCtx); return nil })
	if cfg.Auth.QueryUser != "" {
		// Only voters probe PostgreSQL and report what they see (health.go);
		// a learner starts when it is promoted. A sidecar without database
		// credentials (auth.lookup: voters, no query user) probes nothing.
		n.goRun("health", func() error {
			if !waitVoter(runCtx, raft) {
				return nil
			}
			return monitor.Run(runCtx)
		})
		n.goRun("health-reporter", func() error {
			if !waitVoter(runCtx, raft) {
				return nil
			}
			return reporter.Run(runCtx)
		})
	}
	n.goRun("coordinator", func() error { n.coordinator.Run(runCtx); return nil })
	n.goRun("certificates", func() error {
		return n.security.watch(runCtx, logger.With("component", "certificates"), certificateCheck)
	})
	versions := &coordinator.VersionAgreement{Raft: raft, State: n.machine, Proxy: cfg.Node.ID, Logger: logger.With("component", "versions")}
	n.goRun("versions", func() error { return versions.Run(runCtx) })
	n.goRun("admin", func() error { return n.admin.Serve(runCtx) })
	n.goRun("proxy", func() error {
		if err := n.proxy.Serve(runCtx); err != nil && !errors.Is(err, proxy.ErrServerClosed) {
			return err
		}
		return nil
	})
	logger.Info("pgquorum node started", "cluster", cfg.ClusterName, "node", cfg.Node.ID, "voter", cfg.Node.IsVoter(),
		"postgres", n.proxy.Addr().String(), "admin", n.admin.URL(), "raft", raft.Addr(), "peer_tls", n.security.peer != nil)
	return n, nil
}

// goRun runs f in a goroutine the node waits for; the first error is kept.
func (n *Node) goRun(name string, f func() error) {
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		if err := f(); err != nil {
			n.logger.Error("component stopped", "component", name, "err", err)
			n.errMu.Lock()
			if n.err == nil {
				n.err = fmt.Errorf("%s: %w", name, err)
			}
			n.errMu.Unlock()
		}
	}()
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

// Done is closed when the Raft member stops (closed, removed or failed).
func (n *Node) Done() <-chan struct{} { return n.raft.Done() }

// Close stops the node: the proxy stops accepting and drains its sessions
// (bounded by ctx), then the admin API, routing and coordinator stop, and the
// Raft member hands over leadership and closes its log.
func (n *Node) Close(ctx context.Context) error {
	if err := n.proxy.Shutdown(ctx); err != nil {
		n.logger.Warn("proxy shutdown", "err", err)
	}
	n.cancel()
	n.wg.Wait()
	if err := n.raft.Close(); err != nil && !errors.Is(err, consensus.ErrStopped) {
		return err
	}
	n.errMu.Lock()
	defer n.errMu.Unlock()
	return n.err
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
	check("node", old.Node.ID != cfg.Node.ID || old.Node.DataDir != cfg.Node.DataDir || old.Node.IsVoter() != cfg.Node.IsVoter())
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
	return needRestart, err
}
