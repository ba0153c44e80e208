package pki

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParseIdentity(t *testing.T) {
	good := []struct {
		uri  string
		want Identity
	}{
		{"pgquorum://demo/ca", Identity{Cluster: "demo", Role: RoleCA}},
		{"pgquorum://demo/node/7?role=voter", NodeIdentity("demo", 7, RoleVoter)},
		{"pgquorum://my_cluster.x-1/node/7?role=learner", NodeIdentity("my_cluster.x-1", 7, RoleLearner)},
		{"pgquorum://demo/node/1000-1999?role=learner", Identity{Cluster: "demo", Role: RoleLearner, FirstID: 1000, LastID: 1999}},
		{"pgquorum://demo/client/alice@ops", Identity{Cluster: "demo", Role: RoleClient, Name: "alice@ops"}},
	}
	for _, tc := range good {
		got, err := ParseIdentity(tc.uri)
		if err != nil || got != tc.want {
			t.Errorf("ParseIdentity(%q) = %+v, %v; want %+v", tc.uri, got, err, tc.want)
			continue
		}
		if back := got.URI().String(); back != tc.uri {
			t.Errorf("round trip of %q gave %q", tc.uri, back)
		}
	}
	bad := map[string]string{
		"https://demo/node/1?role=voter":          "scheme",
		"pgquorum:///node/1?role=voter":           "cluster name",
		"pgquorum://demo/node/0?role=voter":       "positive integer",
		"pgquorum://demo/node/x?role=voter":       "positive integer",
		"pgquorum://demo/node/1?role=admin":       "unknown role",
		"pgquorum://demo/node/1":                  "unknown role",
		"pgquorum://demo/node/5-3?role=learner":   "FIRST <= LAST",
		"pgquorum://demo/node/1-3?role=voter":     "exactly one node id",
		"pgquorum://demo/client/":                 "client name",
		"pgquorum://demo/client/a/b":              "client name",
		"pgquorum://demo/ca?role=voter":           "unexpected query",
		"pgquorum://demo/whoami":                  "want /ca",
		"pgquorum://demo/client/bob?role=learner": "unexpected query",
	}
	for uri, want := range bad {
		if _, err := ParseIdentity(uri); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseIdentity(%q): %v, want an error containing %q", uri, err, want)
		}
	}
}

func TestCoversOnlyNodeIDsInRange(t *testing.T) {
	block := Identity{Cluster: "demo", Role: RoleLearner, FirstID: 1000, LastID: 1999}
	for id, want := range map[uint64]bool{999: false, 1000: true, 1500: true, 1999: true, 2000: false, 0: false} {
		if block.Covers(id) != want {
			t.Errorf("Covers(%d) = %v, want %v", id, !want, want)
		}
	}
	if (Identity{Cluster: "demo", Role: RoleClient, Name: "x"}).Covers(0) {
		t.Error("a client identity covers a node id")
	}
}

// testCA makes a CA for cluster "demo" or fails the test.
func testCA(t *testing.T, cluster string) *CA {
	t.Helper()
	ca, err := NewCA(cluster, 30)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func credentialsOf(t *testing.T, ca *CA, kp *KeyPair) *Credentials {
	t.Helper()
	c, err := NewCredentials(ca.CertPEM(), kp.CertPEM, kp.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestIssuedCertificatesCarryTheirIdentityAndVerify(t *testing.T) {
	ca := testCA(t, "demo")
	voter, err := ca.IssueNode(3, 3, RoleVoter, []string{"localhost", "127.0.0.1", "pgquorum-3.peers"}, 10)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ca.IssueNode(3, 4, RoleVoter, nil, 10); err == nil {
		t.Fatal("a voter certificate for a block of ids was issued")
	}
	client, err := ca.IssueClient("alice", 10)
	if err != nil {
		t.Fatal(err)
	}
	creds := credentialsOf(t, ca, voter)
	if id, err := creds.Identity(); err != nil || id != NodeIdentity("demo", 3, RoleVoter) {
		t.Fatalf("own identity %+v, %v", id, err)
	}
	if got := voter.Cert.DNSNames; len(got) != 2 || got[0] != "localhost" || len(voter.Cert.IPAddresses) != 1 {
		t.Fatalf("hosts: DNS %v IP %v", got, voter.Cert.IPAddresses)
	}
	if d := time.Until(voter.Cert.NotAfter); d < 9*24*time.Hour || d > 10*24*time.Hour {
		t.Fatalf("lifetime ends in %v, want about 10 days", d)
	}

	id, err := creds.Verify([]*x509.Certificate{voter.Cert}, x509.ExtKeyUsageServerAuth)
	if err != nil || id.Role != RoleVoter {
		t.Fatalf("verify voter: %+v, %v", id, err)
	}
	if id, err := creds.Verify([]*x509.Certificate{client.Cert}, x509.ExtKeyUsageClientAuth); err != nil || id.Name != "alice" {
		t.Fatalf("verify client: %+v, %v", id, err)
	}
	// A client certificate cannot serve as a peer's server certificate.
	if _, err := creds.Verify([]*x509.Certificate{client.Cert}, x509.ExtKeyUsageServerAuth); err == nil {
		t.Fatal("a client certificate verified for server auth")
	}
	// Another cluster's CA signed nothing we trust.
	other := testCA(t, "demo")
	stranger, err := other.IssueNode(3, 3, RoleVoter, nil, 10)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := creds.Verify([]*x509.Certificate{stranger.Cert}, x509.ExtKeyUsageServerAuth); err == nil {
		t.Fatal("a certificate of another CA verified")
	}
}

func TestCertificateNeverOutlivesItsCA(t *testing.T) {
	ca := testCA(t, "demo") // 30 days
	kp, err := ca.IssueNode(1, 1, RoleVoter, nil, 3650)
	if err != nil {
		t.Fatal(err)
	}
	if kp.Cert.NotAfter.After(ca.Cert.NotAfter) {
		t.Fatalf("certificate expires %v, after its CA (%v)", kp.Cert.NotAfter, ca.Cert.NotAfter)
	}
}

func TestFilesArePrivateAndNeverSilentlyReplaced(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "certs")
	ca := testCA(t, "demo")
	certFile, keyFile, err := WriteCA(dir, ca, false)
	if err != nil {
		t.Fatal(err)
	}
	for file, mode := range map[string]os.FileMode{dir: 0o700 | os.ModeDir, certFile: 0o644, keyFile: 0o600} {
		st, err := os.Stat(file)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode() != mode {
			t.Errorf("%s: mode %v, want %v", file, st.Mode(), mode)
		}
	}
	if _, _, err := WriteCA(dir, testCA(t, "demo"), false); !errors.Is(err, ErrExists) {
		t.Fatalf("second CA without force: %v, want ErrExists", err)
	}
	loaded, err := LoadCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !loaded.Cert.Equal(ca.Cert) || loaded.Identity.Cluster != "demo" {
		t.Fatal("LoadCA returned another CA")
	}
	if _, _, err := WriteCA(dir, testCA(t, "demo"), true); err != nil {
		t.Fatalf("replace with force: %v", err)
	}
	if again, _ := LoadCA(dir); again.Cert.Equal(ca.Cert) {
		t.Fatal("--force did not replace the CA")
	}
	// A node certificate's key is not a CA.
	kp, err := loaded.IssueNode(1, 1, RoleVoter, nil, 1)
	if err != nil {
		t.Fatal(err)
	}
	bogus := t.TempDir()
	if err := WriteKeyPair(filepath.Join(bogus, CACertFile), filepath.Join(bogus, CAKeyFile), kp.CertPEM, kp.KeyPEM, false); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadCA(bogus); err == nil || !strings.Contains(err.Error(), "not a CA") {
		t.Fatalf("LoadCA of a node certificate: %v", err)
	}
}

// handshake runs one TLS handshake between server and client configs over
// loopback TCP and returns each side's error.
func handshake(t *testing.T, server, client *tls.Config) (serverErr, clientErr error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			done <- err
			return
		}
		defer conn.Close()
		done <- tls.Server(conn, server).HandshakeContext(ctx)
	}()
	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	clientErr = tls.Client(conn, client).HandshakeContext(ctx)
	return <-done, clientErr
}

func TestPeerTLSIsMutualAndReloadable(t *testing.T) {
	ca := testCA(t, "demo")
	dir := t.TempDir()
	if _, _, err := WriteCA(dir, ca, false); err != nil {
		t.Fatal(err)
	}
	write := func(ca *CA, id uint64) Files {
		kp, err := ca.IssueNode(id, id, RoleVoter, nil, 1)
		if err != nil {
			t.Fatal(err)
		}
		cert, key := NodeFiles(dir, NodeIdentity("demo", id, RoleVoter))
		if err := WriteKeyPair(cert, key, kp.CertPEM, kp.KeyPEM, true); err != nil {
			t.Fatal(err)
		}
		return Files{CA: filepath.Join(dir, CACertFile), Cert: cert, Key: key}
	}
	server, err := LoadCredentials(write(ca, 1), nil)
	if err != nil {
		t.Fatal(err)
	}
	client, err := LoadCredentials(write(ca, 2), nil)
	if err != nil {
		t.Fatal(err)
	}
	if se, ce := handshake(t, server.PeerServerConfig(), client.PeerClientConfig()); se != nil || ce != nil {
		t.Fatalf("handshake: server %v, client %v", se, ce)
	}

	// A client without a certificate is refused.
	noCert := &tls.Config{MinVersion: tls.VersionTLS13, InsecureSkipVerify: true}
	if se, _ := handshake(t, server.PeerServerConfig(), noCert); se == nil {
		t.Fatal("the server accepted a client without a certificate")
	}
	// TLS 1.2 is refused.
	old := client.PeerClientConfig()
	old.MinVersion, old.MaxVersion = tls.VersionTLS12, tls.VersionTLS12
	if se, _ := handshake(t, server.PeerServerConfig(), old); se == nil {
		t.Fatal("the server accepted TLS 1.2")
	}

	// Rotate the client's certificate to one of a new CA: refused until the
	// server reloads a CA bundle that holds the new CA too.
	newCA := testCA(t, "demo")
	rotated := write(newCA, 2)
	if err := client.Reload(); err != nil {
		t.Fatal(err)
	}
	if se, _ := handshake(t, server.PeerServerConfig(), client.PeerClientConfig()); se == nil {
		t.Fatal("the server accepted a certificate of a CA it does not have")
	}
	bundle := append(ca.CertPEM(), newCA.CertPEM()...)
	if err := os.WriteFile(rotated.CA, bundle, 0o644); err != nil {
		t.Fatal(err)
	}
	serverConfig := server.PeerServerConfig() // made before the reload: still picks up the new pool
	if err := server.Reload(); err != nil {
		t.Fatal(err)
	}
	if se, ce := handshake(t, serverConfig, client.PeerClientConfig()); se != nil || ce != nil {
		t.Fatalf("after reloading the CA bundle: server %v, client %v", se, ce)
	}

	// A broken file keeps the previous credentials.
	if err := os.WriteFile(rotated.Cert, []byte("garbage"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := client.Reload(); err == nil {
		t.Fatal("reloading a garbage certificate succeeded")
	}
	if id, err := client.Identity(); err != nil || id.FirstID != 2 {
		t.Fatalf("after a failed reload: %+v, %v", id, err)
	}
}
