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
	c, err := client()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if err := checkTargetFirst(ctx, c, *to, true, false); err != nil {
		return err
	}
	if err := confirm(stderr, *yes, fmt.Sprintf("Switch the primary over to %s? New transactions are held until it is done.", *to)); err != nil {
		return err
	}
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
	c, err := client()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if *to != "" {
		if err := checkTargetFirst(ctx, c, *to, false, *force); err != nil {
			return err
		}
	}
	question := "Fail over now? Traffic is held until a new primary is agreed."
	if *force {
		question = "FORCE a failover that may LOSE ACKNOWLEDGED COMMITS? This is recorded in the history."
	}
	if err := confirm(stderr, *yes, question); err != nil {
		return err
	}
	entry, err := c.Failover(ctx, admin.FailoverRequestBody{To: *to, Force: *force, AllowDataLoss: *allowLoss})
	if err != nil {
		return unauthorizedHint(err)
	}
	printOutcome(stdout, entry)
	return nil
}

// checkTargetFirst reads the cluster and refuses a target that cannot be
// promoted (checkTarget) before anything is asked or changed.
func checkTargetFirst(ctx context.Context, c *admin.Client, to string, switchover, forced bool) error {
	v, err := c.Cluster(ctx)
	if err != nil {
		return err
	}
	if err := checkTarget(v, to, switchover, forced); err != nil {
		return fmt.Errorf("%w: --to %s: %v", errUsage, to, err)
	}
	return nil
}

// checkTarget says why the node named to cannot be promoted, from the
// cluster as the admin API shows it; nil when it can. A switchover needs a
// standby that is up and streams from the agreed primary; a failover a
// standby that is up (its primary may be gone). forced (failover --force)
// lifts the fencing and recovery checks: the operator takes responsibility.
// The coordinator checks again: this is for a clear answer before the
// confirmation question. Pure.
func checkTarget(v admin.ClusterView, to string, switchover, forced bool) error {
	var names []string
	var target *admin.NodeView
	for i := range v.Nodes {
		names = append(names, v.Nodes[i].Name)
		if v.Nodes[i].Name == to {
			target = &v.Nodes[i]
		}
	}
	switch {
	case target == nil:
		return fmt.Errorf("no such node (the nodes are %s)", strings.Join(names, ", "))
	case to == v.Primary:
		return fmt.Errorf("%s is the primary already", to)
	case switchover && v.Primary == "":
		return fmt.Errorf("no primary is agreed: a switchover needs one (a failover is in progress or blocked; see pgquorum list)")
	case switchover && v.Failover != nil:
		return fmt.Errorf("a %s from %s is in progress", v.Failover.Kind, v.Failover.OldPrimary)
	case target.Role == "fenced" && !forced:
		return fmt.Errorf("%s is fenced (a former primary that has not rejoined): let its agent rejoin it, or run pgquorum rejoin on its host", to)
	}
	o, seen := latestObservation(target.Observations)
	switch {
	case !seen:
		return fmt.Errorf("no proxy has observed %s yet", to)
	case !o.Up:
		return fmt.Errorf("%s is down (last observed by proxy %d at %s)", to, o.Proxy, o.At.Format(time.RFC3339))
	case !o.InRecovery && !forced:
		return fmt.Errorf("%s is not a standby (it runs as a primary)", to)
	}
	if !switchover || v.PrimaryProbe == nil || !v.PrimaryProbe.Reachable {
		// Streaming is told by the agreed primary's walsenders; without a
		// probe of it, the coordinator's own checks decide.
		return nil
	}
	switch ws := target.WalSender; {
	case ws == nil:
		return fmt.Errorf("%s does not stream from the primary %s (no walsender for it there)", to, v.Primary)
	case ws.State != "streaming":
		return fmt.Errorf("%s does not stream from the primary %s yet (walsender state %s)", to, v.Primary, ws.State)
	}
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

// drainCommand is `pgquorum drain`: the node whose admin API is asked stops
// taking clients without dropping them (POST /drain), before it is stopped or
// restarted.
func drainCommand(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("drain", stderr)
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
	info, err := c.Drain(ctx)
	if err != nil {
		return unauthorizedHint(err)
	}
	fmt.Fprintf(stdout, "Draining since %s: /readyz answers 503 now; the proxy stops accepting after %s, "+
		"then each session ends at its next transaction boundary (at most %s). Restart the process to serve again.\n",
		info.Since.Format(time.RFC3339), info.DrainDelay, info.Grace)
	return nil
}

func historyCommand(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("history", stderr)
	client := adminFlags(fs)
	output := outputFlag(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	format, err := output()
	if err != nil {
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
	if format == outputJSON {
		if entries == nil {
			entries = []clusterstate.HistoryEntry{}
		}
		return writeJSON(stdout, entries)
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
