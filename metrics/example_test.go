package metrics_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"time"

	"github.com/pgquorum/pgquorum/metrics"
)

// A node creates its Metrics, hands the components' views to it as they start,
// serves it at GET /metrics, and lets components report events.
func Example() {
	m := metrics.New(metrics.Options{ClusterName: "demo", NodeID: 1, Version: "v0.1.0", NoRuntimeMetrics: true})

	// In node.go the funcs read the real components, for example
	//   Proxy: func() metrics.ProxyStats { return metrics.ProxyStats(server.Stats()) }
	err := m.AddSources(metrics.Sources{
		Routing: func() metrics.RoutingStatus { return metrics.RoutingStatus{Routing: true, Target: "pg1"} },
	})
	if err != nil {
		fmt.Println(err)
	}

	mux := http.NewServeMux()
	mux.Handle("GET /metrics", m.Handler())

	// A proxy session held while no primary was agreed, then routed.
	m.HoldStarted()
	m.HoldFinished(800*time.Millisecond, metrics.HoldRouted)

	rec := httptest.NewRecorder()
	mux.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	for _, line := range strings.Split(rec.Body.String(), "\n") {
		if strings.HasPrefix(line, "pgquorum_routing_") || strings.HasPrefix(line, `pgquorum_proxy_hold_duration_seconds_count{outcome="routed"}`) {
			fmt.Println(line)
		}
	}
	// Output:
	// pgquorum_proxy_hold_duration_seconds_count{outcome="routed"} 1
	// pgquorum_routing_ready 1
	// pgquorum_routing_target{node="pg1"} 1
}
