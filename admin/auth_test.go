package admin

import (
	"context"
	"crypto/tls"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/pgquorum/pgquorum/consensus/clusterstate"
	"github.com/pgquorum/pgquorum/pki"
	"github.com/pgquorum/pgquorum/routing"
)

// mutatingCalls are every call that changes the cluster, with a valid body.
var mutatingCalls = []struct{ method, path, body string }{
	{"POST", "/switchover", `{"to":"pg3"}`},
	{"POST", "/failover", `{}`},
	{"POST", "/pause", ``},
	{"POST", "/resume", ``},
	{"POST", "/members", `{"id":4,"addr":"127.0.0.1:7004","learner":true}`},
	{"DELETE", "/members/1", ``},
	{"POST", "/rejoin/pg1", ``},
}

func TestMutatingCallsTakeJSONOnly(t *testing.T) {
	ts, _, op := newTestServer(t, "s3cret", true)
	for _, ct := range []string{"text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", ""} {
		code, body := callAs(t, http.DefaultClient, "POST", ts.URL+"/pause", "s3cret", ct, `{}`)
		if code != http.StatusUnsupportedMediaType || !strings.Contains(body, "application/json") {
			t.Errorf("Content-Type %q: %d %s, want 415", ct, code, body)
		}
	}
	if op.paused != nil {
		t.Fatal("a call that was not JSON reached the coordinator")
	}
	if code, body := callAs(t, http.DefaultClient, "POST", ts.URL+"/pause", "s3cret", "application/json; charset=utf-8", ``); code != http.StatusOK {
		t.Fatalf("JSON with a charset: %d %s", code, body)
	}
}

func TestNodeWithoutTokenRefusesMutatingCalls(t *testing.T) {
	var refused []string
	var mu sync.Mutex
	s := &Server{ClusterName: "test", Raft: &fakeRaft{}, State: fakeState{}, Routing: fakeRouting{}, Operator: &fakeOperator{},
		Refused: func(reason string) { mu.Lock(); refused = append(refused, reason); mu.Unlock() }}
	ts := httptest.NewServer(s.Handler())
	defer ts.Close()
	for _, c := range mutatingCalls {
		for _, token := range []string{"", "anything"} {
			if code, body := call(t, c.method, ts.URL+c.path, token, c.body); code != http.StatusUnauthorized {
				t.Errorf("%s %s (token %q) on a node without a token: %d %s, want 401", c.method, c.path, token, code, body)
			}
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(refused) != 2*len(mutatingCalls) || refused[0] != RefusedUnauthorized {
		t.Fatalf("refusals reported: %v", refused)
	}
}

func TestLearnerRefusesMutatingCalls(t *testing.T) {
	ts, raft, op := newTestServer(t, "s3cret", true)
	raft.mu.Lock()
	raft.learner = true
	raft.mu.Unlock()
	for _, c := range mutatingCalls {
		if code, body := call(t, c.method, ts.URL+c.path, "s3cret", c.body); code != http.StatusForbidden || !strings.Contains(body, "learner") {
			t.Errorf("%s %s on a learner: %d %s, want 403", c.method, c.path, code, body)
		}
	}
	if op.paused != nil || op.switchoverTo != "" {
		t.Fatal("a learner passed an operator call on")
	}
}

func TestTokenMatchesInConstantTime(t *testing.T) {
	if !tokenMatches("Bearer abc", "Bearer abc") || tokenMatches("Bearer ab", "Bearer abc") || tokenMatches("", "Bearer abc") {
		t.Fatal("tokenMatches is wrong")
	}
}

// TestOperatorCertificatesOverHTTPS: with admin.tls, an operator's client
// certificate authorizes mutating calls without the token; a node or foreign
// certificate does not.
func TestOperatorCertificatesOverHTTPS(t *testing.T) {
	ca, err := pki.NewCA("test", 1)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	caFile, _, err := pki.WriteCA(dir, ca, false)
	if err != nil {
		t.Fatal(err)
	}
	write := func(kp *pki.KeyPair, name string) (cert, key string) {
		cert, key = filepath.Join(dir, name+".pem"), filepath.Join(dir, name+"-key.pem")
		if err := pki.WriteKeyPair(cert, key, kp.CertPEM, kp.KeyPEM, false); err != nil {
			t.Fatal(err)
		}
		return cert, key
	}
	nodeKP, err := ca.IssueNode(1, 1, pki.RoleVoter, []string{"127.0.0.1"}, 1)
	if err != nil {
		t.Fatal(err)
	}
	nodeCert, nodeKey := write(nodeKP, "node-1")
	aliceKP, err := ca.IssueClient("alice", 1)
	if err != nil {
		t.Fatal(err)
	}
	aliceCert, aliceKey := write(aliceKP, "alice")
	otherCA, err := pki.NewCA("other", 1)
	if err != nil {
		t.Fatal(err)
	}
	otherKP, err := otherCA.IssueClient("mallory", 1)
	if err != nil {
		t.Fatal(err)
	}
	otherCert, otherKey := write(otherKP, "mallory")

	creds, err := pki.LoadCredentials(pki.Files{CA: caFile, Cert: nodeCert, Key: nodeKey}, nil)
	if err != nil {
		t.Fatal(err)
	}
	op := &fakeOperator{}
	s := &Server{ClusterName: "test", NodeID: 1, Raft: &fakeRaft{}, State: fakeState{st: clusterstate.State{}},
		Routing: fakeRouting{v: routing.View{}}, Operator: op, Operators: creds, TLS: creds.HTTPSServerConfig()}
	if err := s.Listen("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	served := make(chan error, 1)
	go func() { served <- s.Serve(ctx) }()
	defer func() {
		cancel()
		if err := <-served; err != nil {
			t.Errorf("serve: %v", err)
		}
	}()
	ts := struct{ URL string }{s.URL()}

	clientFor := func(cert, key string) *http.Client {
		o, err := ClientCredentials{CAFile: caFile, CertFile: cert, KeyFile: key}.Options()
		if err != nil {
			t.Fatal(err)
		}
		return NewClientWithOptions(ts.URL, o).HTTP
	}
	pause := func(c *http.Client) (int, string) {
		return callAs(t, c, "POST", ts.URL+"/pause", "", "application/json", "")
	}
	if code, body := pause(clientFor(aliceCert, aliceKey)); code != http.StatusOK || op.paused == nil {
		t.Fatalf("operator certificate: %d %s", code, body)
	}
	if code, body := pause(clientFor("", "")); code != http.StatusUnauthorized {
		t.Errorf("no certificate, no token: %d %s", code, body)
	}
	if code, body := pause(clientFor(nodeCert, nodeKey)); code != http.StatusUnauthorized || !strings.Contains(body, "not an operator") {
		t.Errorf("a node's certificate: %d %s", code, body)
	}
	req, _ := http.NewRequest("POST", ts.URL+"/pause", nil)
	req.Header.Set("Content-Type", "application/json")
	if resp, err := clientFor(otherCert, otherKey).Do(req); err == nil {
		resp.Body.Close()
		t.Errorf("a certificate of another CA: %d, want a refused TLS handshake", resp.StatusCode)
	}
	// Reads need no certificate; the client verifies the server against --ca.
	c := NewClientWithOptions(strings.TrimPrefix(ts.URL, "https://"), ClientOptions{TLS: mustTLS(t, caFile)})
	if _, err := c.Cluster(t.Context()); err != nil {
		t.Fatalf("GET /cluster over HTTPS with --ca: %v", err)
	}
	if _, err := NewClient(ts.URL, "").Cluster(t.Context()); err == nil {
		t.Fatal("a client without the CA trusted the API's certificate")
	}
}

func mustTLS(t *testing.T, caFile string) *tls.Config {
	t.Helper()
	cfg, err := pki.HTTPSClientConfig(caFile, "", "")
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func TestClientCredentialsReadTheTokenFile(t *testing.T) {
	file := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(file, []byte("from-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	o, err := ClientCredentials{Token: "flag", TokenFile: file}.Options()
	if err != nil || o.Token != "from-file" || o.TLS != nil {
		t.Fatalf("options %+v, %v", o, err)
	}
	if _, err := (ClientCredentials{CertFile: "x.pem"}).Options(); err == nil {
		t.Fatal("a client certificate without its key was accepted")
	}
}

var _ CertificateVerifier = (*pki.Credentials)(nil)
