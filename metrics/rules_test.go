package metrics

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/pgquorum/pgquorum/config"
)

// The example Prometheus configuration lives next to the other examples.
const prometheusDir = "../configs/prometheus"

// targetLabels are the labels Prometheus or configs/prometheus/prometheus.yml
// attach to every series of a target.
var targetLabels = []string{"job", "instance", "cluster", "namespace", "pod", "role"}

type ruleFile struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []struct {
			Alert       string            `yaml:"alert"`
			Expr        string            `yaml:"expr"`
			For         string            `yaml:"for"`
			Labels      map[string]string `yaml:"labels"`
			Annotations map[string]string `yaml:"annotations"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

var (
	identifier      = regexp.MustCompile(`[a-zA-Z_:][a-zA-Z0-9_:]*`)
	selector        = regexp.MustCompile(`(pgquorum_[a-zA-Z0-9_]+)\{([^}]*)\}`)
	matcher         = regexp.MustCompile(`^\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=|!=|=~|!~)\s*"([^"]*)"\s*$`)
	groupingClause  = regexp.MustCompile(`\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)`)
	templateLabel   = regexp.MustCompile(`\$labels\.([a-zA-Z_][a-zA-Z0-9_]*)`)
	alertNameFormat = regexp.MustCompile(`^Pgquorum[A-Z][A-Za-z0-9]+$`)
)

// definedFamilies scrapes a node with every source and event and returns each
// pgquorum family with the label names and values it exposes.
func definedFamilies(t *testing.T) map[string]map[string][]string {
	t.Helper()
	m := newTestMetrics(t)
	if err := m.AddSources(healthySources()); err != nil {
		t.Fatal(err)
	}
	// The SQLSTATEs of SPEC §5 that alerts may select on.
	for _, code := range []string{"57P03", "40001", "08007", "08006"} {
		m.ClientError(code)
	}
	out := map[string]map[string][]string{}
	for name, f := range pgquorumFamilies(scrape(t, m)) {
		labels := map[string][]string{}
		for _, s := range f.GetMetric() {
			for _, l := range s.GetLabel() {
				labels[l.GetName()] = append(labels[l.GetName()], l.GetValue())
			}
		}
		out[name] = labels
		if f.GetType().String() == "HISTOGRAM" {
			for _, suffix := range []string{"_bucket", "_sum", "_count"} {
				out[name+suffix] = labels
			}
			out[name+"_bucket"]["le"] = []string{"+Inf"}
		}
	}
	return out
}

// TestAlertRulesUseDefinedMetrics parses configs/prometheus/rules.yml and
// checks every alert: well-formed, and its expression and annotations name
// only metric families and labels that this package exposes.
func TestAlertRulesUseDefinedMetrics(t *testing.T) {
	families := definedFamilies(t)
	data, err := os.ReadFile(filepath.Join(prometheusDir, "rules.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var rules ruleFile
	dec := yaml.NewDecoder(strings.NewReader(string(data)))
	dec.KnownFields(true)
	if err := dec.Decode(&rules); err != nil {
		t.Fatalf("rules.yml: %v", err)
	}
	seen := map[string]bool{}
	count := 0
	for _, g := range rules.Groups {
		if g.Name == "" || len(g.Rules) == 0 {
			t.Errorf("group %q: needs a name and rules", g.Name)
		}
		for _, r := range g.Rules {
			count++
			name := r.Alert
			if !alertNameFormat.MatchString(name) || seen[name] {
				t.Errorf("alert %q: want a unique name like PgquorumSomething", name)
			}
			seen[name] = true
			if r.For != "" {
				if _, err := time.ParseDuration(r.For); err != nil {
					t.Errorf("%s: for %q: %v", name, r.For, err)
				}
			}
			if s := r.Labels["severity"]; s != "critical" && s != "warning" && s != "info" {
				t.Errorf("%s: severity %q, want critical, warning or info", name, s)
			}
			if r.Annotations["summary"] == "" || r.Annotations["description"] == "" {
				t.Errorf("%s: needs summary and description annotations", name)
			}
			checkExpr(t, name, r.Expr, r.Annotations, families)
		}
	}
	if count < 4 {
		t.Errorf("%d alerts; want at least the four of the brief", count)
	}
	for _, want := range []string{"PgquorumPrimaryMissing", "PgquorumFailoverBlocked", "PgquorumProxyNotRouting", "PgquorumStandbyLagHigh"} {
		if !seen[want] {
			t.Errorf("alert %s missing", want)
		}
	}
}

func checkExpr(t *testing.T, alert, expr string, annotations map[string]string, families map[string]map[string][]string) {
	t.Helper()
	if strings.TrimSpace(expr) == "" {
		t.Errorf("%s: empty expr", alert)
		return
	}
	if strings.Count(expr, "(") != strings.Count(expr, ")") || strings.Count(expr, "{") != strings.Count(expr, "}") {
		t.Errorf("%s: unbalanced brackets in %q", alert, expr)
	}
	// Metric names.
	allowed := map[string]bool{}
	for _, l := range targetLabels {
		allowed[l] = true
	}
	var used []string
	for _, word := range identifier.FindAllString(stripStrings(expr), -1) {
		if !strings.HasPrefix(word, Namespace+"_") {
			continue
		}
		labels, ok := families[word]
		if !ok {
			t.Errorf("%s: %s is not a metric family of package metrics", alert, word)
			continue
		}
		used = append(used, word)
		for l := range labels {
			allowed[l] = true
		}
	}
	if len(used) == 0 {
		t.Errorf("%s: uses no pgquorum metric", alert)
	}
	// Label matchers name labels the family has, with values it can take.
	for _, sel := range selector.FindAllStringSubmatch(expr, -1) {
		family, ok := families[sel[1]]
		if !ok {
			continue // reported above
		}
		for _, part := range strings.Split(sel[2], ",") {
			mm := matcher.FindStringSubmatch(part)
			if mm == nil {
				t.Errorf("%s: cannot read matcher %q", alert, part)
				continue
			}
			values, ok := family[mm[1]]
			if !ok {
				t.Errorf("%s: %s has no label %s", alert, sel[1], mm[1])
			} else if mm[2] == "=" && !slices.Contains(values, mm[3]) {
				t.Errorf("%s: %s{%s=%q} never occurs (values seen: %v)", alert, sel[1], mm[1], mm[3], values)
			}
		}
	}
	// Grouping and matching clauses, and annotation templates, name labels
	// that exist: the target labels or those of the families used.
	for _, clause := range groupingClause.FindAllStringSubmatch(expr, -1) {
		for _, l := range strings.Split(clause[2], ",") {
			if l = strings.TrimSpace(l); l != "" && !allowed[l] {
				t.Errorf("%s: %s (%s): no label %s", alert, clause[1], clause[2], l)
			}
		}
	}
	for _, text := range annotations {
		for _, m := range templateLabel.FindAllStringSubmatch(text, -1) {
			if !allowed[m[1]] {
				t.Errorf("%s: annotation uses $labels.%s, which no series of the expression has", alert, m[1])
			}
		}
	}
}

// stripStrings removes "quoted" strings so label values are not taken for
// metric names.
func stripStrings(expr string) string {
	return regexp.MustCompile(`"[^"]*"`).ReplaceAllString(expr, `""`)
}

// TestScrapeConfig parses configs/prometheus/prometheus.yml: its rule files
// exist, and the loopback job scrapes exactly the admin addresses of
// configs/loopback.
func TestScrapeConfig(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(prometheusDir, "prometheus.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		RuleFiles     []string `yaml:"rule_files"`
		ScrapeConfigs []struct {
			JobName       string `yaml:"job_name"`
			MetricsPath   string `yaml:"metrics_path"`
			StaticConfigs []struct {
				Targets []string          `yaml:"targets"`
				Labels  map[string]string `yaml:"labels"`
			} `yaml:"static_configs"`
			KubernetesSD   []map[string]any `yaml:"kubernetes_sd_configs"`
			RelabelConfigs []struct {
				SourceLabels []string `yaml:"source_labels"`
				Regex        string   `yaml:"regex"`
				Action       string   `yaml:"action"`
				Replacement  string   `yaml:"replacement"`
				TargetLabel  string   `yaml:"target_label"`
			} `yaml:"relabel_configs"`
		} `yaml:"scrape_configs"`
	}
	if err := yaml.Unmarshal(data, &cfg); err != nil {
		t.Fatalf("prometheus.yml: %v", err)
	}
	for _, f := range cfg.RuleFiles {
		if _, err := os.Stat(filepath.Join(prometheusDir, f)); err != nil {
			t.Errorf("rule file %s: %v", f, err)
		}
	}
	loopback, err := filepath.Glob("../configs/loopback/proxy-*.yaml")
	if err != nil || len(loopback) == 0 {
		t.Fatalf("no loopback configs: %v", err)
	}
	var wantTargets []string
	var clusterName string
	for _, file := range loopback {
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		c, err := config.Parse(data)
		if err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		wantTargets = append(wantTargets, c.Listen.Admin)
		clusterName = c.ClusterName
	}
	slices.Sort(wantTargets)

	jobs := map[string]bool{}
	for _, sc := range cfg.ScrapeConfigs {
		jobs[sc.JobName] = true
		if len(sc.StaticConfigs) == 0 && len(sc.KubernetesSD) == 0 {
			t.Errorf("job %s: no targets", sc.JobName)
		}
		for _, rc := range sc.RelabelConfigs {
			if rc.Regex != "" {
				if _, err := regexp.Compile("^(?:" + rc.Regex + ")$"); err != nil {
					t.Errorf("job %s: relabel regex %q: %v", sc.JobName, rc.Regex, err)
				}
			}
		}
		if sc.JobName != "pgquorum-loopback" {
			continue
		}
		if sc.MetricsPath != "/metrics" {
			t.Errorf("loopback job: metrics_path %q", sc.MetricsPath)
		}
		var got []string
		for _, s := range sc.StaticConfigs {
			got = append(got, s.Targets...)
			if s.Labels["cluster"] != clusterName {
				t.Errorf("loopback job: cluster label %q, want %q", s.Labels["cluster"], clusterName)
			}
		}
		slices.Sort(got)
		if !slices.Equal(got, wantTargets) {
			t.Errorf("loopback job targets %v, want the loopback admin addresses %v", got, wantTargets)
		}
	}
	if !jobs["pgquorum-loopback"] || !jobs["pgquorum"] {
		t.Errorf("jobs %v: want pgquorum-loopback and pgquorum", jobs)
	}
}

// TestREADMEListsEveryFamily: configs/prometheus/README.md documents exactly
// the families this package exposes, each with its type.
func TestREADMEListsEveryFamily(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(prometheusDir, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	row := regexp.MustCompile("^\\| `(pgquorum_[a-z0-9_]+)` \\| (counter|gauge|histogram) \\|")
	documented := map[string]string{}
	for _, line := range strings.Split(string(data), "\n") {
		if m := row.FindStringSubmatch(line); m != nil {
			documented[m[1]] = m[2]
		}
	}
	for name, typ := range wantTypes {
		want := strings.ToLower(typ.String())
		if got, ok := documented[name]; !ok {
			t.Errorf("README.md does not list %s", name)
		} else if got != want {
			t.Errorf("README.md lists %s as a %s, it is a %s", name, got, want)
		}
	}
	for name := range documented {
		if _, ok := wantTypes[name]; !ok {
			t.Errorf("README.md lists %s, which package metrics does not expose", name)
		}
	}
}
