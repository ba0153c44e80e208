package node

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pgquorum/pgquorum/admin"
)

// drainState is a node's one-way path from serving clients to not: /readyz
// turns 503 at once, the proxy keeps accepting for shutdown.drain_delay (so
// that load balancers and Kubernetes Services stop sending new clients), then
// stops accepting and closes each session at its next transaction boundary
// (proxy.Server.Shutdown), within shutdown.grace. The Raft member and the
// admin API go on until the node is closed.
//
// Owner: the node. once guards the start; started and finished are read by
// anyone.
type drainState struct {
	once     sync.Once
	started  atomic.Bool
	since    time.Time     // set before started
	finished chan struct{} // closed once the proxy has shut down
}

// DrainTimes are shutdown.drain_delay and shutdown.grace (with the component's
// default grace).
func (n *Node) DrainTimes() (delay, grace time.Duration) {
	grace = n.cfg.Shutdown.Grace.Duration
	if grace <= 0 {
		grace = DefaultShutdownGrace
	}
	return n.cfg.Shutdown.DrainDelay.Duration, grace
}

// StartDrain begins draining in the background and says how (admin.Drainer:
// POST /drain). Calling it again changes nothing.
func (n *Node) StartDrain() admin.DrainInfo {
	delay, grace := n.DrainTimes()
	n.drain.once.Do(func() {
		n.drain.since = time.Now()
		n.drain.started.Store(true)
		n.logger.Info("draining: /readyz answers 503; the proxy stops accepting after the drain delay, "+
			"then each session ends at its next transaction boundary", "drain_delay", delay, "grace", grace)
		n.wg.Add(1)
		go func() {
			defer n.wg.Done()
			defer close(n.drain.finished)
			timer := time.NewTimer(delay)
			defer timer.Stop()
			select {
			case <-timer.C:
			case <-n.runCtx.Done():
			}
			ctx, cancel := context.WithTimeout(context.Background(), grace)
			defer cancel()
			if err := n.proxy.Shutdown(ctx); err != nil {
				n.logger.Warn("drain: sessions still open after the grace period were closed", "grace", grace, "err", err)
				return
			}
			n.logger.Info("drained: every client session has ended", "took", time.Since(n.drain.since).Round(time.Millisecond))
		}()
	})
	return admin.DrainInfo{Draining: true, Since: n.drain.since, DrainDelay: delay.String(), Grace: grace.String()}
}

// Drain drains the node (StartDrain) and waits until the proxy has shut
// down or ctx ends. pgquorum run calls it on SIGTERM and SIGINT, before Close.
func (n *Node) Drain(ctx context.Context) error {
	n.StartDrain()
	select {
	case <-n.drain.finished:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// stopProxy is Close's part of the proxy: it waits for a drain in progress
// (bounded by ctx), or shuts the proxy down at once, within ctx.
func (n *Node) stopProxy(ctx context.Context) {
	started := true
	n.drain.once.Do(func() {
		started = false
		close(n.drain.finished)
	})
	if started {
		select {
		case <-n.drain.finished:
		case <-ctx.Done():
			n.logger.Warn("close: the drain did not finish in time; closing the remaining sessions")
		}
		return
	}
	if err := n.proxy.Shutdown(ctx); err != nil {
		n.logger.Warn("proxy shutdown", "err", err)
	}
}
