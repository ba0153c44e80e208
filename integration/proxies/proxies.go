// Package proxies runs pgquorum proxy processes (`pgquorum run`) on loopback in
// front of a localcluster, for end-to-end tests: one process per proxy, each with
// its own YAML file, data directory and log, started and killed by the test.
// The integration tests and the fault-injection suite (integration/faults) share it.
package proxies

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
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

	"github.com/pgquorum/pgquorum/admin"
	"github.com/pgquorum/pgquorum/localcluster"
)

// Cluster is a set of pgquorum proxy processes (`pgquorum run`) on loopback in
// front of a localcluster, as an operator would run them: one process per proxy,
// each with its own YAML file and data directory. It runs secure, as production
// does: the harness makes a cluster CA with `pgquorum cert` (mutual TLS between
// the proxies) and an operators' token, unless Options.Insecure.
type Cluster struct {
	Proxies []*Process
	// Certs holds ca.pem, ca-key.pem, node-N.pem and an operator's client
	// certificate (client-itest-operator.pem); TokenFile the operators' token.
	Certs     string
	TokenFile string
	Token     string
	binary    string
	dir       string
	opts      Options
	pwFile    string
	peers     string // the voters of the first start, as YAML list items
	backend   string // the PostgreSQL nodes, as YAML list items
}

// Process is one `pgquorum run` process.
type Process struct {
	ID         uint64
	ConfigPath string
	LogPath    string
	DataDir    string // node.data_dir: the Raft log
	Postgres   string // client address
	Admin      string // admin API address
	Raft       string
	// Admin API credentials as an operator has them.
	adminOptions admin.ClientOptions
	attr         *syscall.SysProcAttr

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

// Options tune the proxies' configuration.
type Options struct {
	Proxies     int    // default 3
	AuthMethod  string // default scram-sha-256
	HoldTimeout string // default 30s
	Extra       string // extra YAML appended to every config
	// Insecure runs with security.insecure: true (no peer TLS, no token), for
	// tests about that mode only.
	Insecure bool
	// AdminHTTPS serves every admin API over HTTPS with the node's
	// certificate, accepting the operator's client certificate.
	AdminHTTPS bool
	// WithoutToken lists proxies configured without admin.token_file (they
	// need AdminHTTPS: only an operator certificate can authorize them).
	WithoutToken []uint64
	// Binary is the pgquorum program to run; default Binary.
	Binary string
	// LogLevel is log.level of every proxy; default debug.
	LogLevel string
	// Env is added to each process's environment.
	Env []string
	// SysProcAttr, when set, gives the process attributes of proxy id (for
	// example its own group id, so that firewall rules can tell proxies apart).
	SysProcAttr func(id uint64) *syscall.SysProcAttr
}

// operatorName is the harness's operator client certificate.
const operatorName = "itest-operator"

var buildOnce struct {
	sync.Once
	path string
	err  error
}

// Binary builds cmd/pgquorum once per test binary and returns its path.
func Binary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "pgquorum-test-bin-")
		if err != nil {
			buildOnce.err = err
			return
		}
		buildOnce.path = filepath.Join(dir, "pgquorum")
		out, err := exec.Command("go", "build", "-o", buildOnce.path, "github.com/pgquorum/pgquorum/cmd/pgquorum").CombinedOutput()
		if err != nil {
			buildOnce.err = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildOnce.err != nil {
		t.Fatal(buildOnce.err)
	}
	return buildOnce.path
}

// Start starts the proxy processes in front of pg and waits until every
// one routes to the agreed primary. They are killed when the test ends.
func Start(t testing.TB, pg *localcluster.Cluster, opts Options) *Cluster {
	t.Helper()
	if opts.Proxies == 0 {
		opts.Proxies = 3
	}
	if opts.AuthMethod == "" {
		opts.AuthMethod = "scram-sha-256"
	}
	if opts.HoldTimeout == "" {
		opts.HoldTimeout = "30s"
	}
	if opts.Binary == "" {
		opts.Binary = Binary(t)
	}
	if opts.LogLevel == "" {
		opts.LogLevel = "debug"
	}
	pc := &Cluster{binary: opts.Binary, dir: t.TempDir(), opts: opts}
	pc.pwFile = filepath.Join(pc.dir, "query-password")
	if err := os.WriteFile(pc.pwFile, []byte(localcluster.QueryPassword), 0o600); err != nil {
		t.Fatal(err)
	}
	if !opts.Insecure {
		pc.makeSecrets(t, opts.Proxies)
	}
	var peers strings.Builder
	for i := 1; i <= opts.Proxies; i++ {
		p := pc.newProcess(t, uint64(i))
		fmt.Fprintf(&peers, "  - {id: %d, raft: %q}\n", p.ID, p.Raft)
		pc.Proxies = append(pc.Proxies, p)
	}
	pc.peers = peers.String()
	var backends strings.Builder
	for _, n := range pg.Nodes {
		fmt.Fprintf(&backends, "  - {name: %s, address: %q}\n", n.Name, n.Address())
	}
	pc.backend = backends.String()
	for _, p := range pc.Proxies {
		if err := pc.writeConfig(t, p, true); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		for _, p := range pc.Proxies {
			p.Kill()
		}
		if t.Failed() {
			for _, p := range pc.Proxies {
				t.Logf("--- proxy %d log (last lines):\n%s", p.ID, lastLines(p.LogPath, 40))
			}
		}
	})
	for _, p := range pc.Proxies {
		if err := pc.Start(p); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for _, p := range pc.Proxies {
		if err := p.WaitRouting(ctx); err != nil {
			t.Fatal(err)
		}
	}
	return pc
}

// BinaryPath is the pgquorum program the proxies run.
func (pc *Cluster) BinaryPath() string { return pc.binary }

// newProcess allocates the addresses and paths of proxy id (not started).
func (pc *Cluster) newProcess(t testing.TB, id uint64) *Process {
	p := &Process{ID: id, Postgres: FreeAddr(t), Admin: FreeAddr(t), Raft: FreeAddr(t),
		DataDir:    filepath.Join(pc.dir, fmt.Sprintf("data-%d", id)),
		ConfigPath: filepath.Join(pc.dir, fmt.Sprintf("proxy-%d.yaml", id)),
		LogPath:    filepath.Join(pc.dir, fmt.Sprintf("proxy-%d.log", id))}
	if pc.opts.SysProcAttr != nil {
		p.attr = pc.opts.SysProcAttr(id)
	}
	return p
}

// writeConfig writes p's YAML file: the first start's voters as peers, every
// PostgreSQL node as a backend, and the security settings.
func (pc *Cluster) writeConfig(t testing.TB, p *Process, voter bool) error {
	yaml := fmt.Sprintf(`cluster_name: itest
node: {id: %d, data_dir: %q, voter: %t}
listen: {postgres: %q, admin: %q, raft: %q}
peers:
%sbackends:
%sauth: {method: %s, query_user: %s, query_password_file: %q}
hold: {timeout: %s}
log: {level: %s}
%s%s`, p.ID, p.DataDir, voter, p.Postgres, p.Admin, p.Raft,
		pc.peers, pc.backend, pc.opts.AuthMethod, localcluster.QueryUser, pc.pwFile, pc.opts.HoldTimeout, pc.opts.LogLevel,
		pc.securityYAML(t, p, pc.opts), pc.opts.Extra)
	return os.WriteFile(p.ConfigPath, []byte(yaml), 0o600)
}

// AddNode configures, starts and returns a new proxy id with node.voter:
// false and an empty data directory. With a learner certificate it joins the
// running cluster by itself, as a sidecar; with a voter certificate (voter
// true) the operator adds it with `pgquorum members add ID ADDR`, which makes
// it a voter (docs/operations.md, Membership). It is killed when the test
// ends, like the others.
func (pc *Cluster) AddNode(t testing.TB, id uint64, voter bool) *Process {
	t.Helper()
	p := pc.newProcess(t, id)
	if pc.Certs != "" {
		args := []string{"--id", strconv.FormatUint(id, 10), "--hosts", "127.0.0.1,localhost"}
		if !voter {
			args = append(args, "--learner")
		}
		pc.Cert(t, "node", args...)
	}
	if err := pc.writeConfig(t, p, false); err != nil {
		t.Fatal(err)
	}
	pc.Proxies = append(pc.Proxies, p) // killed by Start's cleanup
	if err := pc.Start(p); err != nil {
		t.Fatal(err)
	}
	return p
}

// Proxy returns the proxy with the given id, or nil.
func (pc *Cluster) Proxy(id uint64) *Process {
	for _, p := range pc.Proxies {
		if p.ID == id {
			return p
		}
	}
	return nil
}

// makeSecrets makes the cluster's CA, a voter certificate per proxy and an
// operator's client certificate with `pgquorum cert` (as the docs tell an
// operator to), and the operators' token.
func (pc *Cluster) makeSecrets(t testing.TB, proxies int) {
	t.Helper()
	pc.Certs = filepath.Join(pc.dir, "certs")
	ids := make([]string, proxies)
	for i := range ids {
		ids[i] = strconv.Itoa(i + 1)
	}
	pc.Cert(t, "ca", "--cluster", "itest")
	pc.Cert(t, "node", "--id", strings.Join(ids, ","), "--hosts", "127.0.0.1,localhost")
	pc.Cert(t, "client", "--name", operatorName)
	random := make([]byte, 24)
	if _, err := rand.Read(random); err != nil {
		t.Fatal(err)
	}
	pc.Token = hex.EncodeToString(random)
	pc.TokenFile = filepath.Join(pc.dir, "admin-token")
	if err := os.WriteFile(pc.TokenFile, []byte(pc.Token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
}

// Cert runs `pgquorum cert KIND --dir Certs ARGS...` (for example a learner
// certificate: Cert(t, "node", "--id", "100-119", "--learner")).
func (pc *Cluster) Cert(t testing.TB, kind string, args ...string) {
	t.Helper()
	args = append([]string{"cert", kind, "--dir", pc.Certs}, args...)
	if out, err := exec.Command(pc.binary, args...).CombinedOutput(); err != nil {
		t.Fatalf("pgquorum %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// securityYAML is p's peer_tls, admin and security configuration, and sets
// the credentials its admin client uses.
func (pc *Cluster) securityYAML(t testing.TB, p *Process, opts Options) string {
	t.Helper()
	if opts.Insecure {
		return "security: {insecure: true}\n"
	}
	node := func(suffix string) string { return filepath.Join(pc.Certs, fmt.Sprintf("node-%d%s.pem", p.ID, suffix)) }
	yaml := fmt.Sprintf("peer_tls: {ca: %q, cert: %q, key: %q}\n", filepath.Join(pc.Certs, "ca.pem"), node(""), node("-key"))
	admin := ""
	if !slices.Contains(opts.WithoutToken, p.ID) {
		admin = fmt.Sprintf("token_file: %q", pc.TokenFile)
		p.adminOptions.Token = pc.Token
	}
	if opts.AdminHTTPS {
		if admin != "" {
			admin += ", "
		}
		admin += fmt.Sprintf("tls: {cert: %q, key: %q}", node(""), node("-key"))
		creds := adminCredentials(pc.Certs)
		o, err := creds.Options()
		if err != nil {
			t.Fatal(err)
		}
		p.adminOptions.TLS = o.TLS
	}
	return yaml + "admin: {" + admin + "}\n"
}

// adminCredentials are the operator's CA and client certificate in certs.
func adminCredentials(certs string) admin.ClientCredentials {
	return admin.ClientCredentials{
		CAFile:   filepath.Join(certs, "ca.pem"),
		CertFile: filepath.Join(certs, "client-"+operatorName+".pem"),
		KeyFile:  filepath.Join(certs, "client-"+operatorName+"-key.pem"),
	}
}

// handedOut remembers every address FreeAddr returned in this test binary: the
// probe listener is closed before the address is used, so the kernel may offer
// the same port again, and two proxies must never share one.
var handedOut struct {
	sync.Mutex
	addrs map[string]bool
}

// FreeAddr returns a free loopback address that no earlier call returned.
func FreeAddr(t testing.TB) string {
	t.Helper()
	handedOut.Lock()
	defer handedOut.Unlock()
	if handedOut.addrs == nil {
		handedOut.addrs = map[string]bool{}
	}
	for range 100 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := l.Addr().String()
		l.Close()
		if !handedOut.addrs[addr] {
			handedOut.addrs[addr] = true
			return addr
		}
	}
	t.Fatal("no fresh loopback port after 100 tries")
	return ""
}

// Start (re)starts p's process.
func (pc *Cluster) Start(p *Process) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	logFile, err := os.OpenFile(p.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	cmd := exec.Command(pc.binary, "run", "--config", p.ConfigPath)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = p.attr
	if len(pc.opts.Env) > 0 {
		cmd.Env = append(os.Environ(), pc.opts.Env...)
	}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return fmt.Errorf("start proxy %d: %w", p.ID, err)
	}
	logFile.Close()
	p.cmd = cmd
	p.done = make(chan struct{})
	done := p.done
	go func() { _ = cmd.Wait(); close(done) }()
	return nil
}

// Kill sends SIGKILL (after SIGCONT, in case it was frozen) and waits for the exit.
func (p *Process) Kill() {
	p.signal(syscall.SIGCONT)
	p.signal(syscall.SIGKILL)
	p.wait()
}

// Stop sends SIGTERM and waits (the node drains sessions and hands over leadership).
func (p *Process) Stop() {
	p.signal(syscall.SIGTERM)
	p.wait()
}

// Freeze stops the process with SIGSTOP: to its peers it is as if cut off.
func (p *Process) Freeze() { p.signal(syscall.SIGSTOP) }

// Thaw continues a frozen process.
func (p *Process) Thaw() { p.signal(syscall.SIGCONT) }

func (p *Process) signal(sig syscall.Signal) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil && p.cmd.Process != nil {
		_ = p.cmd.Process.Signal(sig)
	}
}

// Pid is the process id of the running process (0 before the first Start).
func (p *Process) Pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil || p.cmd.Process == nil {
		return 0
	}
	return p.cmd.Process.Pid
}

// Exited returns a channel closed when the process exits, and its exit
// status once it has (nil before the first Start).
func (p *Process) Exited() (<-chan struct{}, func() *os.ProcessState) {
	p.mu.Lock()
	defer p.mu.Unlock()
	cmd := p.cmd
	return p.done, func() *os.ProcessState {
		if cmd == nil {
			return nil
		}
		return cmd.ProcessState
	}
}

func (p *Process) wait() {
	p.mu.Lock()
	done := p.done
	p.mu.Unlock()
	if done != nil {
		<-done
	}
}

// Client returns an admin API client for p with the operators' credentials.
func (p *Process) Client() *admin.Client {
	o := p.adminOptions
	o.Timeout = 2 * time.Second
	return admin.NewClientWithOptions(p.Admin, o)
}

// AdminOptions are the operators' credentials for p's admin API.
func (p *Process) AdminOptions() admin.ClientOptions { return p.adminOptions }

// Cluster returns p's GET /cluster.
func (p *Process) Cluster(ctx context.Context) (admin.ClusterView, error) {
	return p.Client().Cluster(ctx)
}

// WaitRouting waits until p routes to an agreed primary.
func (p *Process) WaitRouting(ctx context.Context) error {
	return p.WaitCluster(ctx, "routing to an agreed primary", func(v admin.ClusterView) bool { return v.Routing.Routing })
}

// WaitCluster polls p's /cluster every 20ms until cond holds or ctx ends.
func (p *Process) WaitCluster(ctx context.Context, what string, cond func(admin.ClusterView) bool) error {
	var last admin.ClusterView
	var lastErr error
	for {
		v, err := p.Cluster(ctx)
		if err == nil && cond(v) {
			return nil
		}
		if err == nil {
			last = v
		}
		lastErr = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("proxy %d: waiting for %s: %w (last error %v, last view: routing=%v reason=%q leader=%d epoch=%d)",
				p.ID, what, ctx.Err(), lastErr, last.Routing.Routing, last.Routing.Reason, last.Raft.Leader, last.Epoch)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// ConnString is a libpq connection string through p as the query user.
func (p *Process) ConnString() string {
	host, port, _ := net.SplitHostPort(p.Postgres)
	return fmt.Sprintf("host=%s port=%s user=%s password=%s dbname=postgres sslmode=disable connect_timeout=10",
		host, port, localcluster.QueryUser, localcluster.QueryPassword)
}

// lastLines returns at most n last lines of the file at path (read fully: the
// logs of a test are small).
func lastLines(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(cannot read: %v)", err)
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	return strings.Join(lines[max(len(lines)-n, 0):], "\n")
}
