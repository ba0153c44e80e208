// Package benchenv holds what the benchmark programs under bench/ share:
// building the pgquorum binary, starting it and PgBouncer as child processes,
// reading a process's resident memory, and finding free ports.
//
// Benchmarks measure; they assert nothing. They print Markdown tables.
package benchenv

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/pgquorum/pgquorum/pki"
)

// FreePort returns a free loopback TCP port.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// RaiseFileLimit lifts RLIMIT_NOFILE towards n so that one process can hold
// tens of thousands of sockets; child processes inherit it. It returns the
// limit in force: without CAP_SYS_RESOURCE the hard limit cannot be raised, and
// the soft limit is set to the hard one.
func RaiseFileLimit(n uint64) (uint64, error) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, err
	}
	want := syscall.Rlimit{Cur: n, Max: max(n, lim.Max)}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &want); err == nil {
		return n, nil
	}
	lim.Cur = min(n, lim.Max)
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, fmt.Errorf("raise open-file limit: %w", err)
	}
	return lim.Cur, nil
}

// BuildPgquorum builds ./cmd/pgquorum into dir and returns the binary's path.
func BuildPgquorum(ctx context.Context, dir string) (string, error) {
	bin := filepath.Join(dir, "pgquorum")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/pgquorum")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("go build ./cmd/pgquorum (run from the repository root): %w", err)
	}
	return bin, nil
}

// Process is a started child process.
type Process struct {
	Cmd *exec.Cmd
	Log string // path of its combined output
}

// Start runs name with args, its output in logPath; asUser, if not empty and we
// are root, runs it as that OS user.
func Start(name string, args []string, logPath, asUser string) (*Process, error) {
	return start(name, args, logPath, asUser, nil)
}

// StartEnv is Start with extra environment variables (KEY=VALUE) for the process.
func StartEnv(name string, args []string, logPath string, env []string) (*Process, error) {
	return start(name, args, logPath, "", env)
}

func start(name string, args []string, logPath, asUser string, env []string) (*Process, error) {
	out, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(name, args...)
	if len(env) > 0 {
		cmd.Env = append(os.Environ(), env...)
	}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if asUser != "" && os.Geteuid() == 0 {
		u, err := user.Lookup(asUser)
		if err != nil {
			return nil, err
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
	}
	if err := cmd.Start(); err != nil {
		out.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	out.Close()
	return &Process{Cmd: cmd, Log: logPath}, nil
}

// Stop sends SIGTERM, then SIGKILL after 5 s, and waits.
func (p *Process) Stop() {
	if p == nil || p.Cmd.Process == nil {
		return
	}
	_ = p.Cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = p.Cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		_ = syscall.Kill(-p.Cmd.Process.Pid, syscall.SIGKILL)
		<-done
	}
}

// WaitPort waits until addr accepts TCP connections or ctx ends.
func WaitPort(ctx context.Context, addr string) error {
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w", addr, err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// RSSKiB returns the resident set size of pid in KiB (VmRSS).
func RSSKiB(pid int) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			fields := strings.Fields(rest)
			if len(fields) > 0 {
				return strconv.ParseInt(fields[0], 10, 64)
			}
		}
	}
	return 0, errors.New("VmRSS not found")
}

// ChownToPostgres gives dir (recursively) to the postgres OS user when we are
// root, so that PgBouncer started as postgres can use it.
func ChownToPostgres(dir string) error {
	if os.Geteuid() != 0 {
		return nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return err
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	if err := os.Chmod(dir, 0o755); err != nil {
		return err
	}
	return filepath.Walk(dir, func(path string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		return os.Chown(path, uid, gid)
	})
}

// PgBouncerConfig writes a session-mode PgBouncer configuration in dir that
// forwards database "*" to backend and accepts the given users (name → the
// password PgBouncer uses towards the server) without asking clients for one
// (auth_type trust: authentication is not what the benchmarks compare).
func PgBouncerConfig(dir string, port int, backendHost string, backendPort int, users map[string]string, maxConns int) (string, error) {
	var authFile strings.Builder
	for u, pw := range users {
		fmt.Fprintf(&authFile, "%q %q\n", u, pw)
	}
	if err := os.WriteFile(filepath.Join(dir, "userlist.txt"), []byte(authFile.String()), 0o644); err != nil {
		return "", err
	}
	ini := fmt.Sprintf(`[databases]
* = host=%s port=%d

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = %d
unix_socket_dir =
auth_type = trust
auth_file = %s
pool_mode = session
max_client_conn = %d
default_pool_size = %d
max_db_connections = 0
server_tls_sslmode = disable
ignore_startup_parameters = extra_float_digits,options
logfile = %s
pidfile = %s
`, backendHost, backendPort, port, filepath.Join(dir, "userlist.txt"), maxConns, maxConns,
		filepath.Join(dir, "pgbouncer.log"), filepath.Join(dir, "pgbouncer.pid"))
	path := filepath.Join(dir, "pgbouncer.ini")
	if err := os.WriteFile(path, []byte(ini), 0o644); err != nil {
		return "", err
	}
	return path, nil
}

// PgquorumNode describes a one-proxy pgquorum node for a benchmark.
type PgquorumNode struct {
	Dir           string // config, data and log live here
	ClientPort    int
	Backends      [][2]string // {name, host:port}; the first is expected to be the primary
	AuthMethod    string
	QueryUser     string
	QueryPassword string
	AdminPort     int    // set by WriteConfig
	AdminToken    string // set by WriteConfig: the operators' token for calls that change the cluster
}

// WriteConfig writes the node's YAML configuration and returns its path.
func (n *PgquorumNode) WriteConfig() (string, error) {
	adminPort, err := FreePort()
	if err != nil {
		return "", err
	}
	n.AdminPort = adminPort
	raftPort, err := FreePort()
	if err != nil {
		return "", err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "cluster_name: bench\nnode: {id: 1, data_dir: %s}\n", filepath.Join(n.Dir, "data"))
	fmt.Fprintf(&b, "listen: {postgres: 127.0.0.1:%d, admin: 127.0.0.1:%d, raft: 127.0.0.1:%d}\n", n.ClientPort, adminPort, raftPort)
	fmt.Fprintf(&b, "peers:\n  - {id: 1, raft: 127.0.0.1:%d}\nbackends:\n", raftPort)
	for _, be := range n.Backends {
		fmt.Fprintf(&b, "  - {name: %s, address: %q}\n", be[0], be[1])
	}
	fmt.Fprintf(&b, "auth:\n  method: %s\n  query_user: %s\n", n.AuthMethod, n.QueryUser)
	if n.QueryPassword != "" {
		pw := filepath.Join(n.Dir, "query-password")
		if err := os.WriteFile(pw, []byte(n.QueryPassword), 0o600); err != nil {
			return "", err
		}
		fmt.Fprintf(&b, "  query_password_file: %s\n", pw)
	}
	if err := n.writeSecurity(&b); err != nil {
		return "", err
	}
	fmt.Fprintf(&b, "log: {level: warn}\n")
	path := filepath.Join(n.Dir, "pgquorum.yaml")
	return path, os.WriteFile(path, []byte(b.String()), 0o600)
}

// writeSecurity makes a throwaway CA, the node's certificate and a token in
// n.Dir and adds peer_tls and admin to the configuration: benchmarks run
// pgquorum as production does.
func (n *PgquorumNode) writeSecurity(b *strings.Builder) error {
	ca, err := pki.NewCA("bench", 1)
	if err != nil {
		return err
	}
	certs := filepath.Join(n.Dir, "certs")
	caFile, _, err := pki.WriteCA(certs, ca, true)
	if err != nil {
		return err
	}
	kp, err := ca.IssueNode(1, 1, pki.RoleVoter, []string{"127.0.0.1"}, 1)
	if err != nil {
		return err
	}
	cert, key := pki.NodeFiles(certs, pki.NodeIdentity("bench", 1, pki.RoleVoter))
	if err := pki.WriteKeyPair(cert, key, kp.CertPEM, kp.KeyPEM, true); err != nil {
		return err
	}
	random := make([]byte, 24)
	if _, err := rand.Read(random); err != nil {
		return err
	}
	n.AdminToken = hex.EncodeToString(random)
	tokenFile := filepath.Join(n.Dir, "admin-token")
	if err := os.WriteFile(tokenFile, []byte(n.AdminToken), 0o600); err != nil {
		return err
	}
	fmt.Fprintf(b, "peer_tls: {ca: %q, cert: %q, key: %q}\nadmin: {token_file: %q}\n", caFile, cert, key, tokenFile)
	return nil
}

// HAProxyConfig writes a tcp-mode HAProxy configuration in dir that forwards
// 127.0.0.1:port to backend (host:port), and returns its path. Run it with
// `haproxy -db -f PATH` (foreground, one process).
func HAProxyConfig(dir string, port int, backend string, maxConns int) (string, error) {
	cfg := fmt.Sprintf(`global
    maxconn %d

defaults
    mode tcp
    timeout connect 5s
    timeout client 1h
    timeout server 1h

listen postgres
    bind 127.0.0.1:%d
    server primary %s
`, maxConns, port, backend)
	path := filepath.Join(dir, "haproxy.cfg")
	return path, os.WriteFile(path, []byte(cfg), 0o644)
}

// CPUTime returns the user+system CPU time pid has used so far (its own
// threads, not its children), from /proc/PID/stat.
func CPUTime(pid int) (time.Duration, error) {
	user, system, err := CPUTimes(pid)
	return user + system, err
}

// CPUTimes returns the user and the system (kernel) CPU time pid has used so far
// (its own threads, not its children), from /proc/PID/stat.
func CPUTimes(pid int) (user, system time.Duration, err error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, err
	}
	// The command name (field 2) may hold spaces; fields after its closing
	// parenthesis are space-separated. utime and stime are fields 14 and 15.
	end := strings.LastIndexByte(string(data), ')')
	if end < 0 {
		return 0, 0, errors.New("malformed /proc stat")
	}
	fields := strings.Fields(string(data[end+1:]))
	if len(fields) < 13 {
		return 0, 0, errors.New("malformed /proc stat")
	}
	utime, err1 := strconv.ParseInt(fields[11], 10, 64)
	stime, err2 := strconv.ParseInt(fields[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, 0, errors.New("malformed /proc stat times")
	}
	const ticksPerSecond = 100 // USER_HZ on Linux
	return time.Duration(utime) * time.Second / ticksPerSecond, time.Duration(stime) * time.Second / ticksPerSecond, nil
}
