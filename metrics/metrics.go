package metrics

import (
	"fmt"
	"log/slog"
	"net/http"
	"runtime"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Namespace prefixes every pgquorum metric family.
const Namespace = "pgquorum"

// Bounds of one scrape of GET /metrics.
const (
	// ScrapeTimeout: a scrape that takes longer is answered with 503.
	ScrapeTimeout = 10 * time.Second
	// MaxScrapesInFlight: more concurrent scrapes are answered with 503.
	MaxScrapesInFlight = 4
)

// Options configure New. The zero value is usable.
type Options struct {
	// ClusterName and NodeID label pgquorum_node_info. Target labels such as
	// "cluster" belong to the scrape configuration (configs/prometheus), not here.
	ClusterName string
	NodeID      uint64
	// Version labels pgquorum_build_info; "" shows "unknown".
	Version string
	// NoRuntimeMetrics leaves out the Go runtime (go_*) and process
	// (process_*) collectors. Production keeps them; tests that start many
	// nodes in one process may leave them out.
	NoRuntimeMetrics bool
	// Logger receives errors of collecting and serving metrics; nil discards.
	Logger *slog.Logger
	// Backends are the configured PostgreSQL node names: the only values of
	// the "node" label of the proxy's backend families (others count as
	// "other").
	Backends []string
	// MaxHeld is hold.max_held, exposed as pgquorum_proxy_held_requests_limit
	// (the saturation of held requests is held_requests / this); 0 leaves
	// the family out.
	MaxHeld int
}

// Metrics is one node's metrics: a private registry, the event metrics that
// components update, and the collectors that read Sources on scrape.
//
// Concurrency: every method is safe for concurrent use. The event metrics are
// atomic; the registry has its own lock; the sources are read by the scraping
// goroutine. A nil *Metrics is valid: event methods do nothing, AddSources
// returns nil and Handler answers 404.
type Metrics struct {
	registry   *prometheus.Registry
	handler    http.Handler
	events     events
	admin      adminEvents
	membership membershipEvents
	// asyncCommit: sessions that lowered synchronous_commit (asynccommit.go).
	asyncCommit asyncCommitEvents
	backend     backendEvents
}

// New returns the metrics of one node with the event metrics registered and no
// sources yet.
func New(opts Options) *Metrics {
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	m := &Metrics{registry: prometheus.NewRegistry()}
	m.events = newEvents()
	m.registry.MustRegister(m.events.collectors()...)
	m.admin = newAdminEvents()
	m.registry.MustRegister(m.admin.refused)
	m.asyncCommit = newAsyncCommitEvents()
	m.registry.MustRegister(m.asyncCommit.sessions, m.asyncCommit.refused)
	m.membership = newMembershipEvents()
	m.registry.MustRegister(m.membership.learnersRemoved)
	m.backend = newBackendEvents(opts.Backends)
	m.registry.MustRegister(m.backend.collectors()...)
	if opts.MaxHeld > 0 {
		limit := prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: Namespace, Subsystem: "proxy", Name: "held_requests_limit",
			Help: "hold.max_held: how many requests and new connections may wait for a primary at once; past it they get 57P03 at once.",
		})
		limit.Set(float64(opts.MaxHeld))
		m.registry.MustRegister(limit)
	}
	m.registry.MustRegister(infoCollector(opts))
	if !opts.NoRuntimeMetrics {
		m.registry.MustRegister(
			collectors.NewGoCollector(),
			collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		)
	}
	m.handler = promhttp.HandlerFor(m.registry, promhttp.HandlerOpts{
		ErrorLog: scrapeErrorLog{logger},
		// Serve what can be collected even if one metric is broken: a partial
		// /metrics is more useful to an operator than none.
		ErrorHandling:       promhttp.ContinueOnError,
		MaxRequestsInFlight: MaxScrapesInFlight,
		Timeout:             ScrapeTimeout,
	})
	return m
}

// Handler serves the metrics in the Prometheus exposition formats; mount it at
// GET /metrics.
func (m *Metrics) Handler() http.Handler {
	if m == nil {
		return http.NotFoundHandler()
	}
	return m.handler
}

// AddSources registers collectors for the non-nil funcs of s. The wiring may
// call it once with every source, or several times as components come up; a
// source kind given twice is an error (its families would be duplicates), and
// the call then registers nothing.
func (m *Metrics) AddSources(s Sources) error {
	if m == nil {
		return nil
	}
	var add []prometheus.Collector
	if c := (&sourceCollector{sources: s}); len(c.descs()) > 0 {
		add = append(add, c)
	}
	if s.Redundancy != nil {
		add = append(add, redundancyCollector{source: s.Redundancy})
	}
	if s.History != nil {
		add = append(add, newFailoverCounter(s.History))
	}
	if len(add) == 0 {
		return nil
	}
	if err := m.registry.Register(collectorList(add)); err != nil {
		return fmt.Errorf("metrics: register sources: %w", err)
	}
	return nil
}

// infoCollector is pgquorum_build_info and pgquorum_node_info: constant 1s
// whose labels say what runs here.
func infoCollector(opts Options) prometheus.Collector {
	version := opts.Version
	if version == "" {
		version = "unknown"
	}
	build := prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace:   Namespace,
		Name:        "build_info",
		Help:        "Always 1; the labels name the pgquorum version and the Go version it was built with.",
		ConstLabels: prometheus.Labels{"version": labelValue(version), "go_version": runtime.Version()},
	})
	build.Set(1)
	node := prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: Namespace,
		Name:      "node_info",
		Help:      "Always 1; the labels name the pgquorum cluster (cluster_name) and this node's Raft id.",
		ConstLabels: prometheus.Labels{
			"cluster_name": labelValue(opts.ClusterName),
			"node_id":      strconv.FormatUint(opts.NodeID, 10),
		},
	})
	node.Set(1)
	return collectorList{build, node}
}

// collectorList registers several collectors as one.
type collectorList []prometheus.Collector

func (l collectorList) Describe(ch chan<- *prometheus.Desc) {
	for _, c := range l {
		c.Describe(ch)
	}
}

func (l collectorList) Collect(ch chan<- prometheus.Metric) {
	for _, c := range l {
		c.Collect(ch)
	}
}

// scrapeErrorLog adapts slog to promhttp's Logger.
type scrapeErrorLog struct{ logger *slog.Logger }

func (l scrapeErrorLog) Println(v ...any) {
	l.logger.Warn("metrics: scrape error", "err", fmt.Sprint(v...))
}
