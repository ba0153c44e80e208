package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"time"

	"github.com/pgquorum/pgquorum/pki"
)

// certCommand is `pgquorum cert ca|node|client` (SPEC §3.4): the cluster's
// CA and its certificates, as PEM files in --dir.
func certCommand(_ context.Context, args []string, stdout, stderr io.Writer) error {
	const usage = "cert ca --dir DIR --cluster NAME | cert node --dir DIR --id N[,N...] [--learner] [--hosts H1,H2] | cert client --dir DIR --name NAME"
	if len(args) > 0 && isHelpFlag(args[0]) {
		fmt.Fprintf(stderr, "Usage: pgquorum %s\n", usage) // stderr is stdout when help was asked for
		return flag.ErrHelp
	}
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		return fmt.Errorf("%w: %s", errUsage, usage)
	}
	sub, args := args[0], args[1:]
	fs := newFlagSet("cert "+sub, stderr)
	dir := fs.String("dir", "", "directory of ca.pem and ca-key.pem, where the files are written (required)")
	force := fs.Bool("force", false, "replace existing files (never read from the environment)")
	var run func() error
	switch sub {
	case "ca":
		cluster := fs.String("cluster", "", "the cluster's name, as in cluster_name (required)")
		days := fs.Int("days", pki.DefaultCADays, "lifetime in days")
		run = func() error { return certCA(stdout, *dir, *cluster, *days, *force) }
	case "node":
		ids := fs.String("id", "", "node id(s): N, N,M,... (one certificate each) or FIRST-LAST (one learner certificate for a block of ids) (required)")
		learner := fs.Bool("learner", false, "a learner (sidecar) certificate: it can never vote")
		hosts := fs.String("hosts", "localhost,127.0.0.1,::1", "DNS names and IP addresses of the node, for HTTPS clients of its admin API")
		days := fs.Int("days", pki.DefaultCertDays, "lifetime in days")
		run = func() error { return certNodes(stdout, *dir, *ids, *learner, *hosts, *days, *force) }
	case "client":
		name := fs.String("name", "", "the operator's name (required)")
		days := fs.Int("days", pki.DefaultCertDays, "lifetime in days")
		run = func() error { return certClient(stdout, *dir, *name, *days, *force) }
	default:
		return fmt.Errorf("%w: unknown cert command %q: %s", errUsage, sub, usage)
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *dir == "" {
		return fmt.Errorf("%w: --dir DIR is required", errUsage)
	}
	return run()
}

func certCA(w io.Writer, dir, cluster string, days int, force bool) error {
	if cluster == "" {
		return fmt.Errorf("%w: --cluster NAME is required (the cluster_name of the configuration)", errUsage)
	}
	ca, err := pki.NewCA(cluster, days)
	if err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	certFile, keyFile, err := pki.WriteCA(dir, ca, force)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "wrote %s and %s: the CA of cluster %q, valid until %s\n", certFile, keyFile, cluster, day(ca.Cert.NotAfter))
	fmt.Fprintf(w, "keep %s off the proxies' machines: whoever has it can make certificates for this cluster\n", keyFile)
	return nil
}

func certNodes(w io.Writer, dir, ids string, learner bool, hosts string, days int, force bool) error {
	if ids == "" {
		return fmt.Errorf("%w: --id N is required", errUsage)
	}
	role := pki.RoleVoter
	if learner {
		role = pki.RoleLearner
	}
	ca, err := pki.LoadCA(dir)
	if err != nil {
		return fmt.Errorf("%w (make the CA first: pgquorum cert ca --dir %s --cluster NAME)", err, dir)
	}
	for _, field := range strings.Split(ids, ",") {
		first, last, err := pki.ParseIDs(strings.TrimSpace(field))
		if err != nil {
			return fmt.Errorf("%w: --id: %v", errUsage, err)
		}
		if first != last && !learner {
			return fmt.Errorf("%w: --id %s: a block of ids is for learners only (add --learner)", errUsage, field)
		}
		kp, err := ca.IssueNode(first, last, role, strings.Split(hosts, ","), days)
		if err != nil {
			return fmt.Errorf("%w: %v", errUsage, err)
		}
		id := pki.Identity{Cluster: ca.Identity.Cluster, Role: role, FirstID: first, LastID: last}
		certFile, keyFile := pki.NodeFiles(dir, id)
		if err := pki.WriteKeyPair(certFile, keyFile, kp.CertPEM, kp.KeyPEM, force); err != nil {
			return err
		}
		fmt.Fprintf(w, "wrote %s and %s: %s, valid until %s\n", certFile, keyFile, id, day(kp.Cert.NotAfter))
	}
	return nil
}

func certClient(w io.Writer, dir, name string, days int, force bool) error {
	if name == "" {
		return fmt.Errorf("%w: --name NAME is required", errUsage)
	}
	ca, err := pki.LoadCA(dir)
	if err != nil {
		return fmt.Errorf("%w (make the CA first: pgquorum cert ca --dir %s --cluster NAME)", err, dir)
	}
	kp, err := ca.IssueClient(name, days)
	if err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	certFile, keyFile := pki.ClientFiles(dir, name)
	if err := pki.WriteKeyPair(certFile, keyFile, kp.CertPEM, kp.KeyPEM, force); err != nil {
		return err
	}
	fmt.Fprintf(w, "wrote %s and %s: operator %q of cluster %q, valid until %s\n", certFile, keyFile, name, ca.Identity.Cluster, day(kp.Cert.NotAfter))
	fmt.Fprintf(w, "use it with: pgquorum ... --ca %s --client-cert %s --client-key %s (with admin.tls on the nodes)\n",
		filepath.Join(dir, pki.CACertFile), certFile, keyFile)
	return nil
}

func day(t time.Time) string { return t.UTC().Format("2006-01-02") }
