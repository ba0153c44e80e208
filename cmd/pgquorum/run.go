package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/pgquorum/pgquorum/config"
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
	return runNode(ctx, cfg, logger, node.Options{Version: versionString()}, func(n *node.Node) {
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

// runNode runs one node until ctx ends (SIGINT/SIGTERM: the node drains its
// client sessions, then stops) or the node fails (a component stopped on its
// own, or the Raft member was removed from the cluster: the error says which,
// and pgquorum run exits 1). onHUP runs on every SIGHUP. A second SIGINT or
// SIGTERM during the drain cuts it short.
func runNode(ctx context.Context, cfg *config.Config, logger *slog.Logger, opts node.Options, onHUP func(*node.Node)) error {
	n, err := node.Start(ctx, cfg, logger, opts)
	if err != nil {
		return err
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	delay, grace := n.DrainTimes()
wait:
	for {
		select {
		case <-ctx.Done():
			logger.Info("shutting down: draining client sessions", "drain_delay", delay, "grace", grace)
			drainCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), delay+grace+time.Second)
			again := make(chan os.Signal, 1)
			signal.Notify(again, os.Interrupt, syscall.SIGTERM)
			go func() {
				select {
				case <-again:
					logger.Warn("second signal: closing the remaining sessions now")
					cancel()
				case <-drainCtx.Done():
				}
			}()
			_ = n.Drain(drainCtx)
			signal.Stop(again)
			cancel()
			break wait
		case <-n.Done():
			logger.Error("the node failed; shutting down", "err", n.Err())
			break wait
		case <-hup:
			onHUP(n)
		}
	}
	closeCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), grace)
	defer cancel()
	return n.Close(closeCtx)
}

func newLogger(w io.Writer, c config.Log, level *slog.LevelVar) *slog.Logger {
	_ = level.UnmarshalText([]byte(c.Level))
	opts := &slog.HandlerOptions{Level: level}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
