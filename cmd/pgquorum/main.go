// Command pgquorum is the single pgquorum binary: a proxy node (`run`), a local
// demo cluster (`demo`), the operator's client for the admin API, and, on each
// database host, the agent that keeps its PostgreSQL node in the cluster
// (`agent`, and `rejoin` once by hand).
//
// This package holds flags and wiring only; every behaviour lives in the
// packages it wires together (config, proxy, routing, ...).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

// Exit codes (SPEC §3.1).
const (
	exitOK     = 0
	exitFailed = 1
	exitUsage  = 2
)

// errUsage marks an error that is the caller's fault; main exits with exitUsage.
var errUsage = errors.New("usage error")

type command struct {
	name    string
	summary string
	run     func(ctx context.Context, args []string, stdout, stderr io.Writer) error
}

func commands() []command {
	return []command{
		{"run", "run one proxy node: pgquorum run --config FILE", runCommand},
		{"demo", "start a local 3-node PostgreSQL quorum cluster with proxies in front", demoCommand},
		{"list", "show the cluster: PostgreSQL nodes (role, state, timeline, LSN, lag) and proxies", listCommand},
		{"switchover", "planned switchover with zero loss: switchover --to NAME [--yes]", switchoverCommand},
		{"failover", "manual failover: failover [--to NAME] [--force --allow-data-loss] [--yes]", failoverCommand},
		{"pause", "pause automatic failover (maintenance)", pauseCommand},
		{"resume", "resume automatic failover", resumeCommand},
		{"drain", "stop this proxy taking clients without dropping them (before a restart): drain --admin ADDR", drainCommand},
		{"history", "past failovers and switchovers with the LSN table behind each decision", historyCommand},
		{"rejoin", "on a database host: rewind a former primary (or --reclone it) and start it as a standby: rejoin --pgdata DIR", rejoinCommand},
		{"agent", "beside each PostgreSQL node: keep it running and in the cluster: agent --pgdata DIR --admin ADDR[,ADDR...]", agentCommand},
		{"members", "list | add ID ADDR [--learner] | remove ID: the proxies of the Raft cluster", membersCommand},
		{"check", "validate a configuration, every problem at once: check --config FILE", checkCommand},
		{"cert", "make the cluster's CA and certificates: cert ca|node|client --dir DIR ...", certCommand},
		{"recover", "after losing a majority of the voters, on the stopped survivor: recover [--force-new-cluster] --config FILE", recoverCommand},
		{"version", "print the version", versionCommand},
	}
}

func main() {
	os.Exit(runMain(os.Args[1:], os.Stdout, os.Stderr))
}

// runMain runs one command line. Help that was asked for goes to stdout
// (exit 0); usage errors go to stderr (exit 2).
func runMain(args []string, stdout, stderr io.Writer) int {
	switch {
	case len(args) == 0:
		usage(stderr)
		return exitUsage
	case isHelpFlag(args[0]):
		usage(stdout)
		return exitOK
	case args[0] == "--version" || args[0] == "-version":
		args = []string{"version"}
	case args[0] == "help" && len(args) > 1:
		// pgquorum help list == pgquorum list --help
		args = []string{args[1], "--help"}
	case args[0] == "help":
		usage(stdout)
		return exitOK
	}
	for _, c := range commands() {
		if c.name != args[0] {
			continue
		}
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		// A command prints its flags' usage to what it was given as stderr:
		// when help was asked for, that is stdout.
		flagOut := stderr
		if asksForHelp(args[1:]) {
			flagOut = stdout
		}
		err := c.run(ctx, args[1:], stdout, flagOut)
		switch {
		case err == nil:
			return exitOK
		case errors.Is(err, flag.ErrHelp):
			return exitOK
		case errors.Is(err, errUsage):
			fmt.Fprintf(stderr, "pgquorum %s: %v\n", c.name, err)
			return exitUsage
		default:
			fmt.Fprintf(stderr, "pgquorum %s: %v\n", c.name, err)
			return exitFailed
		}
	}
	fmt.Fprintf(stderr, "pgquorum: unknown command %q\n\n", args[0])
	usage(stderr)
	return exitUsage
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "pgquorum — a highly available PostgreSQL entry point")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Usage: pgquorum COMMAND [flags]   (pgquorum COMMAND --help for its flags)")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Commands:")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-10s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Exit codes: 0 ok, 1 failed, 2 usage error. Every flag can also be set in the")
	fmt.Fprintln(w, "environment: --admin as PGQUORUM_ADMIN, --token-file as PGQUORUM_TOKEN_FILE, ...")
	fmt.Fprintln(w, "(never --yes, --force, --allow-data-loss).")
}

func isHelpFlag(arg string) bool {
	switch arg {
	case "-h", "-help", "--help", "--h":
		return true
	}
	return false
}

// asksForHelp reports whether args hold a help flag before any "--".
func asksForHelp(args []string) bool {
	for _, a := range args {
		if a == "--" {
			return false
		}
		if isHelpFlag(a) {
			return true
		}
	}
	return false
}

// newFlagSet returns a flag set that reports errors instead of exiting and
// prints its usage (the command's summary and flags) to out: stderr after a
// bad flag, stdout when help was asked for (runMain).
func newFlagSet(name string, out io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("pgquorum "+name, flag.ContinueOnError)
	fs.SetOutput(out)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: pgquorum %s [flags]\n", name)
		if summary := commandSummary(name); summary != "" {
			fmt.Fprintf(fs.Output(), "  %s\n", summary)
		}
		fmt.Fprintln(fs.Output(), "\nFlags:")
		fs.PrintDefaults()
	}
	return fs
}

// commandSummary is the one-line summary of the command (or of the command of
// "members add", "cert node", ...).
func commandSummary(name string) string {
	first, _, _ := strings.Cut(name, " ")
	for _, c := range commands() {
		if c.name == first {
			return c.summary
		}
	}
	return ""
}

// confirmationFlags confirm something that cannot be undone: they must be
// typed on the command line, never inherited from the environment.
var confirmationFlags = map[string]bool{"yes": true, "force": true, "allow-data-loss": true, "force-new-cluster": true}

// parseFlags parses args and wraps a bad flag as a usage error. Every flag can
// also come from the environment: --admin from PGQUORUM_ADMIN, --config from
// PGQUORUM_CONFIG, and so on (upper case, '-' becomes '_'), except the
// confirmationFlags.
func parseFlags(fs *flag.FlagSet, args []string) error {
	var envErr error
	fs.VisitAll(func(f *flag.Flag) {
		if confirmationFlags[f.Name] {
			return
		}
		name := "PGQUORUM_" + envName(f.Name)
		if v, ok := os.LookupEnv(name); ok {
			if err := f.Value.Set(v); err != nil && envErr == nil {
				envErr = fmt.Errorf("%w: %s=%q: %v", errUsage, name, v, err)
			}
		}
	})
	if envErr != nil {
		return envErr
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected argument %q", errUsage, fs.Arg(0))
	}
	return nil
}

func envName(flagName string) string {
	b := []byte(flagName)
	for i, c := range b {
		switch {
		case c == '-':
			b[i] = '_'
		case c >= 'a' && c <= 'z':
			b[i] = c - 'a' + 'A'
		}
	}
	return string(b)
}
