package metrics

import (
	"regexp"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
)

var (
	metricNamePattern = regexp.MustCompile(`^[a-zA-Z_:][a-zA-Z0-9_:]*$`)
	labelNamePattern  = regexp.MustCompile(`^[a-zA-Z_][a-zA-Z0-9_]*$`)
	// Units that are not base units (Prometheus wants seconds and bytes).
	nonBaseUnit = regexp.MustCompile(`_((milli|micro|nano)seconds?|ms|us|ns|millis|minutes?|hours?|days?|kb|mb|gb|kib|mib|gib|kilobytes|megabytes|gigabytes|bits|percent)(_|$)`)
)

// TestNamingConventions walks every family a fully populated node exposes,
// runtime collectors included, and checks the Prometheus naming conventions.
func TestNamingConventions(t *testing.T) {
	m := New(Options{ClusterName: "demo", NodeID: 1, Version: "test", MaxHeld: 10000})
	if err := m.AddSources(healthySources()); err != nil {
		t.Fatal(err)
	}
	m.ClientError("57P03")
	families := scrape(t, m)

	var ours int
	for name, f := range families {
		if !metricNamePattern.MatchString(name) {
			t.Errorf("%s: not a valid metric name", name)
		}
		if strings.HasPrefix(name, "go_") || strings.HasPrefix(name, "process_") {
			continue // the standard runtime collectors, named by client_golang
		}
		if !strings.HasPrefix(name, Namespace+"_") {
			t.Errorf("%s: does not start with %s_", name, Namespace)
			continue
		}
		ours++
		checkFamilyName(t, name, f)
	}
	if ours != len(wantTypes) {
		t.Errorf("%d pgquorum families exposed, want %d", ours, len(wantTypes))
	}

	// A gauge X next to a counter X_total would be one family name in
	// OpenMetrics. (go_memstats_alloc_bytes has this clash; it is not ours.)
	for name, f := range families {
		if f.GetType() == dto.MetricType_COUNTER && strings.HasPrefix(name, Namespace+"_") {
			base := strings.TrimSuffix(name, "_total")
			if _, clash := families[base]; clash {
				t.Errorf("%s and %s would clash in OpenMetrics", base, name)
			}
		}
	}
}

func checkFamilyName(t *testing.T, name string, f *dto.MetricFamily) {
	t.Helper()
	if strings.TrimSpace(f.GetHelp()) == "" {
		t.Errorf("%s: no help text", name)
	}
	if strings.Contains(name, "__") {
		t.Errorf("%s: double underscore", name)
	}
	if nonBaseUnit.MatchString(name) {
		t.Errorf("%s: not in base units (seconds, bytes)", name)
	}
	isCounter := f.GetType() == dto.MetricType_COUNTER
	if isCounter != strings.HasSuffix(name, "_total") {
		t.Errorf("%s: type %s; counters and only counters end in _total", name, f.GetType())
	}
	if f.GetType() == dto.MetricType_HISTOGRAM &&
		!strings.HasSuffix(name, "_seconds") && !strings.HasSuffix(name, "_bytes") {
		t.Errorf("%s: a histogram should be in _seconds or _bytes", name)
	}
	if strings.HasSuffix(name, "_info") {
		for _, m := range f.GetMetric() {
			if m.GetGauge().GetValue() != 1 {
				t.Errorf("%s: an info metric must be 1", name)
			}
		}
	}
	for _, m := range f.GetMetric() {
		for _, l := range m.GetLabel() {
			if !labelNamePattern.MatchString(l.GetName()) || strings.HasPrefix(l.GetName(), "__") {
				t.Errorf("%s: bad label name %q", name, l.GetName())
			}
		}
	}
}
