package integration

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pgquorum/pgquorum/localcluster"
	"github.com/pgquorum/pgquorum/testenv"
)

// TestAgentBringsKilledPrimaryBack runs `pgquorum agent` processes beside the
// three PostgreSQL nodes of a real cluster with three proxies, and no operator
// command after they start:
//
//  1. kill -9 of the primary: the proxies fail over, and the old primary's
//     agent rewinds it, starts it as a standby and has it unfenced. On the way
//     its agent is killed twice in the middle of the rewind: once with its
//     pg_rewind (a container restart), once alone (systemd's KillMode=process:
//     pg_rewind finishes as an orphan, and the restarted agent waits for it,
//     then puts the node's own configuration back);
//  2. kill -9 of the new primary, with nothing in the way: the figure of the
//     closing note, kill -9 to "streaming again, back in the quorum set".
//
// No acknowledged insert is lost, and the agents stop cleanly on SIGTERM.
func TestAgentBringsKilledPrimaryBack(t *testing.T) {
	pg := StartCluster(t, localcluster.Options{})
	proxies := StartProxies(t, pg, rejoinProxyOptions)
	ctx, cancel := context.WithTimeout(t.Context(), 8*time.Minute)
	defer cancel()
	gate := newRewindGate(t)
	agents := startAgents(t, pg, proxies, gate.binDir)
	for _, a := range agents {
		a.waitLog(ctx, t, "prerequisites checked", 1)
	}
	execThrough(ctx, t, proxies.Proxies[0], "CREATE TABLE rejoin_acked (id int PRIMARY KEY, cycle int NOT NULL)")
	acked := insertAcked(ctx, t, proxies.Proxies[0], 1, 0, 20, nil)
	t.Logf("pgquorum list before the kill:\n%s", pgquorumList(ctx, t, proxies))

	// 1. Kill the primary; kill its agent twice in the middle of the rewind.
	old := pg.Nodes[0]
	agent := agents[old.Name]
	gate.hold()
	if err := old.Kill(); err != nil {
		t.Fatal(err)
	}
	killedAt := time.Now()
	newPrimary := waitFailoverAway(ctx, t, proxies, 1, old.Name)
	t.Logf("%s killed; %s is the primary after %v", old.Name, newPrimary, time.Since(killedAt).Round(time.Millisecond))
	acked = insertAcked(ctx, t, proxies.Proxies[1], 1, len(acked), 10, acked)
	t.Logf("pgquorum list after the failover:\n%s", pgquorumList(ctx, t, proxies))

	first := gate.waitStarted(ctx, t, 1)
	agent.kill(t)
	gate.killGroup(t, first) // the container restart: pg_rewind dies with the agent
	if state := controlState(ctx, t, old); state != "in production" {
		t.Fatalf("after the interrupted rewind %s's control file says %q, want it untouched (in production)", old.Name, state)
	}
	agent.start(t)
	second := gate.waitStarted(ctx, t, 2)
	agent.kill(t) // systemd: the agent dies, its pg_rewind does not
	busyBefore := agent.logCount("still work in the data directory")
	agent.start(t)
	agent.waitLog(ctx, t, "still work in the data directory", busyBefore+1)
	if !processAlive(second) {
		t.Fatalf("the orphaned pg_rewind (pid %d) is gone before it was let through", second)
	}
	gate.release()
	rejoined := waitBackInQuorum(ctx, t, pg, proxies, old, newPrimary)
	t.Logf("%s back in the quorum set %v after its kill -9, with two agent crashes and %v held at the gate (streaming at +%v, unfenced at +%v)",
		old.Name, rejoined.quorum.Sub(killedAt).Round(time.Millisecond), gate.heldFor().Round(time.Millisecond),
		rejoined.streaming.Sub(killedAt).Round(time.Millisecond), rejoined.unfenced.Sub(killedAt).Round(time.Millisecond))
	if port := settingPort(ctx, t, old); port != old.Port {
		t.Fatalf("%s listens on port %d after the rewind, want its own %d (the primary's configuration was left in place)", old.Name, port, old.Port)
	}
	requireRejoined(ctx, t, pg, proxies, old, newPrimary)
	t.Logf("pgquorum list after the agent's rejoin:\n%s", pgquorumList(ctx, t, proxies))

	// 2. Kill the new primary; nothing in the way.
	acked = insertAcked(ctx, t, proxies.Proxies[2], 2, len(acked), 10, acked)
	before, err := proxies.Proxies[0].Cluster(ctx)
	if err != nil {
		t.Fatal(err)
	}
	second2 := pg.Node(newPrimary)
	if err := second2.Kill(); err != nil {
		t.Fatal(err)
	}
	killedAt = time.Now()
	third := waitFailoverAway(ctx, t, proxies, before.Epoch, second2.Name)
	failedOver := time.Since(killedAt)
	rejoined = waitBackInQuorum(ctx, t, pg, proxies, second2, third)
	t.Logf("FIGURE: %s killed -9; failover to %s after %v; streaming again at +%v, unfenced at +%v, back in the quorum set at +%v",
		second2.Name, third, failedOver.Round(time.Millisecond), rejoined.streaming.Sub(killedAt).Round(time.Millisecond),
		rejoined.unfenced.Sub(killedAt).Round(time.Millisecond), rejoined.quorum.Sub(killedAt).Round(time.Millisecond))
	requireRejoined(ctx, t, pg, proxies, second2, third)
	t.Logf("pgquorum list at the end:\n%s", pgquorumList(ctx, t, proxies))
	requireAcked(ctx, t, pg.Node(third), acked)

	for _, name := range slices.Sorted(maps.Keys(agents)) {
		if code := agents[name].stop(t); code != 0 {
			t.Errorf("agent of %s exited with %d on SIGTERM, want 0", name, code)
		}
	}
	for _, n := range pg.Nodes {
		if _, err := n.QueryString(ctx, "SELECT 1"); err != nil {
			t.Errorf("%s does not answer after its agent stopped (the agent must leave PostgreSQL running): %v", n.Name, err)
		}
	}
}

// rejoinTimes are when a node was seen streaming from the primary, unfenced on
// every proxy, and a quorum standby of the primary.
type rejoinTimes struct{ streaming, unfenced, quorum time.Time }

func waitBackInQuorum(ctx context.Context, t *testing.T, pg *localcluster.Cluster, proxies *ProxyCluster, node *localcluster.Node, primary string) rejoinTimes {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	var times rejoinTimes
	for times.quorum.IsZero() {
		replicas, _ := pg.Node(primary).Replicas(ctx)
		i := slices.IndexFunc(replicas, func(r localcluster.Replica) bool { return r.Name == node.Name && r.State == "streaming" })
		if i >= 0 && times.streaming.IsZero() {
			times.streaming = time.Now()
		}
		if times.unfenced.IsZero() {
			unfenced := true
			for _, p := range proxies.Proxies {
				v, err := p.Cluster(ctx)
				if err != nil || v.Primary != primary || slices.Contains(v.Fenced, node.Name) {
					unfenced = false
					break
				}
			}
			if unfenced {
				times.unfenced = time.Now()
			}
		}
		if i >= 0 && replicas[i].SyncState == "quorum" && !times.unfenced.IsZero() {
			times.quorum = time.Now()
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s is not back in the quorum set of %s: %v (seen streaming %v, unfenced %v; pg_stat_replication %+v)",
				node.Name, primary, ctx.Err(), !times.streaming.IsZero(), !times.unfenced.IsZero(), replicas)
		case <-time.After(50 * time.Millisecond):
		}
	}
	return times
}

// agentProcess is one `pgquorum agent` process of the test.
type agentProcess struct {
	node string
	args []string
	log  string
	bin  string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
	code int
}

// startAgents starts an agent beside every node, all using binDir for the
// PostgreSQL programs, and stops them (before the cluster) when the test ends.
func startAgents(t *testing.T, pg *localcluster.Cluster, proxies *ProxyCluster, binDir string) map[string]*agentProcess {
	t.Helper()
	var admins []string
	for _, p := range proxies.Proxies {
		admins = append(admins, p.Admin)
	}
	dir := t.TempDir()
	agents := map[string]*agentProcess{}
	for _, n := range pg.Nodes {
		a := &agentProcess{node: n.Name, bin: PgquorumBinary(t), log: filepath.Join(dir, "agent-"+n.Name+".log"),
			args: []string{"agent", "--pgdata", n.DataDir, "--admin", strings.Join(admins, ","), "--token-file", proxies.TokenFile, "--sslmode", "disable",
				"--bin-dir", binDir, "--log", n.LogFile, "--interval", "500ms", "--primary-start-delay", "30s", "--stream-timeout", "30s"}}
		agents[n.Name] = a
		a.start(t)
	}
	t.Cleanup(func() {
		for _, a := range agents {
			a.kill(t)
		}
		if t.Failed() || testing.Verbose() {
			for _, name := range slices.Sorted(maps.Keys(agents)) {
				t.Logf("--- agent of %s (last lines):\n%s", name, lastLines(agents[name].log, 60))
			}
		}
	})
	return agents
}

func (a *agentProcess) start(t *testing.T) {
	t.Helper()
	a.mu.Lock()
	defer a.mu.Unlock()
	logFile, err := os.OpenFile(a.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close()
	fmt.Fprintf(logFile, "--- test: agent started at %s\n", time.Now().Format(time.RFC3339Nano))
	cmd := exec.Command(a.bin, a.args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		t.Fatalf("start the agent of %s: %v", a.node, err)
	}
	a.cmd, a.done, a.code = cmd, make(chan struct{}), -1
	done := a.done
	go func() {
		err := cmd.Wait()
		code := 0
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			code = exit.ExitCode()
		}
		a.mu.Lock()
		a.code = code
		a.mu.Unlock()
		close(done)
	}()
}

// kill sends SIGKILL to the agent alone (not to what it started) and waits.
func (a *agentProcess) kill(t *testing.T) {
	a.signalAndWait(syscall.SIGKILL)
}

// stop sends SIGTERM and returns the exit code.
func (a *agentProcess) stop(t *testing.T) int {
	return a.signalAndWait(syscall.SIGTERM)
}

func (a *agentProcess) signalAndWait(sig syscall.Signal) int {
	a.mu.Lock()
	cmd, done := a.cmd, a.done
	a.mu.Unlock()
	if cmd == nil {
		return -1
	}
	_ = cmd.Process.Signal(sig)
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		<-done
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.code
}

// logCount counts text in the agent's log.
func (a *agentProcess) logCount(text string) int {
	data, _ := os.ReadFile(a.log)
	return strings.Count(string(data), text)
}

// waitLog waits until the agent's log holds text at least n times.
func (a *agentProcess) waitLog(ctx context.Context, t *testing.T, text string, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	for {
		if a.logCount(text) >= n {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("the agent of %s never logged %q (%d times): %v\n%s", a.node, text, n, ctx.Err(), lastLines(a.log, 30))
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// rewindGate is a bin directory whose pg_rewind waits at a gate before it runs
// the real one, so that the test can kill agents in the middle of a rewind.
// The other programs are links to the real ones.
type rewindGate struct {
	binDir  string
	dir     string // gate files: hold (present = wait), started.<pid>
	heldAt  time.Time
	opened  time.Time
	started []int
}

func newRewindGate(t *testing.T) *rewindGate {
	t.Helper()
	real, err := localcluster.FindBinDir("")
	if err != nil {
		t.Fatal(err)
	}
	g := &rewindGate{binDir: testenv.TempDir(t), dir: testenv.TempDir(t)}
	// The PostgreSQL programs run as the data directory's owner.
	if err := os.Chmod(g.dir, 0o777); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"pg_ctl", "pg_basebackup", "pg_controldata"} {
		if err := os.Symlink(filepath.Join(real, p), filepath.Join(g.binDir, p)); err != nil {
			t.Fatal(err)
		}
	}
	script := fmt.Sprintf(`#!/bin/sh
# pg_rewind of TestAgentBringsKilledPrimaryBack: says it started, waits while
# the gate is held, then runs the real pg_rewind (same pid, same directory).
touch %[1]s/started.$$
while [ -e %[1]s/hold ]; do sleep 0.05; done
exec %[2]s/pg_rewind "$@"
`, g.dir, real)
	if err := os.WriteFile(filepath.Join(g.binDir, "pg_rewind"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// Let a waiting pg_rewind go (or die) before the cluster is closed.
		g.release()
		for _, pid := range g.started {
			deadline := time.Now().Add(30 * time.Second)
			for processAlive(pid) && time.Now().Before(deadline) {
				time.Sleep(20 * time.Millisecond)
			}
			if processAlive(pid) {
				_ = syscall.Kill(-pid, syscall.SIGKILL)
			}
		}
	})
	return g
}

func (g *rewindGate) hold() {
	if err := os.WriteFile(filepath.Join(g.dir, "hold"), nil, 0o644); err != nil {
		panic(err)
	}
	g.heldAt = time.Now()
}

func (g *rewindGate) release() {
	if err := os.Remove(filepath.Join(g.dir, "hold")); err == nil {
		g.opened = time.Now()
	}
}

func (g *rewindGate) heldFor() time.Duration { return g.opened.Sub(g.heldAt) }

// waitStarted waits until n pg_rewinds have reached the gate and returns the pid of the nth.
func (g *rewindGate) waitStarted(ctx context.Context, t *testing.T, n int) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	for {
		files, _ := filepath.Glob(filepath.Join(g.dir, "started.*"))
		if len(files) >= n {
			var pids []int
			for _, f := range files {
				if pid, err := strconv.Atoi(strings.TrimPrefix(filepath.Ext(f), ".")); err == nil {
					pids = append(pids, pid)
				}
			}
			for _, pid := range pids {
				if !slices.Contains(g.started, pid) {
					g.started = append(g.started, pid)
				}
			}
			return g.started[n-1]
		}
		select {
		case <-ctx.Done():
			t.Fatalf("pg_rewind #%d never started: %v", n, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// killGroup kills a gated pg_rewind with its process group (it runs in its own).
func (g *rewindGate) killGroup(t *testing.T, pid int) {
	t.Helper()
	if err := syscall.Kill(-pid, syscall.SIGKILL); err != nil {
		t.Fatalf("kill the process group of pg_rewind %d: %v", pid, err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for processAlive(pid) {
		if time.Now().After(deadline) {
			t.Fatalf("pg_rewind %d survived SIGKILL", pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// processAlive reports whether pid runs (a zombie does not).
func processAlive(pid int) bool {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(data)
	i := strings.LastIndexByte(s, ')')
	return i >= 0 && i+2 < len(s) && s[i+2] != 'Z' && s[i+2] != 'X'
}

// controlState is pg_controldata's "Database cluster state" of a stopped node.
func controlState(ctx context.Context, t *testing.T, n *localcluster.Node) string {
	t.Helper()
	binDir, err := localcluster.FindBinDir("")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(ctx, filepath.Join(binDir, "pg_controldata"), "--pgdata", n.DataDir)
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("pg_controldata %s: %v\n%s", n.DataDir, err, out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "Database cluster state" {
			return strings.TrimSpace(v)
		}
	}
	t.Fatalf("no cluster state in:\n%s", out)
	return ""
}

// settingPort is the port the running node reports.
func settingPort(ctx context.Context, t *testing.T, n *localcluster.Node) int {
	t.Helper()
	v, err := n.QueryString(ctx, "SHOW port")
	if err != nil {
		t.Fatal(err)
	}
	port, err := strconv.Atoi(v)
	if err != nil {
		t.Fatal(err)
	}
	return port
}

// pgquorumList runs `pgquorum list` against the first proxy and returns what
// it printed (with its exit status when that is not 0).
func pgquorumList(ctx context.Context, t *testing.T, proxies *ProxyCluster) string {
	t.Helper()
	out, err := exec.CommandContext(ctx, proxies.BinaryPath(), "list", "--admin", proxies.Proxies[0].Admin).CombinedOutput()
	if len(out) == 0 {
		t.Fatalf("pgquorum list printed nothing: %v", err)
	}
	if err != nil {
		return fmt.Sprintf("%s(exit: %v)", out, err)
	}
	return string(out)
}
