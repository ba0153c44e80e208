package config

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pgquorum/pgquorum/pki"
)

const validYAML = `
cluster_name: demo
node:
  id: 1
  data_dir: ./data/proxy-1
listen:
  postgres: 127.0.0.1:6432
  admin: 127.0.0.1:8008
  raft: 127.0.0.1:7001
peers:
  - {id: 1, raft: 127.0.0.1:7001}
  - {id: 2, raft: 127.0.0.1:7002}
  - {id: 3, raft: 127.0.0.1:7003}
backends:
  - {name: pg1, address: 127.0.0.1:5432}
  - {name: pg2, address: 127.0.0.1:5433}
  - {name: pg3, address: 127.0.0.1:5434}
auth:
  method: scram-sha-256
  query_user: pgquorum
hold:
  timeout: 20s
health:
  interval: 250ms
peer_tls: {ca: certs/ca.pem, cert: certs/node-1.pem, key: certs/node-1-key.pem}
admin: {token_file: admin-token}
`

func TestParseValidConfigFillsDefaults(t *testing.T) {
	cfg, err := Parse([]byte(validYAML))
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	if cfg.Hold.Timeout.Duration != 20*time.Second || cfg.Health.Interval.Duration != 250*time.Millisecond {
		t.Errorf("durations not parsed: %+v %+v", cfg.Hold, cfg.Health)
	}
	if cfg.Health.Timeout.Duration != DefaultHealthTimeout || cfg.Failover.MinInterval.Duration != DefaultMinFailover {
		t.Errorf("defaults not applied: %+v %+v", cfg.Health, cfg.Failover)
	}
	if !cfg.Node.IsVoter() || cfg.Auth.QueryDatabase != "postgres" || cfg.Log.Format != "text" {
		t.Errorf("defaults not applied: %+v", cfg)
	}
}

// TestConfigErrorsNameTheKey proves that every kind of bad configuration fails
// with a message naming the offending key.
func TestConfigErrorsNameTheKey(t *testing.T) {
	tests := []struct {
		name    string
		replace [2]string // in validYAML: old -> new
		wantErr string
	}{
		{"unknown top-level key", [2]string{"cluster_name: demo", "cluster_name: demo\nclustr: x"}, "clustr: unknown key (line 3)"},
		{"unknown nested key", [2]string{"  id: 1\n", "  id: 1\n  voterr: true\n"}, "node.voterr: unknown key (line 5); known keys here: id, data_dir, voter"},
		{"unknown key in list item", [2]string{"{name: pg1, address: 127.0.0.1:5432}", "{name: pg1, adress: 127.0.0.1:5432}"}, "backends[0].adress: unknown key"},
		{"missing cluster name", [2]string{"cluster_name: demo", ""}, "cluster_name: required"},
		{"bad cluster name", [2]string{"cluster_name: demo", "cluster_name: 'a b'"}, "cluster_name:"},
		{"zero node id", [2]string{"  id: 1\n", "  id: 0\n"}, "node.id: required"},
		{"node id not a number", [2]string{"  id: 1\n", "  id: one\n"}, `node.id: "one" is not a whole number, 0 or more (line 4)`},
		{"a list for a mapping", [2]string{"hold:\n", "backend: [disable]\nhold:\n"}, "backend: want a mapping of keys (sslmode, ca, cert, key, standby_ca), got a list"},
		{"a mapping for a list", [2]string{"peers:\n", "peers: {id: 1}\nx:\n"}, "peers: want a list, got a mapping"},
		{"a mapping for a string", [2]string{"cluster_name: demo", "cluster_name: {a: b}"}, "cluster_name: want a string, got a mapping (line 2)"},
		{"not a bool", [2]string{"  id: 1\n", "  id: 1\n  voter: maybe\n"}, `node.voter: "maybe" is not true or false`},
		{"listen.raft not the peers entry", [2]string{"raft: 127.0.0.1:7001\n", "raft: 127.0.0.1:7011\n"}, `listen.raft: "127.0.0.1:7011" is not this node's entry in peers (peers[0].raft: "127.0.0.1:7001")`},
		{"missing data dir", [2]string{"  data_dir: ./data/proxy-1", ""}, "node.data_dir: required"},
		{"bad listen address", [2]string{"postgres: 127.0.0.1:6432", "postgres: 127.0.0.1"}, "listen.postgres"},
		{"bad port", [2]string{"admin: 127.0.0.1:8008", "admin: 127.0.0.1:99999"}, "listen.admin"},
		{"duplicate peer", [2]string{"{id: 2, raft: 127.0.0.1:7002}", "{id: 1, raft: 127.0.0.1:7002}"}, "peers[1].id: 1 appears twice"},
		{"voter not in peers", [2]string{"  id: 1\n", "  id: 9\n"}, "node.id 9 is a voter but is not listed in peers"},
		{"learner listed in peers", [2]string{"  id: 1\n", "  id: 1\n  voter: false\n"}, "node.voter"},
		{"duplicate backend name", [2]string{"{name: pg2,", "{name: pg1,"}, `backends[1].name: "pg1" appears twice`},
		{"bad backend name", [2]string{"{name: pg2,", "{name: 'PG 2',"}, "backends[1].name"},
		{"duplicate backend address", [2]string{"127.0.0.1:5433", "127.0.0.1:5432"}, "backends[1].address"},
		{"bad auth method", [2]string{"method: scram-sha-256", "method: password"}, `auth.method: "password"`},
		{"missing query user", [2]string{"query_user: pgquorum", ""}, "auth.query_user: required"},
		{"bad duration", [2]string{"timeout: 20s", "timeout: soon"}, `"soon" is not a duration`},
		{"negative duration", [2]string{"timeout: 20s", "timeout: -1s"}, "negative"},
		{"too short interval", [2]string{"interval: 250ms", "interval: 1ms"}, "health.interval"},
		{"tls without key", [2]string{"hold:", "tls: {cert: a.pem}\nhold:"}, "tls: both cert and key"},
		{"bad log format", [2]string{"hold:", "log: {format: xml}\nhold:"}, "log.format"},
		{"not yaml", [2]string{"cluster_name: demo", "cluster_name: [demo"}, "not valid YAML"},
		{"unknown sslmode", [2]string{"hold:", "backend: {sslmode: prefer}\nhold:"}, `backend.sslmode: "prefer" is not one of`},
		{"verify-full without a CA", [2]string{"hold:", "backend: {sslmode: verify-full}\nhold:"}, "backend.ca: required with backend.sslmode: verify-full"},
		{"backend CA without TLS", [2]string{"hold:", "backend: {ca: ca.pem}\nhold:"}, "backend.ca: set but backend.sslmode is disable"},
		{"client certificate without key", [2]string{"hold:", "backend: {sslmode: require, cert: c.pem}\nhold:"}, "backend.cert: backend.cert and backend.key go together"},
		{"relative standby CA", [2]string{"hold:", "backend: {sslmode: require, standby_ca: ca.pem}\nhold:"}, "backend.standby_ca: \"ca.pem\" must be an absolute path"},
		{"unknown tls mode", [2]string{"hold:", "tls: {cert: a.pem, key: b.pem, mode: always}\nhold:"}, `tls.mode: "always"`},
		{"voters lookup on a voter", [2]string{"query_user: pgquorum", "query_user: pgquorum\n  lookup: voters"}, "auth.lookup: voters is for learners"},
		{"unknown lookup", [2]string{"query_user: pgquorum", "query_user: pgquorum\n  lookup: ldap"}, `auth.lookup: "ldap"`},
		{"unqualified lookup function", [2]string{"query_user: pgquorum", "query_user: pgquorum\n  lookup_function: get_auth"}, "auth.lookup_function: \"get_auth\" must be a schema-qualified"},
		{"quoted lookup function", [2]string{"query_user: pgquorum", "query_user: pgquorum\n  lookup_function: 'x.\"f\"; drop'"}, "auth.lookup_function"},
		{"negative client limit", [2]string{"hold:", "limits: {max_client_connections: -1}\nhold:"}, "limits.max_client_connections: -1 must not be negative"},
		{"startup limit above client limit", [2]string{"hold:", "limits: {max_client_connections: 10, max_startup_connections: 20}\nhold:"}, "limits.max_startup_connections: 20 is more than"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if !strings.Contains(validYAML, tt.replace[0]) {
				t.Fatalf("test bug: %q not in the base config", tt.replace[0])
			}
			doc := strings.Replace(validYAML, tt.replace[0], tt.replace[1], 1)
			cfg, err := Parse([]byte(doc))
			if err == nil {
				err = cfg.Validate()
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("got error %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestLearnerReadingVerifiersThroughTheVotersNeedsNoQueryUser(t *testing.T) {
	learner := strings.Replace(validYAML, "  id: 1\n", "  id: 9\n  voter: false\n", 1)
	learner = strings.Replace(learner, "query_user: pgquorum", "lookup: voters", 1)
	cfg, err := Parse([]byte(learner))
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("a sidecar without database credentials: %v", err)
	}
	withoutPeerTLS := learner[:strings.Index(learner, "peer_tls:")] + "security: {insecure: true}\n"
	if cfg, err = Parse([]byte(withoutPeerTLS)); err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "auth.lookup: voters needs peer_tls") {
		t.Fatalf("lookup through the voters over plaintext peers: %v", err)
	}
}

func TestMockSecretIsTheSameOnEveryProxyOfTheCluster(t *testing.T) {
	dir := t.TempDir()
	ca, err := pki.NewCA("demo", 1)
	if err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(caFile, ca.CertPEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	secret := func(cluster, file, configured string) []byte {
		c := &Config{ClusterName: cluster, PeerTLS: &PeerTLS{CA: file}, Auth: Auth{MockSecret: configured}}
		s, err := c.MockSecret()
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	a, b := secret("demo", caFile, ""), secret("demo", caFile, "")
	if len(a) == 0 || string(a) != string(b) {
		t.Fatal("two proxies of one cluster derive different mock secrets from the same CA")
	}
	if string(secret("other", caFile, "")) == string(a) {
		t.Error("the derived secret does not depend on the cluster name")
	}
	if got := secret("demo", caFile, "a configured secret!"); string(got) != "a configured secret!" {
		t.Errorf("auth.mock_secret_file is not used: %q", got)
	}
	if s, err := (&Config{}).MockSecret(); s != nil || err != nil {
		t.Errorf("without peer_tls: %q, %v; want a per-process secret (nil)", s, err)
	}
}

func TestSinglePeerIsValid(t *testing.T) {
	doc := strings.Replace(validYAML, "  - {id: 2, raft: 127.0.0.1:7002}\n  - {id: 3, raft: 127.0.0.1:7003}\n", "", 1)
	cfg, err := Parse([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("a one-proxy cluster must be valid: %v", err)
	}
}

func TestLoadReadsSecretsAndEnv(t *testing.T) {
	dir := t.TempDir()
	writeSecurityFiles(t, dir, pki.RoleVoter, 1)
	if err := os.WriteFile(filepath.Join(dir, "pw"), []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	doc := strings.Replace(validYAML, "query_user: pgquorum", "query_user: pgquorum\n  query_password_file: pw", 1)
	path := filepath.Join(dir, "pgquorum.yaml")
	if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PGQUORUM_LISTEN_POSTGRES", "127.0.0.1:7432")
	cfg, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Auth.QueryPassword != "s3cret" {
		t.Errorf("password file not read relative to the config file")
	}
	if cfg.Listen.Postgres != "127.0.0.1:7432" {
		t.Errorf("env override not applied: %s", cfg.Listen.Postgres)
	}
	if cfg.Node.DataDir != filepath.Join(dir, "data/proxy-1") {
		t.Errorf("data_dir not resolved relative to the config file: %s", cfg.Node.DataDir)
	}

	t.Setenv("PGQUORUM_NODE_ID", "x")
	if _, err := Load(path); err == nil || !strings.Contains(err.Error(), "node.id (from PGQUORUM_NODE_ID)") {
		t.Fatalf("bad env value: got %v", err)
	}
}

func TestLoadMissingSecretFile(t *testing.T) {
	dir := t.TempDir()
	writeSecurityFiles(t, dir, pki.RoleVoter, 1)
	doc := strings.Replace(validYAML, "query_user: pgquorum", "query_user: pgquorum\n  query_password_file: nope", 1)
	path := filepath.Join(dir, "c.yaml")
	if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(path); err == nil || !strings.Contains(err.Error(), "auth.query_password_file") {
		t.Fatalf("got %v", err)
	}
}

// TestExampleConfigsLoad keeps the documented examples in configs/ valid: it
// copies them, makes the certificates and the admin token as
// configs/README.md says, and loads each one.
func TestExampleConfigsLoad(t *testing.T) {
	files, err := filepath.Glob("../configs/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	more, _ := filepath.Glob("../configs/loopback/*")
	files = append(files, more...)
	if len(files) < 5 {
		t.Fatalf("expected the example configs, found %v", files)
	}
	root := t.TempDir()
	for _, f := range files {
		rel, _ := filepath.Rel("../configs", f)
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Join(root, filepath.Dir(rel)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, rel), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	loopback := filepath.Join(root, "loopback")
	ca := writeSecurityFiles(t, loopback, pki.RoleVoter, 1, 2, 3)
	writeNodeCert(t, ca, filepath.Join(loopback, "certs"), pki.RoleLearner, 101)
	for _, f := range files {
		rel, _ := filepath.Rel("../configs", f)
		if !strings.HasSuffix(f, ".yaml") {
			continue
		}
		if _, err := Load(filepath.Join(root, rel)); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
}

// writeSecurityFiles makes dir/certs (a CA for cluster "demo" and node
// certificates for ids) and dir/admin-token, as configs/README.md says.
func writeSecurityFiles(t *testing.T, dir string, role pki.Role, ids ...uint64) *pki.CA {
	t.Helper()
	ca, err := pki.NewCA("demo", 1)
	if err != nil {
		t.Fatal(err)
	}
	certs := filepath.Join(dir, "certs")
	if _, _, err := pki.WriteCA(certs, ca, false); err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		writeNodeCert(t, ca, certs, role, id)
	}
	if err := os.WriteFile(filepath.Join(dir, "admin-token"), []byte("0123456789abcdef0123456789abcdef\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return ca
}

func writeNodeCert(t *testing.T, ca *pki.CA, dir string, role pki.Role, id uint64) {
	t.Helper()
	kp, err := ca.IssueNode(id, id, role, []string{"127.0.0.1"}, 1)
	if err != nil {
		t.Fatal(err)
	}
	cert, key := pki.NodeFiles(dir, pki.NodeIdentity("demo", id, role))
	if err := pki.WriteKeyPair(cert, key, kp.CertPEM, kp.KeyPEM, true); err != nil {
		t.Fatal(err)
	}
}

// TestEveryKeyIsDocumented checks that configs/README.md names every key.
func TestEveryKeyIsDocumented(t *testing.T) {
	doc, err := os.ReadFile("../configs/README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range allKeys(typeOfConfig, "") {
		if !strings.Contains(string(doc), "`"+key+"`") && !strings.Contains(string(doc), key+"`") {
			t.Errorf("configs/README.md does not document %s", key)
		}
	}
}

// TestLoadReportsEveryProblemAtOnce: one run of `pgquorum check` names every
// problem with its key and line, in words, never in Go types (issue 13: no
// "!!seq into config.BackendTLS").
func TestLoadReportsEveryProblemAtOnce(t *testing.T) {
	dir := t.TempDir()
	doc := `cluster_name: demo
node: {id: 1, data_dir: data, voterr: true}
listen: {postgres: "127.0.0.1:6432", admin: "127.0.0.1:8008", raft: "127.0.0.1:7011"}
peers: [{id: 1, raft: "127.0.0.1:7001"}, {id: 2, raft: "127.0.0.1:7002"}]
backends: [{name: pg1, address: "127.0.0.1:5432", priority: high}]
backend: [disable]
auth: {method: password, query_user: pgquorum}
hold: {timeout: soon, max_held: -1}
health: {interval: [1s]}
security: {insecure: true}
log: {level: loud}
`
	path := filepath.Join(dir, "broken.yaml")
	if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Load(path)
	var p *Problems
	if !errors.As(err, &p) {
		t.Fatalf("Load: %v, want *Problems", err)
	}
	for _, want := range []string{
		"node.voterr: unknown key (line 2)",
		`backends[0].priority: "high" is not a whole number (line 5)`,
		"backend: want a mapping of keys (sslmode, ca, cert, key, standby_ca), got a list (line 6)",
		`auth.method: "password" is not one of`,
		`hold.timeout: "soon" is not a duration`,
		"hold.max_held: -1 must be at least 1",
		"health.interval: want a duration such as 500ms or 30s, got a list (line 9)",
		`listen.raft: "127.0.0.1:7011" is not this node's entry in peers`,
		`log.level: "loud"`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Load's problems lack %q:\n%v", want, err)
		}
	}
	if len(p.List) != 9 {
		t.Errorf("%d problems, want 9 (one per bad key, none repeated as missing):\n%v", len(p.List), err)
	}
	for _, goism := range []string{"!!", "config.", "unmarshal", "uint64", "time.Duration"} {
		if strings.Contains(err.Error(), goism) {
			t.Errorf("the problems speak Go (%q):\n%v", goism, err)
		}
	}
}

func TestRaftAddrMismatch(t *testing.T) {
	tests := []struct {
		listen, advertised string
		mismatch           bool
	}{
		{"127.0.0.1:7001", "127.0.0.1:7001", false},
		{"0.0.0.0:7001", "10.0.0.1:7001", false},
		{":7001", "pgquorum-1.pgquorum-peers.pgquorum.svc:7001", false},
		{"10.0.0.1:7001", "pgquorum-1.example:7001", false}, // names are not resolved
		{"localhost:7001", "127.0.0.1:7001", false},
		{"127.0.0.1:7011", "127.0.0.1:7001", true},
		{"10.0.0.1:7001", "10.0.0.2:7001", true},
		{"127.0.0.1:7001", "10.0.0.1:7001", true},
		{"localhost:7001", "10.0.0.1:7001", true},
		{"10.0.0.1:7001", "localhost:7001", true},
		{"[::]:7001", "[2001:db8::1]:7001", false},
	}
	for _, tt := range tests {
		if got := raftAddrMismatch(tt.listen, tt.advertised); (got != "") != tt.mismatch {
			t.Errorf("raftAddrMismatch(%q, %q) = %q, want mismatch %v", tt.listen, tt.advertised, got, tt.mismatch)
		}
	}
}

// TestExampleRuntimeDataStaysOutOfGit: what trying the examples in configs/
// writes (Raft logs in node.data_dir, the certificates and token the README
// makes) is ignored by git, so it never lands in the source tree.
func TestExampleRuntimeDataStaysOutOfGit(t *testing.T) {
	git, err := exec.LookPath("git")
	if err != nil {
		t.Fatalf("git is needed to check .gitignore: %v", err)
	}
	files, _ := filepath.Glob("../configs/*.yaml")
	more, _ := filepath.Glob("../configs/loopback/*.yaml")
	var paths []string
	for _, f := range append(files, more...) {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		cfg, err := Parse(data)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		cfg.resolvePaths(filepath.Dir(f))
		paths = append(paths, filepath.Join(cfg.Node.DataDir, "raft.db"), cfg.Admin.TokenFile)
		if cfg.PeerTLS != nil {
			paths = append(paths, cfg.PeerTLS.CA, cfg.PeerTLS.Cert, cfg.PeerTLS.Key)
		}
	}
	for _, p := range paths {
		if p == "" {
			continue
		}
		out, err := exec.Command(git, "check-ignore", "--no-index", "-q", p).CombinedOutput()
		if err != nil {
			t.Errorf("%s is not ignored by .gitignore (git check-ignore: %v %s)", p, err, out)
		}
	}
}
