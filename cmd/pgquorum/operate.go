package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/pgquorum/pgquorum/admin"
	"github.com/pgquorum/pgquorum/consensus/clusterstate"
	"github.com/pgquorum/pgquorum/health"
)

// confirm asks question on stderr and reads y/yes from stdin, unless yes is set.
func confirm(stderr io.Writer, yes bool, question string) error {
	if yes {
		return nil
	}
	fmt.Fprintf(stderr, "%s [y/N] ", question)
	line, _ := bufio.NewReader(os.Stdin).ReadString('\n')
	switch strings.ToLower(strings.TrimSpace(line)) {
	case "y", "yes":
		return nil
	}
	return fmt.Errorf("%w: not confirmed (pass --yes to skip the question)", errUsage)
}

func switchoverCommand(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("switchover", stderr)
	client := adminFlags(fs)
	to := fs.String("to", "", "the standby to promote (required)")
	yes := fs.Bool("yes", false, "do not ask for confirmation (never read from the environment)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *to == "" {
		return fmt.Errorf("%w: --to NAME is required", errUsage)
	}
	if err := confirm(stderr, *yes, fmt.Sprintf("Switch the primary over to %s? New transactions are held until it is done.", *to)); err != nil {
		return err
	}
	c, err := client()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	entry, err := c.Switchover(ctx, *to)
	if err != nil {
		return unauthorizedHint(err)
	}
	printOutcome(stdout, entry)
	return nil
}

func failoverCommand(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("failover", stderr)
	client := adminFlags(fs)
	to := fs.String("to", "", "the standby to promote (default: the most up-to-date one)")
	force := fs.Bool("force", false, "promote even when it cannot be proven that no acknowledged commit is lost (needs --allow-data-loss; never read from the environment)")
	allowLoss := fs.Bool("allow-data-loss", false, "acknowledge that --force may lose acknowledged commits (never read from the environment)")
	yes := fs.Bool("yes", false, "do not ask for confirmation (never read from the environment)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *force != *allowLoss {
		return fmt.Errorf("%w: --force and --allow-data-loss go together", errUsage)
	}
	question := "Fail over now? Traffic is held until a new primary is agreed."
	if *force {
		question = "FORCE a failover that may LOSE ACKNOWLEDGED COMMITS? This is recorded in the history."
	}
	if err := confirm(stderr, *yes, question); err != nil {
		return err
	}
	c, err := client()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	entry, err := c.Failover(ctx, admin.FailoverRequestBody{To: *to, Force: *force, AllowDataLoss: *allowLoss})
	if err != nil {
		return unauthorizedHint(err)
	}
	printOutcome(stdout, entry)
	return nil
}

func pauseCommand(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return setPausedCommand(ctx, "pause", true, args, stdout, stderr)
}

func resumeCommand(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return setPausedCommand(ctx, "resume", false, args, stdout, stderr)
}

func setPausedCommand(ctx context.Context, name string, paused bool, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet(name, stderr)
	client := adminFlags(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	c, err := client()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := c.SetPaused(ctx, paused); err != nil {
		return unauthorizedHint(err)
	}
	if paused {
		fmt.Fprintln(stdout, "Automatic failover is paused (maintenance). Switchover and manual failover still work.")
	} else {
		fmt.Fprintln(stdout, "Automatic failover is resumed.")
	}
	return nil
}

func historyCommand(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("history", stderr)
	client := adminFlags(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	c, err := client()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	entries, err := c.History(ctx)
	if err != nil {
		return err
	}
	if len(entries) == 0 {
		fmt.Fprintln(stdout, "No failover or switchover yet.")
	}
	for _, e := range entries {
		printOutcome(stdout, e)
		fmt.Fprintln(stdout)
	}
	return nil
}

// printOutcome prints one history entry with the LSN table behind it.
func printOutcome(w io.Writer, e clusterstate.HistoryEntry) {
	forced := ""
	if e.Forced {
		forced = " (FORCED, data loss allowed)"
	}
	fmt.Fprintf(w, "%s %s%s at epoch %d: %s -> %s", e.At.Format(time.RFC3339), e.Kind, forced, e.Epoch, e.OldPrimary, e.NewPrimary)
	fmt.Fprintf(w, "   outcome %s", e.Outcome)
	if e.OutcomeReason != "" {
		fmt.Fprintf(w, " (%s)", e.OutcomeReason)
	}
	fmt.Fprintln(w)
	if e.Reason != "" {
		fmt.Fprintf(w, "  reason: %s\n", e.Reason)
	}
	if len(e.LSNTable) == 0 {
		return
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  NODE\tREACHABLE\tFROZEN\tTIMELINE\tRECEIVED\tREPLAYED")
	for _, r := range e.LSNTable {
		fmt.Fprintf(tw, "  %s\t%v\t%v\t%d\t%s\t%s\n", r.Node, r.Reachable, r.Frozen, r.Timeline,
			health.LSN(r.ReceiveLSN), health.LSN(r.ReplayLSN))
	}
	tw.Flush()
}
