package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/pgquorum/pgquorum/admin"
	"github.com/pgquorum/pgquorum/consensus/clusterstate"
)

const defaultAdmin = "127.0.0.1:8008"

// adminFlags adds --admin and the credentials flags to fs and returns a
// function that builds the client once the flags are parsed.
func adminFlags(fs *flag.FlagSet) func() (*admin.Client, error) {
	addr := fs.String("admin", defaultAdmin, "admin API address of any pgquorum node: host:port or URL (env PGQUORUM_ADMIN)")
	var creds admin.ClientCredentials
	fs.StringVar(&creds.Token, "token", "", "the operators' bearer token for calls that change the cluster (env PGQUORUM_TOKEN; prefer --token-file)")
	fs.StringVar(&creds.TokenFile, "token-file", "", "file holding the bearer token (env PGQUORUM_TOKEN_FILE)")
	fs.StringVar(&creds.CAFile, "ca", "", "CA certificate that verifies an HTTPS admin API (admin.tls); makes host:port https:// (env PGQUORUM_CA)")
	fs.StringVar(&creds.CertFile, "client-cert", "", "an operator's client certificate (`pgquorum cert client`) instead of the token (env PGQUORUM_CLIENT_CERT)")
	fs.StringVar(&creds.KeyFile, "client-key", "", "the client certificate's key (env PGQUORUM_CLIENT_KEY)")
	return func() (*admin.Client, error) {
		o, err := creds.Options()
		if err != nil {
			return nil, err
		}
		return admin.NewClientWithOptions(*addr, o), nil
	}
}

// unauthorizedHint adds what to do to an admin API 401.
func unauthorizedHint(err error) error {
	if admin.IsUnauthorized(err) {
		return fmt.Errorf("%w\n(pass --token-file FILE, --token or --client-cert/--client-key, or set PGQUORUM_TOKEN_FILE)", err)
	}
	return err
}

func listCommand(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("list", stderr)
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
	v, err := c.Cluster(ctx)
	if err != nil {
		return err
	}
	if format == outputJSON {
		err = writeJSON(stdout, v)
	} else {
		printCluster(stdout, v, time.Now())
	}
	if err != nil {
		return err
	}
	// Scripts and health checks may rely on the exit code: the proxy that
	// answered does not forward traffic.
	if !v.Routing.Routing {
		return fmt.Errorf("proxy %d is not routing: %s", v.NodeID, v.Routing.Reason)
	}
	return nil
}

// latestObservation is the most recent observation of a node by any proxy.
func latestObservation(obs []clusterstate.Observation) (clusterstate.Observation, bool) {
	var best clusterstate.Observation
	for _, o := range obs {
		if o.At.After(best.At) {
			best = o
		}
	}
	return best, !best.At.IsZero()
}

func humanBytes(n int64) string {
	if n < 0 {
		n = 0
	}
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

const membersUsage = "members list [-o json] | members add ID ADDR [--learner] [--force] | members remove ID"

func membersCommand(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && isHelpFlag(args[0]) {
		fmt.Fprintf(stderr, "Usage: pgquorum %s\n  add a voter only once it runs (best: as a learner that caught up); keep an odd number of voters\n", membersUsage)
		return flag.ErrHelp
	}
	if len(args) == 0 {
		return fmt.Errorf("%w: %s", errUsage, membersUsage)
	}
	sub, args := args[0], args[1:]
	fs := newFlagSet("members "+sub, stderr)
	client := adminFlags(fs)
	learner, force := false, false
	output := func() (string, error) { return outputTable, nil }
	switch sub {
	case "add":
		fs.BoolVar(&learner, "learner", false, "add as a non-voting learner (sidecar)")
		fs.BoolVar(&force, "force", false, "add a voter even if it cannot be reached now (never read from the environment)")
	case "list":
		output = outputFlag(fs)
	}
	// Positional arguments come first (members add 4 host:7004 --learner); the
	// flag package stops at the first non-flag, so split them off.
	var pos []string
	for len(args) > 0 && len(args[0]) > 0 && args[0][0] != '-' {
		pos, args = append(pos, args[0]), args[1:]
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	pos = append(pos, fs.Args()...)
	format, err := output()
	if err != nil {
		return err
	}
	c, err := client()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()

	var members []admin.MemberView
	switch sub {
	case "list":
		if len(pos) != 0 {
			return fmt.Errorf("%w: members list takes no arguments", errUsage)
		}
		members, err = c.Members(ctx)
	case "add":
		if len(pos) != 2 {
			return fmt.Errorf("%w: members add ID ADDR [--learner] [--force]", errUsage)
		}
		id, perr := strconv.ParseUint(pos[0], 10, 64)
		if perr != nil || id == 0 {
			return fmt.Errorf("%w: ID %q is not a positive integer", errUsage, pos[0])
		}
		if !learner {
			warnQuorum(ctx, c, stderr, id, +1)
		}
		members, err = c.AddMember(ctx, admin.AddMemberRequest{ID: id, Addr: pos[1], Learner: learner, Force: force})
	case "remove":
		if len(pos) != 1 {
			return fmt.Errorf("%w: members remove ID", errUsage)
		}
		id, perr := strconv.ParseUint(pos[0], 10, 64)
		if perr != nil || id == 0 {
			return fmt.Errorf("%w: ID %q is not a positive integer", errUsage, pos[0])
		}
		warnQuorum(ctx, c, stderr, id, -1)
		members, err = c.RemoveMember(ctx, id)
	default:
		return fmt.Errorf("%w: unknown members command %q (list, add, remove)", errUsage, sub)
	}
	if err != nil {
		return unauthorizedHint(err)
	}
	if format == outputJSON {
		return writeJSON(stdout, members)
	}
	return printMembers(stdout, members)
}

// warnQuorum prints what a membership change does to the voters' quorum
// (quorumWarnings), from the current membership. change is +1 to add id as a
// voter, -1 to remove it. Nothing is printed if the membership cannot be read:
// the change itself will say why.
func warnQuorum(ctx context.Context, c *admin.Client, w io.Writer, id uint64, change int) {
	members, err := c.Members(ctx)
	if err != nil {
		return
	}
	voters, isVoter, isLearner := 0, false, false
	for _, m := range members {
		if m.Voter {
			voters++
			isVoter = isVoter || m.ID == id
		} else if m.ID == id {
			isLearner = true
		}
	}
	after := voters
	switch {
	case change > 0 && !isVoter:
		after++
	case change < 0 && isVoter:
		after--
	}
	for _, warning := range quorumWarnings(voters, after, isLearner) {
		fmt.Fprintln(w, "warning:", warning)
	}
}

// quorumWarnings says what going from before to after voters means for the
// failures the cluster tolerates; fromLearner says the new voter is a learner
// being promoted (it has its log already). Pure.
func quorumWarnings(before, after int, fromLearner bool) []string {
	if after == before || after < 1 {
		return nil
	}
	tolerated := func(n int) int { return (n - 1) / 2 }
	var out []string
	switch {
	case after == 1:
		out = append(out, "with 1 voter the cluster tolerates no failure of a proxy voter")
	case after%2 == 0:
		out = append(out, fmt.Sprintf("%d voters need %d for a quorum and tolerate %d failure(s), no more than %d voters: "+
			"keep an odd number of voters (add or remove one more)", after, after/2+1, tolerated(after), after-1))
	}
	if after > before && !fromLearner {
		out = append(out, fmt.Sprintf("the new voter is not a learner that caught up: until it has the log, the quorum of %d "+
			"counts a member that cannot acknowledge (safer: members add ID ADDR --learner, wait, then add it again without --learner)", after/2+1))
	}
	if after < before && tolerated(after) < tolerated(before) {
		out = append(out, fmt.Sprintf("the cluster will tolerate %d voter failure(s) instead of %d", tolerated(after), tolerated(before)))
	}
	return out
}

func printMembers(w io.Writer, members []admin.MemberView) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "PROXY\tRAFT ADDRESS\tROLE\tREACHABLE")
	for _, m := range members {
		role := "learner"
		if m.Voter {
			role = "voter"
		}
		if m.Leader {
			role = "leader"
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%v\n", m.ID, m.Addr, role, m.Reachable)
	}
	return tw.Flush()
}
