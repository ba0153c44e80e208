// Package metrics is one pgquorum node's Prometheus metrics, served at the admin
// API's GET /metrics.
//
// A node creates one Metrics with New. It owns a private prometheus.Registry
// (never the global default registry, so that tests can run many nodes in one
// process) and two kinds of metrics:
//
//   - Collected on scrape. State that already lives elsewhere (proxy counters,
//     the Raft status, the agreed cluster state, the health monitor's view of
//     each PostgreSQL node, routing, failover safety) is read when Prometheus
//     scrapes, through the small source funcs of Sources. The wiring code hands
//     them over with AddSources once the components exist; nothing is copied
//     or polled in between.
//   - Events. Things that happen (a query relayed, an error sent to a client, a
//     request held, a failover finished) are counted by the component that sees
//     them, through methods such as AddQueries, ClientError and HoldFinished.
//     Every event method is safe on a nil *Metrics and then does nothing, so
//     code paths work without metrics in tests.
//
// Names follow the Prometheus conventions: every family starts with
// "pgquorum_", counters end in "_total", and values are in base units named
// in the family name ("_seconds", "_bytes"). Label values that come from
// outside (a block reason, a SQLSTATE) are bounded so that a bad value cannot
// create unbounded series.
//
// What this package must not do: it imports no other pgquorum package, so any
// of them may import it for the event methods without an import cycle. It
// never blocks a caller of an event method (they are atomic updates), and it
// decides nothing: it reports what the sources say.
package metrics
