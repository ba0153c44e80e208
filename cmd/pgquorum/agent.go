package main

import (
	"context"
	"flag"
	"io"

	"github.com/pgquorum/pgquorum/rejoin"
)

// agentCommand is `pgquorum agent --pgdata DIR --admin ADDR[,ADDR...]`: beside
// each PostgreSQL node, keep it running and in the cluster (rejoin.RunAgent).
// It runs until SIGTERM or SIGINT and leaves PostgreSQL running when it stops.
func agentCommand(ctx context.Context, args []string, _, stderr io.Writer) error {
	fs, options := agentFlags(stderr)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	opts, err := options()
	if err != nil {
		return err
	}
	return rejoin.RunAgent(ctx, opts)
}

// agentFlags returns the agent's flag set and a function that builds its
// options once the flags are parsed.
func agentFlags(stderr io.Writer) (*flag.FlagSet, func() (rejoin.AgentOptions, error)) {
	fs := newFlagSet("agent", stderr)
	options := hostFlags(fs, "agent")
	interval := fs.Duration("interval", rejoin.DefaultAgentInterval, "how often to look at the cluster and the node when nothing happens")
	primaryStartDelay := fs.Duration("primary-start-delay", rejoin.DefaultPrimaryStartDelay,
		"how long the agreed primary stays down before the agent restarts it (the proxies fail over first)")
	recloneFallback := fs.Bool("reclone-fallback", false,
		"copy the primary afresh (pg_basebackup; the old data directory is moved aside, never deleted) when pg_rewind cannot rewind, and into an empty data directory")
	return fs, func() (rejoin.AgentOptions, error) {
		opts, err := options(stderr)
		if err != nil {
			return rejoin.AgentOptions{}, err
		}
		return rejoin.AgentOptions{
			Options:           opts,
			Interval:          *interval,
			PrimaryStartDelay: *primaryStartDelay,
			RecloneFallback:   *recloneFallback,
		}, nil
	}
}
