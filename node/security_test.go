package node

import (
	"context"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/pgquorum/pgquorum/pki"
)

// TestCertificatesReloadWhenTheirFilesChange: a renewed certificate (as
// cert-manager writes it into a mounted Secret) is picked up without a
// restart or a signal.
func TestCertificatesReloadWhenTheirFilesChange(t *testing.T) {
	dir := t.TempDir()
	ca, err := pki.NewCA("demo", 30)
	if err != nil {
		t.Fatal(err)
	}
	caFile, _, err := pki.WriteCA(dir, ca, false)
	if err != nil {
		t.Fatal(err)
	}
	cert, key := pki.NodeFiles(dir, pki.NodeIdentity("demo", 1, pki.RoleVoter))
	issue := func(days int) {
		kp, err := ca.IssueNode(1, 1, pki.RoleVoter, nil, days)
		if err != nil {
			t.Fatal(err)
		}
		if err := pki.WriteKeyPair(cert, key, kp.CertPEM, kp.KeyPEM, true); err != nil {
			t.Fatal(err)
		}
	}
	issue(1)
	creds, err := pki.LoadCredentials(pki.Files{CA: caFile, Cert: cert, Key: key}, nil)
	if err != nil {
		t.Fatal(err)
	}
	first := creds.NotAfter()
	sec := security{peer: creds}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- sec.watch(ctx, slog.New(slog.DiscardHandler), 5*time.Millisecond) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	issue(2) // the renewal lives a day longer
	deadline := time.After(time.Minute)
	for creds.NotAfter().Equal(first) {
		select {
		case <-time.After(5 * time.Millisecond):
		case <-deadline:
			t.Fatal("the renewed certificate was never loaded")
		}
	}
	if filepath.Dir(creds.Files().Cert) != dir {
		t.Fatal("credentials forgot their files")
	}
}
