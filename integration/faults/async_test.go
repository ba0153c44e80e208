package faults

import (
	"context"
	"io"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/pgquorum/pgquorum/admin"
	"github.com/pgquorum/pgquorum/consensus/clusterstate"
)

// testTwoFailuresNeverAsync is the second hole of issue 10, as a regression
// test: the primary is killed, then the new primary too. The third node is
// promoted with no standby left, and pgquorum must not switch synchronous
// replication off: its synchronous_standby_names still names the two lost
// nodes, so writes wait (and say so loudly in /cluster, pgquorum list and
// /metrics) while reads keep working, until a node rejoins. Then every write
// acknowledged through it all is on two nodes.
func testTwoFailuresNeverAsync(t *testing.T, s *suite) {
	ctx, cancel := context.WithTimeout(t.Context(), 3*stepTimeout)
	defer cancel()
	first := s.pg.Node(s.primary)
	w := s.startLoad(t)

	if err := killPostgres(w, first); err != nil {
		t.Fatal(err)
	}
	second := s.pg.Node(s.waitFailover(t, first.Name))
	if err := w.WaitAcks(ctx, 30); err != nil {
		t.Fatal(err)
	}
	if err := killPostgres(w, second); err != nil {
		t.Fatal(err)
	}
	third := s.pg.Node(s.waitFailover(t, second.Name))
	h := s.completed(t, s.running()[0])
	promote := stepDetail(h, clusterstate.StepPromote)
	t.Logf("%s and then %s killed: %s promoted: %s", first.Name, second.Name, third.Name, promote)
	names, err := third.QueryString(ctx, "SHOW synchronous_standby_names")
	if err != nil {
		t.Fatal(err)
	}
	if want := `ANY 1 ("` + min(first.Name, second.Name) + `", "` + max(first.Name, second.Name) + `")`; names != want {
		t.Fatalf("%s's synchronous_standby_names = %q, want %q (never empty)", third.Name, names, want)
	}
	if !strings.Contains(promote, "writes wait") {
		t.Errorf("the promote step does not record that writes wait: %q", promote)
	}

	// Loudly: every proxy's /cluster, pgquorum list, and the metric.
	var reason string
	for _, p := range s.running() {
		if err := p.WaitCluster(ctx, "writes_wait in /cluster", func(v admin.ClusterView) bool {
			reason = v.WritesWait
			return strings.HasPrefix(v.WritesWait, "writes wait: no synchronous standby")
		}); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("/cluster: %s", reason)
	p := s.running()[0]
	list, err := exec.CommandContext(ctx, failpointBinary(t), "list", "--admin", p.Admin).CombinedOutput()
	if err != nil || !strings.Contains(string(list), "WRITES WAIT: no synchronous standby") {
		t.Errorf("pgquorum list does not say that writes wait (%v):\n%s", err, list)
	}
	metric := ""
	for _, line := range strings.Split(scrape(ctx, t, "http://"+p.Admin+"/metrics"), "\n") {
		if strings.HasPrefix(line, "pgquorum_writes_wait_for_standby") {
			metric = line
		}
	}
	if metric != "pgquorum_writes_wait_for_standby 1" {
		t.Errorf("/metrics: %q, want pgquorum_writes_wait_for_standby 1 (the reason is in /cluster, not in a label)", metric)
	}

	// Writes are held, reads work.
	since := w.History.Now()
	time.Sleep(1500 * time.Millisecond) // a window to watch what the clients get; nothing to await
	var reads, writes int
	for _, op := range w.History.Ops() {
		if op.Outcome == Ok && op.Port == third.Port && op.Call >= since {
			if op.Write {
				writes++
			} else {
				reads++
			}
		}
	}
	t.Logf("while writes wait: %d reads and %d writes answered by %s in 1.5 s", reads, writes, third.Name)
	if reads == 0 || writes != 0 {
		t.Errorf("while no synchronous standby streams: %d reads, %d writes acknowledged; want reads only", reads, writes)
	}

	// A node rejoins: the held commits complete, writes flow again.
	s.rejoin(t, first.Name)
	if err := w.WaitAcks(ctx, 30); err != nil {
		t.Fatal(err)
	}
	for _, p := range s.running() {
		if err := p.WaitCluster(ctx, "no writes_wait in /cluster", func(v admin.ClusterView) bool { return v.WritesWait == "" }); err != nil {
			t.Fatal(err)
		}
	}
	s.finishLoad(t, w, third, first)
	s.rejoin(t, second.Name)
}

// scrape returns the body of GET url.
func scrape(ctx context.Context, t *testing.T, url string) string {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(body)
}
