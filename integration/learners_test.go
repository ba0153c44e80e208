package integration

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/pgquorum/pgquorum/config"
	"github.com/pgquorum/pgquorum/localcluster"
	"github.com/pgquorum/pgquorum/node"
)

// learnerFleet is a block of learner nodes (sidecars that never vote) running
// in this process as separate node.Node instances, each with its own Raft
// member, data directory, listeners and TLS identity: the certificate of the
// whole block (`pgquorum cert node --id FIRST-LAST --learner`). One process
// instead of one per learner keeps 100 of them within a 2-core machine; what
// they send to the voters is the same.
type learnerFleet struct {
	Nodes []*node.Node
}

// startLearners starts learners first, first+1, ... in front of pg, joining the
// voters of proxies. They are closed when the test ends.
func startLearners(ctx context.Context, t testing.TB, pg *localcluster.Cluster, proxies *ProxyCluster, first uint64, count int) *learnerFleet {
	t.Helper()
	last := first + uint64(count) - 1
	proxies.Cert(t, "node", "--id", fmt.Sprintf("%d-%d", first, last), "--learner")
	block := filepath.Join(proxies.Certs, fmt.Sprintf("node-%d-%d", first, last))

	var peers []config.Peer
	for _, p := range proxies.Proxies {
		peers = append(peers, config.Peer{ID: p.ID, Raft: p.Raft})
	}
	dir := t.TempDir()
	fleet := &learnerFleet{Nodes: make([]*node.Node, count)}
	t.Cleanup(fleet.close)
	no := false
	// All at once, as a fleet rolls out.
	errs := make([]error, count)
	var wg sync.WaitGroup
	for id := first; id <= last; id++ {
		cfg := &config.Config{
			ClusterName: "itest",
			Node:        config.Node{ID: id, DataDir: filepath.Join(dir, strconv.FormatUint(id, 10)), Voter: &no},
			Listen:      config.Listen{Postgres: "127.0.0.1:0", Admin: "127.0.0.1:0", Raft: "127.0.0.1:0"},
			Peers:       peers,
			Auth:        config.Auth{Method: "scram-sha-256", QueryUser: localcluster.QueryUser, QueryPassword: localcluster.QueryPassword, QueryDatabase: "postgres"},
			Hold: config.Hold{Timeout: config.Duration{Duration: 5 * time.Second}, MaxHeld: config.DefaultMaxHeld,
				ReleaseConcurrency: config.DefaultReleaseConcurrency},
			Health:  config.Health{Interval: config.Duration{Duration: config.DefaultHealthInterval}, Timeout: config.Duration{Duration: config.DefaultHealthTimeout}},
			Backend: config.BackendTLS{SSLMode: "disable"},
			Log:     config.Log{Format: "text", Level: "info"},
			PeerTLS: &config.PeerTLS{CA: filepath.Join(proxies.Certs, "ca.pem"), Cert: block + ".pem", Key: block + "-key.pem"},
		}
		for _, n := range pg.Nodes {
			cfg.Backends = append(cfg.Backends, config.Backend{Name: n.Name, Address: n.Address()})
		}
		wg.Go(func() {
			fleet.Nodes[id-first], errs[id-first] = node.Start(ctx, cfg, nil, node.Options{NoRuntimeMetrics: true})
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("start learners: %v", err)
	}
	return fleet
}

// close stops every learner, all at once.
func (f *learnerFleet) close() {
	var wg sync.WaitGroup
	for _, n := range f.Nodes {
		if n == nil {
			continue // did not start
		}
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_ = n.Close(ctx)
		})
	}
	wg.Wait()
}

// waitRouting waits until every learner routes to an agreed primary of epoch
// epoch or later.
func (f *learnerFleet) waitRouting(ctx context.Context, epoch uint64) error {
	for _, n := range f.Nodes {
		for {
			changed := n.RoutingChanged()
			v := n.Routing()
			if v.Routing && v.Epoch >= epoch {
				break
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("learner %d never routed at epoch %d: %s", n.Raft().Status().ID, epoch, v.Reason)
			case <-changed:
			}
		}
	}
	return nil
}

// watchPrimary starts watching every learner until it routes to primary;
// the returned function waits (bounded by ctx) and returns, in the fleet's
// order, when each one applied the state that names primary and when it
// routed to it (zero for a learner that never did).
func (f *learnerFleet) watchPrimary(ctx context.Context, primary string) func() (applied, routed []time.Time) {
	applied := make([]time.Time, len(f.Nodes))
	routed := make([]time.Time, len(f.Nodes))
	var wg sync.WaitGroup
	for i, n := range f.Nodes {
		wg.Go(func() {
			for {
				changed, entries := n.RoutingChanged(), n.Raft().Applied()
				if applied[i].IsZero() && n.State().Primary == primary {
					applied[i] = time.Now()
				}
				if v := n.Routing(); v.Routing && v.Target.Name == primary {
					routed[i] = time.Now()
					return
				}
				select {
				case <-ctx.Done():
					return
				case <-changed:
				case <-entries:
				}
			}
		})
	}
	return func() ([]time.Time, []time.Time) {
		wg.Wait()
		return applied, routed
	}
}
