package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/pgquorum/pgquorum/config"
	"github.com/pgquorum/pgquorum/consensus"
	"github.com/pgquorum/pgquorum/node"
)

func runCommand(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("run", stderr)
	configPath := fs.String("config", "", "path to the YAML configuration file (env PGQUORUM_CONFIG)")
	logFormat := fs.String("log-format", "", "text or json; overrides log.format")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *configPath == "" {
		return fmt.Errorf("%w: --config FILE is required", errUsage)
	}
	cfg, err := config.Load(*configPath)
	if err != nil {
		return err
	}
	if *logFormat != "" {
		cfg.Log.Format = *logFormat
		if err := cfg.Validate(); err != nil {
			return fmt.Errorf("%w: --log-format: %v", errUsage, err)
		}
	}
	level := new(slog.LevelVar)
	logger := newLogger(stderr, cfg.Log, level)
	return runNode(ctx, cfg, logger, func(n *node.Node) {
		// SIGHUP: reload what can change while running (log level, admin
		// token, certificates) and say which changed keys need a restart.
		next, err := config.Load(*configPath)
		if err != nil {
			logger.Error("configuration reload failed; keeping the running configuration", "err", err)
			return
		}
		_ = level.UnmarshalText([]byte(next.Log.Level))
		needRestart, err := n.Reload(next)
		for _, key := range needRestart {
			logger.Warn("configuration key changed but needs a restart to take effect", "key", key)
		}
		if err != nil {
			logger.Error("certificates not reloaded; the previous ones stay in use", "err", err)
			return
		}
		logger.Info("configuration reloaded", "log.level", next.Log.Level)
	})
}

// runNode runs one node until ctx ends (SIGINT/SIGTERM) or its Raft member
// stops (for example because it was removed from the cluster). onHUP runs on
// every SIGHUP.
func runNode(ctx context.Context, cfg *config.Config, logger *slog.Logger, onHUP func(*node.Node)) error {
	n, err := node.Start(ctx, cfg, logger, node.Options{Version: versionString()})
	if err != nil {
		return err
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
wait:
	for {
		select {
		case <-ctx.Done():
			logger.Info("shutting down: draining client sessions", "grace", node.ShutdownGrace)
			break wait
		case <-n.Done():
			logger.Error("the Raft member stopped; shutting down", "err", n.Raft().Err())
			break wait
		case <-hup:
			onHUP(n)
		}
	}
	shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), node.ShutdownGrace)
	defer cancel()
	if err := n.Close(shutdownCtx); err != nil {
		return err
	}
	if err := n.Raft().Err(); err != nil && !errors.Is(err, consensus.ErrStopped) {
		return err
	}
	return nil
}

func newLogger(w io.Writer, c config.Log, level *slog.LevelVar) *slog.Logger {
	_ = level.UnmarshalText([]byte(c.Level))
	opts := &slog.HandlerOptions{Level: level}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
