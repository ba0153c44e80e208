package metrics

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// scrape serves m.Handler over HTTP, GETs /metrics as Prometheus does and
// parses the text exposition. It fails the test on any HTTP or parse error.
func scrape(t *testing.T, m *Metrics) map[string]*dto.MetricFamily {
	t.Helper()
	srv := httptest.NewServer(m.Handler())
	t.Cleanup(srv.Close)
	client := &http.Client{Timeout: 30 * time.Second}
	req, err := http.NewRequest(http.MethodGet, srv.URL+"/metrics", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "text/plain;version=0.0.4")
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read /metrics: %v", err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: status %d, body:\n%s", resp.StatusCode, body)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain; version=0.0.4") {
		t.Fatalf("GET /metrics: Content-Type %q, want the text format 0.0.4", ct)
	}
	parser := expfmt.NewTextParser(model.LegacyValidation)
	families, err := parser.TextToMetricFamilies(strings.NewReader(string(body)))
	if err != nil {
		t.Fatalf("parse /metrics: %v\n%s", err, body)
	}
	return families
}

// pgquorumFamilies keeps the families with our prefix.
func pgquorumFamilies(all map[string]*dto.MetricFamily) map[string]*dto.MetricFamily {
	out := map[string]*dto.MetricFamily{}
	for name, f := range all {
		if strings.HasPrefix(name, Namespace+"_") {
			out[name] = f
		}
	}
	return out
}

// sampleLines renders families as sorted lines `name{a="x",b="y"} value`,
// labels sorted by name. A histogram becomes its _count and _sum lines (its
// buckets are checked separately where they matter).
func sampleLines(families map[string]*dto.MetricFamily) []string {
	var lines []string
	for name, f := range families {
		for _, m := range f.GetMetric() {
			labels := labelString(m)
			switch f.GetType() {
			case dto.MetricType_COUNTER:
				lines = append(lines, name+labels+" "+formatValue(m.GetCounter().GetValue()))
			case dto.MetricType_GAUGE:
				lines = append(lines, name+labels+" "+formatValue(m.GetGauge().GetValue()))
			case dto.MetricType_HISTOGRAM:
				h := m.GetHistogram()
				lines = append(lines,
					name+"_count"+labels+" "+strconv.FormatUint(h.GetSampleCount(), 10),
					name+"_sum"+labels+" "+formatValue(h.GetSampleSum()))
			default:
				lines = append(lines, fmt.Sprintf("%s%s unexpected type %s", name, labels, f.GetType()))
			}
		}
	}
	sort.Strings(lines)
	return lines
}

func labelString(m *dto.Metric) string {
	pairs := m.GetLabel()
	if len(pairs) == 0 {
		return ""
	}
	parts := make([]string, 0, len(pairs))
	for _, p := range pairs {
		parts = append(parts, fmt.Sprintf("%s=%q", p.GetName(), p.GetValue()))
	}
	sort.Strings(parts)
	return "{" + strings.Join(parts, ",") + "}"
}

func formatValue(v float64) string { return strconv.FormatFloat(v, 'f', -1, 64) }

// parseLines turns a block of expected lines into a sorted slice, ignoring
// blank lines and # comments.
func parseLines(block string) []string {
	var out []string
	for _, l := range strings.Split(block, "\n") {
		l = strings.TrimSpace(l)
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		out = append(out, l)
	}
	sort.Strings(out)
	return out
}

// diffLines reports lines only in want and only in got.
func diffLines(want, got []string) (missing, extra []string) {
	inGot := map[string]bool{}
	for _, g := range got {
		inGot[g] = true
	}
	inWant := map[string]bool{}
	for _, w := range want {
		inWant[w] = true
		if !inGot[w] {
			missing = append(missing, w)
		}
	}
	for _, g := range got {
		if !inWant[g] {
			extra = append(extra, g)
		}
	}
	return missing, extra
}

// bucketCount returns the cumulative count of the bucket with upper bound le
// in the histogram series with the given label value, or -1.
func bucketCount(f *dto.MetricFamily, labelValue string, le float64) int64 {
	for _, m := range f.GetMetric() {
		if len(m.GetLabel()) != 1 || m.GetLabel()[0].GetValue() != labelValue {
			continue
		}
		for _, b := range m.GetHistogram().GetBucket() {
			if b.GetUpperBound() == le {
				return int64(b.GetCumulativeCount())
			}
		}
	}
	return -1
}
