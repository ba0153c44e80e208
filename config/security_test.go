package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pgquorum/pgquorum/pki"
)

// withoutSecurity is validYAML without peer_tls and admin.
func withoutSecurity(t *testing.T) string {
	t.Helper()
	i := strings.Index(validYAML, "peer_tls:")
	if i < 0 {
		t.Fatal("test bug: validYAML has no peer_tls")
	}
	return validYAML[:i]
}

func validateDoc(t *testing.T, doc string) error {
	t.Helper()
	cfg, err := Parse([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	return cfg.Validate()
}

func TestSecureByDefaultSaysWhatToAdd(t *testing.T) {
	err := validateDoc(t, withoutSecurity(t))
	var p *Problems
	if !errors.As(err, &p) || len(p.List) != 2 {
		t.Fatalf("got %v, want two problems", err)
	}
	for _, want := range []string{
		"peer_tls: required",
		"peer_tls: {ca: certs/ca.pem, cert: certs/node-1.pem, key: certs/node-1-key.pem}",
		"pgquorum cert ca --dir certs --cluster demo",
		"pgquorum cert node --dir certs --id 1`",
		"admin.token_file: required",
		"admin: {token_file: admin-token}",
		"security.insecure: true",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("the error does not say %q:\n%v", want, err)
		}
	}
	// A learner is told to make a learner certificate, and needs no token.
	learner := strings.Replace(withoutSecurity(t), "  id: 1\n", "  id: 9\n  voter: false\n", 1)
	err = validateDoc(t, learner)
	if err == nil || !strings.Contains(err.Error(), "--id 9 --learner") || strings.Contains(err.Error(), "admin.token_file") {
		t.Errorf("learner: %v", err)
	}
	// Operators' client certificates instead of a token are enough.
	withCerts := withoutSecurity(t) + "peer_tls: {ca: c, cert: c, key: k}\nadmin: {tls: {cert: a, key: b}}\n"
	if err := validateDoc(t, withCerts); err != nil {
		t.Errorf("admin.tls without a token: %v", err)
	}
}

func TestInsecureIsOnlyAcceptedOnLoopback(t *testing.T) {
	insecure := withoutSecurity(t) + "security: {insecure: true}\n"
	if err := validateDoc(t, insecure); err != nil {
		t.Fatalf("insecure on loopback: %v", err)
	}
	for _, tc := range []struct{ from, to, key string }{
		{"raft: 127.0.0.1:7001", "raft: 0.0.0.0:7001", "listen.raft"},
		{"admin: 127.0.0.1:8008", "admin: ':8008'", "listen.admin"},
		{"postgres: 127.0.0.1:6432", "postgres: 10.1.2.3:6432", "listen.postgres"},
		{"{id: 3, raft: 127.0.0.1:7003}", "{id: 3, raft: db3.example.com:7003}", "peers[2].raft"},
	} {
		err := validateDoc(t, strings.Replace(insecure, tc.from, tc.to, 1))
		if err == nil || !strings.Contains(err.Error(), "security.insecure: only allowed when every address is on loopback, and "+tc.key) {
			t.Errorf("%s: %v", tc.to, err)
		}
	}
	for _, loop := range []string{"localhost:6432", "'[::1]:6432'", "127.0.0.2:6432"} {
		if err := validateDoc(t, strings.Replace(insecure, "127.0.0.1:6432", loop, 1)); err != nil {
			t.Errorf("%s is loopback: %v", loop, err)
		}
	}
	cfg, _ := Parse([]byte(insecure))
	if parts := cfg.InsecureParts(); len(parts) != 2 {
		t.Errorf("InsecureParts = %v", parts)
	}
}

func TestValidateReportsEveryProblemAtOnce(t *testing.T) {
	doc := strings.NewReplacer("id: 1\n", "id: 0\n", "admin: 127.0.0.1:8008", "admin: nowhere", "method: scram-sha-256", "method: magic").Replace(validYAML)
	err := validateDoc(t, doc)
	for _, want := range []string{"node.id: required", "listen.admin:", `auth.method: "magic"`, "3 problems"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%v\ndoes not contain %q", err, want)
		}
	}
}

func TestLoadChecksTheCertificateIsThisNodes(t *testing.T) {
	dir := t.TempDir()
	ca := writeSecurityFiles(t, dir, pki.RoleVoter, 1)
	path := filepath.Join(dir, "c.yaml")
	write := func(doc string) {
		if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(validYAML)
	if _, err := Load(path); err != nil {
		t.Fatalf("valid: %v", err)
	}
	certs := filepath.Join(dir, "certs")
	writeNodeCert(t, ca, certs, pki.RoleVoter, 2)
	write(strings.ReplaceAll(validYAML, "node-1", "node-2"))
	if _, err := Load(path); err == nil || !strings.Contains(err.Error(), "not node 1's") {
		t.Errorf("node 2's certificate on node 1: %v", err)
	}
	writeNodeCert(t, ca, certs, pki.RoleLearner, 1) // replaces node-1.pem with a learner certificate
	write(validYAML)
	if _, err := Load(path); err == nil || !strings.Contains(err.Error(), "is a voter but its certificate is a learner's") {
		t.Errorf("a learner certificate on a voter: %v", err)
	}
	writeNodeCert(t, ca, certs, pki.RoleVoter, 1)
	if err := os.WriteFile(filepath.Join(dir, "admin-token"), []byte("short"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(path); err == nil || !strings.Contains(err.Error(), "at least 16") {
		t.Errorf("a short token: %v", err)
	}
}
