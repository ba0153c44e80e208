package main

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pgquorum/pgquorum/config"
	"github.com/pgquorum/pgquorum/node"
)

// TestRunFailsWhenAComponentDies: `pgquorum run` does not keep running with
// a part of the node gone: when the admin API's listener dies, runNode
// returns the failure (runMain exits 1 on it) and says which component.
func TestRunFailsWhenAComponentDies(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	raft := l.Addr().String()
	l.Close()
	cfg := &config.Config{
		ClusterName: "runtest",
		Node:        config.Node{ID: 1, DataDir: filepath.Join(t.TempDir(), "proxy-1")},
		Listen:      config.Listen{Postgres: "127.0.0.1:0", Admin: "127.0.0.1:0", Raft: raft},
		Peers:       []config.Peer{{ID: 1, Raft: raft}},
		Backends:    []config.Backend{{Name: "pg1", Address: "127.0.0.1:1"}},
		Auth:        config.Auth{Method: "trust", QueryUser: "pgquorum"},
		Security:    config.Security{Insecure: true},
	}
	cfg.ApplyDefaults()
	admin := make(chan net.Listener, 1)
	opts := node.Options{NoRuntimeMetrics: true, AdminListen: func(addr string) (net.Listener, error) {
		l, err := net.Listen("tcp", addr)
		if err == nil {
			admin <- l
		}
		return l, err
	}}
	var logs bytes.Buffer
	logger := slog.New(slog.NewTextHandler(&logs, nil))
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- runNode(ctx, cfg, logger, opts, func(*node.Node) {}) }()
	(<-admin).Close() // the admin API's socket is gone
	select {
	case err = <-done:
	case <-ctx.Done():
		t.Fatal("pgquorum run kept running without its admin API")
	}
	if err == nil || !strings.HasPrefix(err.Error(), "admin: ") {
		t.Fatalf("runNode = %v, want the admin API's failure", err)
	}
	if !strings.Contains(logs.String(), "the node failed; shutting down") {
		t.Errorf("the log does not say why the node stops:\n%s", logs.String())
	}
}
