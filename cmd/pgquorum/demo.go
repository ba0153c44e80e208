package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/pgquorum/pgquorum/config"
	"github.com/pgquorum/pgquorum/localcluster"
	"github.com/pgquorum/pgquorum/node"
	"github.com/pgquorum/pgquorum/pki"
)

// demoProxies is the number of voting proxies the demo runs.
const demoProxies = 3

// demoCommand starts a local PostgreSQL quorum cluster and three pgquorum
// proxies in front of it, prints how to connect, and tears everything down on
// Ctrl-C.
func demoCommand(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("demo", stderr)
	dir := fs.String("dir", "", "directory for the demo's data (default: a new temporary directory, removed at exit)")
	port := fs.Int("port", 6432, "client port of the first proxy (the others use the next ones; a taken port is replaced by a free one)")
	verbose := fs.Bool("verbose", false, "log every proxy event")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	// Closing the terminal (SIGHUP) cleans up too, like Ctrl-C and SIGTERM.
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGHUP)
	defer stop()

	level := slog.LevelWarn
	if *verbose {
		level = slog.LevelInfo
	}
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))

	root := *dir
	if root == "" {
		var err error
		if root, err = os.MkdirTemp("", "pgquorum-demo-"); err != nil {
			return err
		}
		defer os.RemoveAll(root)
	} else if err := os.MkdirAll(root, 0o755); err != nil {
		return err
	}
	// PostgreSQL runs as the postgres OS user when we are root: it must be able
	// to traverse the directory.
	if err := os.Chmod(root, 0o755); err != nil {
		return err
	}

	fmt.Fprintf(stdout, "Starting a 3-node PostgreSQL quorum cluster in %s ...\n", root)
	startCtx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	cluster, err := localcluster.Start(startCtx, localcluster.Options{
		Dir:    filepath.Join(root, "postgres"),
		Logger: logger.With("component", "localcluster"),
	})
	cancel()
	if err != nil {
		if errors.Is(err, localcluster.ErrPostgresNotFound) {
			return fmt.Errorf("%w\n\nInstall PostgreSQL (15, 16 or 17) first, e.g. `apt-get install postgresql`, or set PGQUORUM_PG_BINDIR", err)
		}
		return fmt.Errorf("starting PostgreSQL: %w", err)
	}
	defer cluster.Close()

	fmt.Fprintf(stdout, "Starting %d pgquorum proxies ...\n", demoProxies)
	secrets, err := makeDemoSecrets(root)
	if err != nil {
		return fmt.Errorf("demo certificates: %w", err)
	}
	configs := demoConfigs(root, cluster, *port, secrets)
	var nodes []*node.Node
	defer func() {
		for _, n := range nodes {
			closeCtx, cancel := context.WithTimeout(context.Background(), node.ShutdownGrace)
			_ = n.Close(closeCtx)
			cancel()
		}
	}()
	for _, cfg := range configs {
		n, err := node.Start(ctx, cfg, logger.With("proxy", cfg.Node.ID), node.Options{Version: versionString(), NoRuntimeMetrics: true})
		if err != nil {
			return fmt.Errorf("proxy %d: %w", cfg.Node.ID, err)
		}
		nodes = append(nodes, n)
	}
	waitCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	err = waitRouting(waitCtx, nodes)
	cancel()
	if err != nil {
		return err
	}
	printDemoHelp(stdout, cluster, nodes, secrets)

	failed := make(chan *node.Node, len(nodes))
	for _, n := range nodes {
		go func() {
			select {
			case <-n.Done():
				failed <- n
			case <-ctx.Done():
			}
		}()
	}
	select {
	case <-ctx.Done():
		fmt.Fprintln(stdout, "\nStopping the demo ...")
		return nil
	case n := <-failed:
		return fmt.Errorf("a proxy failed, stopping the demo: %w", n.Err())
	}
}

// waitRouting waits until every proxy routes to the agreed primary.
func waitRouting(ctx context.Context, nodes []*node.Node) error {
	for _, n := range nodes {
		for !n.Routing().Routing {
			select {
			case <-ctx.Done():
				return fmt.Errorf("proxies did not agree on a primary: %s", n.Routing().Reason)
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
	return nil
}

// demoSecrets are the demo's throwaway CA directory and operator token: the
// demo runs secure, like production.
type demoSecrets struct {
	certs     string // ca.pem, node-N.pem, ...
	tokenFile string
	token     string
}

// makeDemoSecrets makes a CA and a voter certificate per proxy in
// root/certs, and a random admin token in root/admin-token.
func makeDemoSecrets(root string) (demoSecrets, error) {
	s := demoSecrets{certs: filepath.Join(root, "certs"), tokenFile: filepath.Join(root, "admin-token")}
	ca, err := pki.NewCA("demo", 1)
	if err != nil {
		return s, err
	}
	if _, _, err := pki.WriteCA(s.certs, ca, true); err != nil {
		return s, err
	}
	for i := uint64(1); i <= demoProxies; i++ {
		kp, err := ca.IssueNode(i, i, pki.RoleVoter, []string{"127.0.0.1", "localhost"}, 1)
		if err != nil {
			return s, err
		}
		cert, key := pki.NodeFiles(s.certs, pki.NodeIdentity("demo", i, pki.RoleVoter))
		if err := pki.WriteKeyPair(cert, key, kp.CertPEM, kp.KeyPEM, true); err != nil {
			return s, err
		}
	}
	random := make([]byte, 24)
	if _, err := rand.Read(random); err != nil {
		return s, err
	}
	s.token = base64.RawURLEncoding.EncodeToString(random)
	return s, os.WriteFile(s.tokenFile, []byte(s.token+"\n"), 0o600)
}

// demoConfigs returns the configurations of the demo's proxies: the layout of
// configs/loopback, on free ports.
func demoConfigs(root string, cluster *localcluster.Cluster, firstPort int, secrets demoSecrets) []*config.Config {
	var peers []config.Peer
	var configs []*config.Config
	for i := 1; i <= demoProxies; i++ {
		cfg := &config.Config{
			ClusterName: "demo",
			Node:        config.Node{ID: uint64(i), DataDir: filepath.Join(root, fmt.Sprintf("proxy-%d", i))},
			Listen: config.Listen{
				Postgres: freeAddr(firstPort + i - 1),
				Admin:    freeAddr(8008 + i - 1),
				Raft:     freeAddr(7001 + i - 1),
			},
			Auth: config.Auth{
				Method:        "scram-sha-256",
				QueryUser:     localcluster.QueryUser,
				QueryPassword: localcluster.QueryPassword,
				QueryDatabase: config.DefaultQueryDatabase,
			},
			Hold: config.Hold{Timeout: config.Duration{Duration: config.DefaultHoldTimeout},
				MaxHeld: config.DefaultMaxHeld, ReleaseConcurrency: config.DefaultReleaseConcurrency},
			Health:   config.Health{Interval: config.Duration{Duration: config.DefaultHealthInterval}, Timeout: config.Duration{Duration: config.DefaultHealthTimeout}},
			Failover: config.Failover{MinInterval: config.Duration{Duration: 10 * time.Second}},
			Backend:  config.BackendTLS{SSLMode: "disable"},
			Log:      config.Log{Format: "text", Level: "info"},
			Admin:    config.Admin{TokenFile: secrets.tokenFile, Token: secrets.token},
		}
		cert, key := pki.NodeFiles(secrets.certs, pki.NodeIdentity("demo", uint64(i), pki.RoleVoter))
		cfg.PeerTLS = &config.PeerTLS{CA: filepath.Join(secrets.certs, pki.CACertFile), Cert: cert, Key: key}
		for _, n := range cluster.Nodes {
			cfg.Backends = append(cfg.Backends, config.Backend{Name: n.Name, Address: n.Address()})
		}
		peers = append(peers, config.Peer{ID: cfg.Node.ID, Raft: cfg.Listen.Raft})
		configs = append(configs, cfg)
	}
	for _, cfg := range configs {
		cfg.Peers = peers
	}
	return configs
}

// freeAddr returns 127.0.0.1:port if that port is free, else a free port.
func freeAddr(port int) string {
	for _, p := range []int{port, 0} {
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		if err != nil {
			continue
		}
		addr := l.Addr().String()
		l.Close()
		return addr
	}
	return "127.0.0.1:0"
}

func printDemoHelp(w io.Writer, cluster *localcluster.Cluster, nodes []*node.Node, secrets demoSecrets) {
	fmt.Fprintln(w)
	fmt.Fprintln(w, "PostgreSQL nodes (synchronous_standby_names = '"+cluster.SyncStandbyNames()+"' on the primary):")
	for i, n := range cluster.Nodes {
		role := "standby"
		if i == 0 {
			role = "primary"
		}
		fmt.Fprintf(w, "  %-4s %-8s %s   data %s\n", n.Name, role, n.Address(), n.DataDir)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "pgquorum proxies (connect to any of them):")
	for i, n := range nodes {
		host, port, _ := net.SplitHostPort(n.PostgresAddr().String())
		fmt.Fprintf(w, "  proxy %d  postgres://%s:%s@%s:%s/postgres?sslmode=disable   admin http://%s\n",
			i+1, localcluster.QueryUser, localcluster.QueryPassword, host, port, n.AdminAddr())
	}
	host, port, _ := net.SplitHostPort(nodes[0].PostgresAddr().String())
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Try this, in another terminal:")
	fmt.Fprintf(w, "  psql 'host=%s port=%s user=%s password=%s dbname=postgres' -c 'select inet_server_port(), pg_is_in_recovery()'\n",
		host, port, localcluster.QueryUser, localcluster.QueryPassword)
	fmt.Fprintf(w, "  go run ./cmd/pgquorum list --admin %s\n", nodes[0].AdminAddr())
	fmt.Fprintf(w, "  go run ./cmd/pgquorum switchover --to pg2 --admin %s --token-file %s\n", nodes[0].AdminAddr(), secrets.tokenFile)
	fmt.Fprintf(w, "  kill -9 $(head -1 %s/postmaster.pid)    # kill the primary and watch `pgquorum list`\n", cluster.Nodes[0].DataDir)
	fmt.Fprintln(w)
	fmt.Fprintf(w, "The proxies talk over mutual TLS (CA and certificates in %s); calls that change the cluster need the token in %s.\n", secrets.certs, secrets.tokenFile)
	fmt.Fprintln(w, "Press Ctrl-C to stop everything and remove the demo's files.")
}
