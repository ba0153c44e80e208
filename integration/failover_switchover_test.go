package integration

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/pgquorum/pgquorum/admin"
	"github.com/pgquorum/pgquorum/consensus/clusterstate"
	"github.com/pgquorum/pgquorum/localcluster"
	"github.com/pgquorum/pgquorum/rejoin"
)

// TestSwitchoverChainUnderLoad performs planned switchovers under a write load
// with zero acknowledged loss: pg1 -> pg2, then pg2 -> pg3. A switchover fences
// the old primary until `pgquorum rejoin` has rewound it, so "back to pg1" is
// refused; the second switchover moves on to the third node instead.
func TestSwitchoverChainUnderLoad(t *testing.T) {
	pg := StartCluster(t, localcluster.Options{})
	proxies := startFailoverProxies(t, pg, failoverProxyOptions())
	ctx, cancel := context.WithTimeout(t.Context(), 2*failoverStepTimeout)
	defer cancel()
	writeLoadTable(ctx, t, pg.Node("pg1"), "switchover")
	load := startWriteLoad(t, "switchover", proxies.Proxies, loadOptions{Writers: 2 * len(proxies.Proxies), Pace: writePace})
	if err := load.WaitAcks(ctx, 100); err != nil {
		t.Fatal(err)
	}

	switchover(ctx, t, pg, proxies, load, proxies.Proxies[0], "pg1", "pg2", 2)
	// pg3 follows pg2 in its quorum; pg1 is read-only and fenced.
	checkQuorumStandby(ctx, t, pg.Node("pg2"), pg.Node("pg3"))
	readOnly, err := pg.Node("pg1").QueryString(ctx, "SHOW default_transaction_read_only")
	if err != nil {
		t.Fatal(err)
	}
	if readOnly != "on" {
		t.Errorf("the old primary pg1 has default_transaction_read_only = %s after the switchover, want on", readOnly)
	}

	// Back to pg1 is refused until it has rejoined.
	client := proxies.Proxies[1].Client()
	client.HTTP.Timeout = time.Minute
	_, err = client.Switchover(ctx, "pg1")
	var apiErr *admin.APIError
	if !errors.As(err, &apiErr) || apiErr.Status != http.StatusBadRequest {
		t.Fatalf("switchover back to the fenced pg1: got %v, want a 400 answer", err)
	}
	t.Logf("switchover back to pg1 refused: %v", err)

	// pg1 rejoins as a standby: without it, pg3 would have no standby after the
	// next switchover and its commits would wait (SPEC §4: synchronous
	// replication is never switched off).
	if _, err := rejoin.Run(ctx, rejoinOptions(t, proxies.Proxies[1], pg.Node("pg1"), false)); err != nil {
		t.Fatalf("rejoin pg1: %v", err)
	}
	requireRejoined(ctx, t, pg, proxies, pg.Node("pg1"), "pg2")

	switchover(ctx, t, pg, proxies, load, proxies.Proxies[2], "pg2", "pg3", 3)
	checkQuorumStandby(ctx, t, pg.Node("pg3"), pg.Node("pg1"))
	if err := load.WaitAcks(ctx, 100); err != nil {
		t.Fatal(err)
	}
	load.Stop()
	t.Logf("write load: %s", load.Summary())
	rows := verifyAcked(ctx, t, pg.Node("pg3"), "switchover", load.Acks())
	t.Logf("pg3 holds %d rows for %d acknowledged inserts", rows, len(load.Acks()))
	checkOnlyPrimary(ctx, t, pg, "pg3", "pg1", "pg2")
	for _, p := range proxies.Proxies {
		v, err := p.Cluster(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(v.Fenced, []string{"pg2"}) {
			t.Errorf("proxy %d: fenced %v, want pg2 (pg1 rejoined)", p.ID, v.Fenced)
		}
	}
}

// switchover asks proxy via to switch from the primary from to the standby to,
// checks the outcome and every proxy's view, and that writes resume on to: no
// insert sent after every proxy agreed is acknowledged by from.
func switchover(ctx context.Context, t *testing.T, pg *localcluster.Cluster, proxies *ProxyCluster, load *writeLoad,
	via *ProxyProcess, from, to string, epoch uint64) {
	t.Helper()
	client := via.Client()
	client.HTTP.Timeout = time.Minute
	startedAt := time.Now()
	h, err := client.Switchover(ctx, to)
	if err != nil {
		t.Fatalf("switchover %s -> %s: %v", from, to, err)
	}
	took := time.Since(startedAt)
	if h.Kind != clusterstate.KindSwitchover || h.Outcome != clusterstate.OutcomeCompleted || h.OldPrimary != from ||
		h.NewPrimary != to || h.Epoch != epoch {
		t.Fatalf("switchover %s -> %s: history entry %+v", from, to, h)
	}
	checkSteps(t, h, clusterstate.StepDemoteOldPrimary, clusterstate.StepFreeze, clusterstate.StepChooseCandidate,
		clusterstate.StepPromote, clusterstate.StepRepoint)
	if got := waitNewPrimary(ctx, t, proxies.Proxies, from, epoch); got != to {
		t.Fatalf("proxies agree on %s after a switchover to %s", got, to)
	}
	agreedAt := time.Now()
	target := pg.Node(to)
	first, err := load.WaitAck(ctx, startedAt, target.Port)
	if err != nil {
		t.Fatal(err)
	}
	if err := load.WaitAcks(ctx, 50); err != nil {
		t.Fatal(err)
	}
	old := pg.Node(from)
	for _, a := range load.Acks() {
		if a.Port == old.Port && a.SentAt.After(agreedAt) {
			t.Errorf("insert %d sent after every proxy agreed on %s was acknowledged by %s", a.ID, to, from)
		}
	}
	t.Logf("switchover %s -> %s answered in %v; first write on %s acknowledged %v after the request; longest gap between acknowledged writes %v",
		from, to, took.Round(time.Millisecond), to, first.At.Sub(startedAt).Round(time.Millisecond), longestAckGap(load.Acks(), startedAt).Round(time.Millisecond))
	logSteps(t, h, startedAt, "request")
}

// longestAckGap is the longest time without an acknowledged insert after since.
func longestAckGap(acks []ack, since time.Time) time.Duration {
	times := []time.Time{since}
	for _, a := range acks {
		if a.At.After(since) {
			times = append(times, a.At)
		}
	}
	slices.SortFunc(times, func(a, b time.Time) int { return a.Compare(b) })
	var longest time.Duration
	for i := 1; i < len(times); i++ {
		longest = max(longest, times[i].Sub(times[i-1]))
	}
	return longest
}
