package main

import (
	"context"
	"fmt"
	"io"

	"github.com/pgquorum/pgquorum/config"
)

// checkCommand is `pgquorum check --config FILE`: it loads the configuration
// as `pgquorum run` would (keys, values, secret files, certificates) and
// reports every problem at once. It starts nothing.
func checkCommand(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("check", stderr)
	configPath := fs.String("config", "", "path to the YAML configuration file (env PGQUORUM_CONFIG)")
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
	role := "voter"
	if !cfg.Node.IsVoter() {
		role = "learner"
	}
	id := fmt.Sprint(cfg.Node.ID)
	if cfg.Node.AutoID {
		id = "auto, drawn from the certificate's block at the first start"
	}
	fmt.Fprintf(stdout, "%s: OK (cluster %s, node %s, %s)\n", *configPath, cfg.ClusterName, id, role)
	for _, part := range cfg.InsecureParts() {
		fmt.Fprintf(stdout, "warning: security.insecure: %s\n", part)
	}
	return nil
}
