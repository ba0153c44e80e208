package main

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/pgquorum/pgquorum/admin"
	"github.com/pgquorum/pgquorum/consensus/clusterstate"
	"github.com/pgquorum/pgquorum/health"
)

// staleObservation is how old the latest observation of a node may be before
// `list` stops showing its figures: voters refresh theirs every few seconds,
// so an older one means no proxy has been able to read the node since.
const staleObservation = 30 * time.Second

// nodeRow is one line of the node table of `pgquorum list`.
type nodeRow struct {
	name, address, role, state, timeline, lsn, lag, sync string
}

// nodeRows describes each PostgreSQL node honestly: a dead node says what it
// was ("down, was primary"); figures appear only when a proxy read them
// recently (no stale timeline or LSN of a node nobody can read); a fenced
// node, on a diverged timeline, gets no lag; a standby is "streaming" only if
// the primary has a streaming walsender for it. Pure: now is the caller's
// clock.
func nodeRows(v admin.ClusterView, now time.Time) []nodeRow {
	var primaryLSN uint64
	for _, n := range v.Nodes {
		if o, ok := latestObservation(n.Observations); ok && n.Role == "primary" && o.Up && now.Sub(o.At) < staleObservation {
			primaryLSN = o.ReceiveLSN
		}
	}
	oldPrimary := ""
	if v.Failover != nil {
		oldPrimary = v.Failover.OldPrimary
	}
	var rows []nodeRow
	for _, n := range v.Nodes {
		r := nodeRow{name: n.Name, address: n.Address, role: n.Role, state: "unknown", timeline: "-", lsn: "-", lag: "-", sync: "-"}
		wasPrimary := n.Role == "fenced" || n.Role == "old primary" || n.Name == oldPrimary
		o, seen := latestObservation(n.Observations)
		switch {
		case !seen:
			r.state = "unknown (never observed)"
		case now.Sub(o.At) >= staleObservation:
			r.state = "unknown (last observed " + humanAge(now.Sub(o.At)) + " ago)"
		case !o.Up && wasPrimary:
			r.state = "down, was primary"
		case !o.Up && n.Role == "primary":
			r.state = "down (the agreed primary)"
		case !o.Up:
			r.state = "down"
		default:
			r.state = upState(v, n, o)
			if o.Timeline != 0 {
				r.timeline = strconv.FormatUint(uint64(o.Timeline), 10)
			}
			if o.ReceiveLSN != 0 {
				r.lsn = health.LSN(o.ReceiveLSN).String()
			}
			if n.Role == "standby" && o.InRecovery && primaryLSN != 0 && o.ReceiveLSN != 0 {
				r.lag = humanBytes(int64(primaryLSN) - int64(o.ReceiveLSN))
			}
		}
		if n.WalSender != nil {
			r.sync = n.WalSender.SyncState
		}
		rows = append(rows, r)
	}
	return rows
}

// upState says what a node that answers its probes is doing.
func upState(v admin.ClusterView, n admin.NodeView, o clusterstate.Observation) string {
	switch {
	case n.Role == "fenced" && o.InRecovery:
		return "standby, fenced until it rejoins"
	case n.Role == "fenced":
		return "running as a primary, fenced (never routed to)"
	case !o.InRecovery && n.Role != "primary":
		return "running as a primary, not the agreed one"
	case !o.InRecovery:
		return "running"
	case n.Role == "primary":
		return "in recovery (promotion pending)"
	case v.PrimaryProbe == nil || !v.PrimaryProbe.Reachable:
		return "in recovery" // whether it streams is told by the primary's walsenders
	case n.WalSender == nil:
		return "in recovery, not streaming"
	}
	return n.WalSender.State
}

func printCluster(w io.Writer, v admin.ClusterView, now time.Time) {
	primary := v.Primary
	if primary == "" {
		primary = "(none agreed)"
	}
	fmt.Fprintf(w, "Cluster %s   epoch %d   primary %s", v.ClusterName, v.Epoch, primary)
	if v.Paused {
		fmt.Fprint(w, "   PAUSED (no automatic failover)")
	}
	fmt.Fprintln(w)
	if v.WritesWait != "" {
		fmt.Fprintf(w, "WRITES WAIT: %s\n", strings.TrimPrefix(v.WritesWait, "writes wait: "))
	}
	switch r := v.Redundancy; {
	case r != nil && r.State == health.RedundancyWritesWait && v.WritesWait != "":
		// said just above
	case r == nil && v.Primary != "":
		fmt.Fprintf(w, "Redundancy: unknown (proxy %d has no probe of %s)\n", v.NodeID, v.Primary)
	case r != nil && r.Error != "":
		fmt.Fprintf(w, "Redundancy: unknown (%s)\n", r.Error)
	case r != nil && r.State == health.RedundancyOK:
		fmt.Fprintf(w, "Redundancy: %s\n", r.Status)
	case r != nil:
		fmt.Fprintf(w, "Redundancy: %s\n", strings.ToUpper(r.State)+strings.TrimPrefix(r.Status, r.State))
	}
	if v.Failover != nil {
		fmt.Fprintf(w, "Failover in progress: %s from %s, next step %s", v.Failover.Kind, v.Failover.OldPrimary, v.Failover.Next)
		if v.Failover.Blocked {
			fmt.Fprintf(w, " — BLOCKED: %s", v.Failover.BlockedReason)
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintln(w)

	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tADDRESS\tROLE\tSTATE\tTIMELINE\tLSN\tLAG\tSYNC")
	for _, r := range nodeRows(v, now) {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.name, r.address, r.role, r.state, r.timeline, r.lsn, r.lag, r.sync)
	}
	tw.Flush()
	fmt.Fprintln(w)

	fmt.Fprintf(w, "Raft: leader %d, term %d, commit %d (answered by proxy %d, applied %d)\n",
		v.Raft.Leader, v.Raft.Term, v.Raft.Commit, v.NodeID, v.Raft.Applied)
	printMembersSeenBy(w, v.Members, v.MembersSeenBy, v.Raft.Leader)
	if v.MembersNote != "" {
		fmt.Fprintf(w, "(%s)\n", v.MembersNote)
	}
	if !v.Routing.Routing {
		fmt.Fprintf(w, "\nProxy %d is NOT routing: %s\n", v.NodeID, v.Routing.Reason)
	}
}

// printMembersSeenBy prints the proxies with their reachability as proxy
// seenBy sees it.
func printMembersSeenBy(w io.Writer, members []admin.MemberView, seenBy, leader uint64) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	from := fmt.Sprintf("proxy %d", seenBy)
	if seenBy != 0 && seenBy == leader {
		from = "the leader"
	}
	if seenBy == 0 {
		fmt.Fprintln(tw, "PROXY\tRAFT ADDRESS\tROLE\tREACHABLE")
	} else {
		fmt.Fprintf(tw, "PROXY\tRAFT ADDRESS\tROLE\tREACHABLE (from %s)\tLAST CONTACT\n", from)
	}
	for _, m := range members {
		role := "learner"
		if m.Voter {
			role = "voter"
		}
		if m.Leader {
			role = "leader"
		}
		contact := "-"
		switch {
		case m.ID == seenBy:
		case m.LastContactMS >= 0:
			contact = humanAge(time.Duration(m.LastContactMS)*time.Millisecond) + " ago"
		default:
			contact = "never"
		}
		if seenBy == 0 {
			fmt.Fprintf(tw, "%d\t%s\t%s\t%v\n", m.ID, m.Addr, role, m.Reachable)
		} else {
			fmt.Fprintf(tw, "%d\t%s\t%s\t%v\t%s\n", m.ID, m.Addr, role, m.Reachable, contact)
		}
	}
	return tw.Flush()
}

// humanAge rounds d for people: 850ms, 12s, 3m20s, 2h5m.
func humanAge(d time.Duration) string {
	switch {
	case d < time.Second:
		return d.Round(time.Millisecond).String()
	case d < time.Hour:
		s := d.Round(time.Second).String()
		if strings.HasSuffix(s, "m0s") {
			s = strings.TrimSuffix(s, "0s")
		}
		return s
	}
	return strings.TrimSuffix(d.Round(time.Minute).String(), "0s")
}
